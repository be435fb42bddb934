"""The cluster half of the shadow stage and of header routes, as rendered into the overlay.

Upstream rules encoded here:
- Argo Rollouts (rollout-crd.yaml, docs/features/traffic-management): `setMirrorRoute` and `setHeaderRoute`
  name a route that `trafficRouting.managedRoutes` must list; a step without `match` removes it; Argo
  removes every managed route when the rollout ends or aborts. With traffic routing the canary is scaled to
  its weight, so at weight 0 it has no pod until `setCanaryScale` gives it some.
- The Gateway API plugin (argoproj-labs/rollouts-plugin-trafficrouter-gatewayapi,
  docs/features/header-based-routing.md and mirror-routing.md): header routes only on routes listed under
  `httpRoutes` with `useHeaderRoutes: true`; the mirror is a `RequestMirror` filter aimed at the canary
  Service with `percent` (Gateway API v1.2+).
- Gateway API v1.6.1 (the pinned HTTPRoute CRD): `requestMirror.percent` is an integer 0-100, exclusive
  with `fraction`; the filter's support level is Extended.
"""

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import Config, ConfigError, load_config
from pipeline.deploy import release_file, render, shadow
from pipeline.deploy import validate as kv
from pipeline.deploy.names import SHADOW_FILE, SHADOW_TEMPLATE

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "environments"
PREVIEW = "{set_header_route: {name: preview, match: [{header: X-Preview, value: {exact: '1'}}]}}"


@pytest.fixture(scope="module")
def schemas() -> Path:
    """The pinned CRD schemas (K8S_SCHEMAS_DIR, else the verified download)."""
    try:
        return kv.ensure_schemas(ROOT)
    except kv.ToolMissing as exc:
        pytest.skip(str(exc))


def overlay(config: Config) -> dict[str, Any]:
    return render.overlay_objects(config, release_file.Release(image="model-service"), ROOT)


def rollout_ops(config: Config) -> dict[str, Any]:
    return {op["path"]: op["value"] for op in overlay(config)["patch-rollout.yaml"]}


def test_the_canary_starts_with_the_mirror_and_the_shadow_analysis_at_weight_0() -> None:
    config = load_config("dev", CONFIG_DIR, ["shadow.mirror_percent=40"])
    ops = rollout_ops(config)
    steps = ops["/spec/strategy/canary/steps"]
    assert steps[0] == {"setCanaryScale": {"weight": 40}}
    assert steps[1]["setMirrorRoute"]["name"] == "shadow"
    assert steps[1]["setMirrorRoute"]["percentage"] == 40
    assert steps[2]["analysis"]["templates"] == [{"templateName": SHADOW_TEMPLATE}]
    assert steps[3] == {"setMirrorRoute": {"name": "shadow"}}  # no match: the mirror is removed
    # The canary's size follows the traffic weight again before users reach it.
    assert steps[4] == {"setCanaryScale": {"matchTrafficWeight": True}}
    assert "setWeight" in steps[5]
    assert not any("setWeight" in step for step in steps[:5])
    routing = ops["/spec/strategy/canary/trafficRouting"]
    assert routing["managedRoutes"] == [{"name": "shadow"}]


def test_the_shadow_template_bounds_the_shift_gates_over_both_versions_pods() -> None:
    config = load_config(
        "dev",
        CONFIG_DIR,
        ["shadow.gates.score_psi={max: 0.7}", "shadow.gates.positive_rate_delta={max: 0.15}"],
    )
    objects = overlay(config)
    assert SHADOW_FILE in objects["kustomization.yaml"]["resources"]
    template = objects[SHADOW_FILE]
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    assert set(metrics) == {"positive-rate-delta", "score-psi"}
    assert metrics["score-psi"]["successCondition"] == "len(result) > 0 && result[0] <= 0.7"
    assert metrics["positive-rate-delta"]["failureCondition"] == "len(result) == 0 || result[0] > 0.15"
    for metric in metrics.values():
        query = metric["provider"]["prometheus"]["query"]
        assert 'rollouts_pod_template_hash="{{args.canary-hash}}"' in query
        assert 'rollouts_pod_template_hash="{{args.stable-hash}}"' in query
        # shadow.min_pairs requests per window on each side, else no sample: Failed, never passed
        assert f">= {config.shadow.min_pairs}" in query


def test_an_advisory_gate_is_not_enforced_in_the_cluster() -> None:
    config = load_config("dev", CONFIG_DIR, ["shadow.gates.score_psi={max: 0.7, advisory: true}"])
    metrics = [m["name"] for m in overlay(config)[SHADOW_FILE]["spec"]["metrics"]]
    assert metrics == ["positive-rate-delta"]


@pytest.mark.parametrize(
    "override", ["shadow.enabled=false", "deploy.traffic_router=nginx", "rollout.strategy=blue-green"]
)
def test_no_mirror_without_shadow_a_canary_or_the_gateway_api(override: str) -> None:
    objects = overlay(load_config("dev", CONFIG_DIR, [override]))
    assert SHADOW_FILE not in objects
    assert "setMirrorRoute" not in yaml.safe_dump(objects["patch-rollout.yaml"])


def test_a_header_route_renders_to_set_header_route_with_a_pod_at_weight_0() -> None:
    config = load_config(
        "dev",
        CONFIG_DIR,
        [
            "shadow.enabled=false",
            f"rollout.steps=[{PREVIEW}, {{pause: {{seconds: 5}}}}, {{set_weight: 20}}, {{analysis: {{}}}}]",
        ],
    )
    ops = rollout_ops(config)
    steps = ops["/spec/strategy/canary/steps"]
    assert steps[:4] == [
        {"setCanaryScale": {"replicas": 1}},
        {
            "setHeaderRoute": {
                "name": "preview",
                "match": [{"headerName": "X-Preview", "headerValue": {"exact": "1"}}],
            }
        },
        {"pause": {"duration": "5s"}},
        {"setCanaryScale": {"matchTrafficWeight": True}},
    ]
    routing = ops["/spec/strategy/canary/trafficRouting"]
    assert routing["managedRoutes"] == [{"name": "preview"}]
    assert routing["plugins"]["argoproj-labs/gatewayAPI"] == {
        "httpRoutes": [{"name": "model-service", "useHeaderRoutes": True}],
        "namespace": config.deploy.namespace,
    }


def test_a_header_route_after_a_weight_needs_no_scale() -> None:
    config = load_config(
        "dev",
        CONFIG_DIR,
        ["shadow.enabled=false", f"rollout.steps=[{{set_weight: 20}}, {PREVIEW}, {{analysis: {{}}}}]"],
    )
    steps = rollout_ops(config)["/spec/strategy/canary/steps"]
    assert steps[0] == {"setWeight": 20}
    assert "setHeaderRoute" in steps[1]
    assert not any("setCanaryScale" in step for step in steps)


def test_header_routes_behind_ingress_nginx_are_refused() -> None:
    config = load_config(
        "dev",
        CONFIG_DIR,
        ["deploy.traffic_router=nginx", f"rollout.steps=[{PREVIEW}, {{set_weight: 20}}, {{analysis: {{}}}}]"],
    )
    with pytest.raises(ConfigError, match=r"set_header_route needs deploy\.traffic_router: gateway-api"):
        overlay(config)


def test_the_rendered_rollout_and_template_are_valid_against_the_pinned_crds(schemas: Path) -> None:
    config = load_config(
        "dev", CONFIG_DIR, [f"rollout.steps=[{PREVIEW}, {{set_weight: 20}}, {{analysis: {{}}}}]"]
    )
    objects = overlay(config)
    rollout = yaml.safe_load((ROOT / "k8s/base/rollout.yaml").read_text())
    strategy = rollout["spec"].setdefault("strategy", {}).setdefault("canary", {})
    ops = {op["path"]: op["value"] for op in objects["patch-rollout.yaml"]}
    strategy["trafficRouting"] = ops["/spec/strategy/canary/trafficRouting"]
    strategy["steps"] = ops["/spec/strategy/canary/steps"]
    assert kv.validate_crd(rollout, "rollout", schemas) == []
    assert kv.validate_crd(objects[SHADOW_FILE], SHADOW_FILE, schemas) == []


def test_the_mirror_filter_the_plugin_writes_is_a_valid_httproute_rule(schemas: Path) -> None:
    """What the plugin's default filter mode writes on the weighted rule for `percentage: 40`
    (pkg/plugin/httproute_mirror_test.go, buildMirrorFilter): valid against the pinned v1.6.1 CRD, where
    `percent` exists (added in v1.2); `percent` above 100 is refused."""
    route = yaml.safe_load((ROOT / "k8s/components/gateway-api/httproute.yaml").read_text())
    mirror: dict[str, Any] = {
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {"group": "", "kind": "Service", "name": "model-service-canary", "port": 80},
            "percent": 40,
        },
    }
    route["spec"]["rules"][0]["filters"] = [mirror]
    assert kv.validate_crd(route, "httproute", schemas) == []
    mirror["requestMirror"]["percent"] = 140
    assert kv.validate_crd(route, "httproute", schemas) != []


def test_a_regression_is_shadowed_on_its_score_bins_only() -> None:
    """A regression has no classes (model_service_predicted_class is a classifier's series)."""
    config = load_config("dev", CONFIG_DIR)
    assert [t.metric for t in shadow.shadow_analysis(config, "regression").thresholds] == ["score_psi"]
    assert [t.metric for t in shadow.shadow_analysis(config, "binary").thresholds] == [
        "positive_rate_delta",
        "score_psi",
    ]
