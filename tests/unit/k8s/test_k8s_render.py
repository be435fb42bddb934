"""Rendering overlays from environments/*.yaml: deterministic, committed, and one source of truth with the plan."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import ConfigError, known_environments, load_config
from pipeline.deploy import argo_analysis, argocd, names, release_file, shadow
from pipeline.deploy import render as k8s
from pipeline.rollout.plan import Analyze, Pause, SetWeight, plan

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "environments"
ENVS = known_environments(CONFIG_DIR)


def _patch(env: str, name: str) -> list[dict[str, Any]]:
    config = load_config(env, CONFIG_DIR)
    text = k8s.render_environment(config, release_file.read_release(ROOT, config), ROOT)[
        f"k8s/overlays/{env}/{name}"
    ]
    ops: list[dict[str, Any]] = yaml.safe_load(text)
    return ops


def test_rendering_is_deterministic_and_matches_the_committed_overlays() -> None:
    first = k8s.render_all(ROOT, CONFIG_DIR)
    assert first == k8s.render_all(ROOT, CONFIG_DIR)
    assert k8s.stale_files(ROOT, first) == [], "run `nox -s render` and commit k8s/"


def test_a_stale_overlay_is_named(tmp_path: Path) -> None:
    files = k8s.render_all(ROOT, CONFIG_DIR)
    k8s.write_files(tmp_path, files)
    assert k8s.stale_files(tmp_path, files) == []
    (tmp_path / "k8s/overlays/dev/patch-hpa.yaml").write_text("# edited by hand\n")
    (tmp_path / "k8s/argocd/old.yaml").write_text("{}\n")
    assert k8s.stale_files(tmp_path, files) == ["k8s/argocd/old.yaml", "k8s/overlays/dev/patch-hpa.yaml"]


@pytest.mark.parametrize("env", ENVS)
def test_rollout_steps_equal_the_plan(env: str) -> None:
    config = load_config(env, CONFIG_DIR)
    rollout_plan = plan(config)
    ops = {op["path"]: op["value"] for op in _patch(env, "patch-rollout.yaml")}
    if rollout_plan.strategy == "canary":
        expected: list[dict[str, Any] | str] = []
        for action in rollout_plan.actions:
            if isinstance(action, SetWeight):
                expected.append({"setWeight": action.weight})
            elif isinstance(action, Pause):
                expected.append({"pause": {"duration": f"{action.seconds}s"}})
            elif isinstance(action, Analyze):
                expected.append("analysis")
        steps = ops["/spec/strategy/canary/steps"]
        if shadow.in_cluster(config):  # the shadow steps come first (tests/unit/k8s/test_shadow_render.py)
            steps = steps[len(shadow.shadow_steps(config, [])) + 1 :]
        assert [s if "analysis" not in s else "analysis" for s in steps] == expected
        templates = [s["analysis"]["templates"][0]["templateName"] for s in steps if "analysis" in s]
        assert set(templates) == {names.ANALYSIS_TEMPLATE}
    else:
        pre = ops["/spec/strategy/blueGreen/prePromotionAnalysis"]
        # Smoke and analysis both judge the preview before the switch, as the rehearsal does.
        assert [t["templateName"] for t in pre["templates"]] == [
            names.SMOKE_TEMPLATE,
            names.ANALYSIS_TEMPLATE,
        ]
        assert "/spec/strategy/blueGreen/postPromotionAnalysis" not in ops
        auto = ops["/spec/strategy/blueGreen/autoPromotionEnabled"]
        assert auto is config.rollout.blue_green.auto_promotion


@pytest.mark.parametrize("env", ENVS)
def test_analysis_thresholds_equal_the_plan(env: str) -> None:
    analysis = plan(load_config(env, CONFIG_DIR)).analysis
    config = load_config(env, CONFIG_DIR)
    timing = config.cluster_timing
    address, op = _patch(env, "patch-analysis.yaml")
    assert address["value"] == config.deploy.prometheus.address
    metrics = {m["name"]: m for m in op["value"] if "prometheus" in m["provider"]}
    expected: dict[str, float] = {}
    for t in analysis.thresholds:
        name = t.metric.replace("_", "-")
        if t.max is not None:
            expected[name] = t.max
        if t.max_vs_stable is not None:
            expected[f"{name}-vs-stable"] = t.max_vs_stable
    assert set(metrics) == set(expected)
    for name, bound in expected.items():
        metric = metrics[name]
        assert metric["successCondition"] == f"len(result) > 0 && result[0] <= {bound:g}"
        assert metric["failureCondition"] == f"len(result) == 0 || result[0] > {bound:g}"  # no data fails
        assert metric["interval"] == f"{timing.interval}s"  # the cluster's clock, not the rehearsal's
        assert metric["initialDelay"] == f"{timing.initial_delay}s"
        assert f"[{timing.window}s]" in metric["provider"]["prometheus"]["query"]
        assert metric["count"] == analysis.count
        assert metric["failureLimit"] == analysis.failure_limit
        assert metric["inconclusiveLimit"] == min(analysis.inconclusive_limit, analysis.count - 1)
        assert f">= {analysis.min_requests}" in metric["provider"]["prometheus"]["query"]
    for t in analysis.thresholds:
        if t.max_vs_stable is not None and t.min_effect_ms:
            # the ratio's divisor is max(stable, (stable + min_effect_ms) / k): slower means both
            query = metrics[f"{t.metric.replace('_', '-')}-vs-stable"]["provider"]["prometheus"]["query"]
            assert f"+ {t.min_effect_ms:g}) / {t.max_vs_stable:g})" in query
            assert "\nor (((" in query


def test_promql_uses_the_service_metrics_and_pod_hash() -> None:
    analysis = plan(load_config("dev", CONFIG_DIR)).analysis
    error = argo_analysis.promql("error_ratio", analysis, 120)
    assert 'status=~"5.."' in error and "or vector(0)" in error
    assert 'rollouts_pod_template_hash="{{args.canary-hash}}"' in error
    p99 = argo_analysis.promql("p99_ms", analysis, 120, "stable-hash")
    assert p99.startswith(
        "(histogram_quantile(0.99, sum by (le) (rate(model_service_request_duration_seconds_bucket"
    )
    assert "{{args.stable-hash}}" in p99


def test_render_keeps_the_release_a_promotion_wrote(tmp_path: Path) -> None:
    config = load_config("prod", CONFIG_DIR)
    release = release_file.Release(
        image="ghcr.io/acme/model", digest="sha256:" + "a" * 64, model_version="7", git_sha="abc"
    )
    k8s.write_files(tmp_path, k8s.render_environment(config, release, ROOT))
    assert release_file.read_release(tmp_path, config) == release
    again = k8s.render_environment(config, release_file.read_release(tmp_path, config), ROOT)
    kustomization = yaml.safe_load(again["k8s/overlays/prod/kustomization.yaml"])
    assert kustomization["images"] == [
        {"name": "model-service", "newName": "ghcr.io/acme/model", "digest": release.digest}
    ]
    assert k8s.stale_files(tmp_path, again) == []


def test_configmap_shares_the_service_mapping_and_secrets_are_references() -> None:
    config = load_config("prod", CONFIG_DIR)
    data = k8s.config_map(config)["data"]
    assert data["MODEL_SERVICE_WORKERS"] == str(config.service.workers)
    assert data["MODEL_SERVICE_SHUTDOWN_DELAY_S"] == str(config.deploy.shutdown_delay_seconds)
    assert not any("API_KEY" in key for key in data)
    env_ops = [op for op in _patch("prod", "patch-rollout.yaml") if op["path"].endswith("/env/-")]
    assert env_ops[0]["value"]["valueFrom"]["secretKeyRef"]["name"] == config.deploy.api_key_secret


def test_sensitive_features_reach_the_pods_with_the_input_log_off() -> None:
    """They shape the metrics' feature-bin series too, so they are set whether inputs are logged or not."""
    sensitive = 'drift.log_inputs.sensitive={"mean radius": hash, "mean texture": drop}'
    data = k8s.config_map(load_config("dev", CONFIG_DIR, [sensitive]))["data"]
    assert data["MODEL_SERVICE_LOG_INPUTS"] == "false"
    assert data["MODEL_SERVICE_LOG_INPUTS_SENSITIVE"] == "mean radius:hash,mean texture:drop"
    assert "MODEL_SERVICE_LOG_INPUTS_SENSITIVE" not in k8s.config_map(load_config("dev", CONFIG_DIR))["data"]


def test_applications_sync_automatically_except_prod() -> None:
    for env in ENVS:
        app = argocd.application(load_config(env, CONFIG_DIR))
        assert app["spec"]["source"]["path"] == f"k8s/overlays/{env}"
        assert ("automated" in app["spec"]["syncPolicy"]) is (env != "prod")


def _clone_with_origin(tmp_path: Path, origin: str | None) -> Path:
    root = tmp_path / "fork"
    shutil.copytree(CONFIG_DIR, root / "environments")
    subprocess.run(["git", "init", "--quiet", str(root)], check=True)
    if origin is not None:
        subprocess.run(["git", "-C", str(root), "remote", "add", "origin", origin], check=True)
    return root


def test_a_hosted_fork_with_the_placeholder_repo_url_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    root = _clone_with_origin(tmp_path, "https://github.com/acme/churn-model.git")
    problems = k8s.repo_url_problems(root, root / "environments")
    assert len(problems) == len(ENVS)
    assert (
        f"{root / 'environments' / 'dev.yaml'}: deploy.argocd.repo_url is still the placeholder"
        in problems[0]
    )
    assert "https://github.com/acme/churn-model.git" in problems[0]
    base = root / "environments" / "base.yaml"
    data = yaml.safe_load(base.read_text())
    data.setdefault("deploy", {}).setdefault("argocd", {})["repo_url"] = (
        "https://github.com/acme/churn-model.git"
    )
    base.write_text(yaml.safe_dump(data))
    assert k8s.repo_url_problems(root, root / "environments") == []


@pytest.mark.parametrize(
    "origin", [None, "/srv/clones/template", f"https://github.com/{names.TEMPLATE_REPOSITORY}.git"]
)
def test_the_template_itself_and_local_clones_keep_the_placeholder(
    tmp_path: Path, origin: str | None
) -> None:
    root = _clone_with_origin(tmp_path, origin)
    assert k8s.repo_url_problems(root, root / "environments") == []


@pytest.mark.parametrize("env", ENVS)
def test_no_metric_passes_on_inconclusive_measurements_alone(env: str) -> None:
    """Argo Rollouts counts every measurement, inconclusive ones too, towards `count` and calls a metric
    Successful at `count` unless `inconclusiveLimit` was exceeded (argo-rollouts analysis/analysis.go,
    assessMetricStatus): `inconclusiveLimit >= count` would pass a step of NaN windows."""
    ops = _patch(env, "patch-analysis.yaml")
    metrics = next(op["value"] for op in ops if op["path"] == "/spec/metrics")
    assert metrics
    for metric in metrics:
        if "count" in metric:
            assert metric["inconclusiveLimit"] < metric["count"], (env, metric["name"])


@pytest.mark.parametrize("env", ENVS)
def test_the_no_traffic_alert_is_rendered_only_where_users_are_expected(env: str) -> None:
    """ModelServiceNoTraffic fires whenever no prediction is served: where no user calls (dev, staging)
    it would fire all the time."""
    config = load_config(env, CONFIG_DIR)
    ops = _patch(env, "patch-prometheusrule.yaml")
    alerts = [op["value"]["alert"] for op in ops if op["path"] == "/spec/groups/0/rules/-"]
    assert alerts == (["ModelServiceNoTraffic"] if config.deploy.expected_user_rps else [])
    assert "- alert: ModelServiceNoTraffic" not in (ROOT / "k8s/base/prometheusrule.yaml").read_text(
        encoding="utf-8"
    )
    assert (config.deploy.expected_user_rps is None) == (env in {"dev", "staging"})


def test_the_user_traffic_the_analysis_needs_is_stated_and_enforced(tmp_path: Path) -> None:
    """min_requests / (canary weight x window): prod's 50 per 120 s window at 5 % needs 8.3 req/s."""
    prod = load_config("prod", CONFIG_DIR)
    assert prod.user_rps_needed == pytest.approx(50 / (0.05 * 120))
    assert "8.3 user predictions/s" in k8s.traffic_note(prod)
    assert load_config("dev", CONFIG_DIR).user_rps_needed is None  # analysis traffic is sent
    for name in ("base", "prod"):
        shutil.copy(CONFIG_DIR / f"{name}.yaml", tmp_path / f"{name}.yaml")
    text = (tmp_path / "prod.yaml").read_text(encoding="utf-8")
    (tmp_path / "prod.yaml").write_text(text.replace("expected_user_rps: 20", "expected_user_rps: 5"))
    with pytest.raises(ConfigError, match=r"prod\.yaml.*needs 8\.3 predictions/s.*expected_user_rps is 5"):
        load_config("prod", tmp_path)


def _api_rule(config: Any) -> dict[str, Any]:
    """The NetworkPolicy's API-port rule after the overlay's patch (JSON patch applied in order)."""
    rule: dict[str, Any] = {"ports": [{"port": "http"}], "from": []}
    for op in k8s.overlay_objects(config, release_file.read_release(ROOT, config), ROOT)[
        "patch-networkpolicy.yaml"
    ]:
        if op["path"] == "/spec/ingress/0/from":
            if op["op"] == "remove":
                del rule["from"]
            else:
                rule["from"] = op["value"]
    return rule


def _peer_namespaces(rule: dict[str, Any]) -> list[str]:
    return [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in rule["from"]
        if "namespaceSelector" in peer
    ]


def test_the_gateway_peer_fits_each_implementation() -> None:
    """Istio and NGINX Gateway Fabric run the proxy in the Gateway's namespace (the default); Envoy Gateway
    in its controller's (`envoy-gateway-system`); a cloud gateway forwards from its subnet (ipBlock); Cilium's
    per-node Envoy has the reserved `ingress` identity, which no NetworkPolicy peer names: any source."""
    default = load_config("staging", CONFIG_DIR)
    assert _peer_namespaces(_api_rule(default))[0] == "gateway-system"
    envoy = load_config("staging", CONFIG_DIR, ["deploy.gateway.proxy_namespaces=[envoy-gateway-system]"])
    assert _peer_namespaces(_api_rule(envoy))[0] == "envoy-gateway-system"
    assert "gateway-system" not in _peer_namespaces(_api_rule(envoy))
    cloud = load_config("staging", CONFIG_DIR, ["deploy.gateway.proxy_cidrs=[10.0.0.0/16]"])
    assert {"ipBlock": {"cidr": "10.0.0.0/16"}} in _api_rule(cloud)["from"]
    cilium = load_config("staging", CONFIG_DIR, ["deploy.gateway.proxy_from_anywhere=true"])
    assert "from" not in _api_rule(cilium)  # NetworkPolicy API: a rule without `from` matches all sources
    with pytest.raises(ConfigError, match="proxy_from_anywhere"):
        load_config(
            "staging",
            CONFIG_DIR,
            ["deploy.gateway.proxy_from_anywhere=true", "deploy.gateway.proxy_cidrs=[10.0.0.0/16]"],
        )


def test_a_private_registry_pull_secret_reaches_the_pods_service_account() -> None:
    """Pods pull with their ServiceAccount's imagePullSecrets (Kubernetes docs, "Add ImagePullSecrets to
    a service account"); ghcr.io packages are private by default."""
    assert "patch-serviceaccount.yaml" not in k8s.overlay_objects(
        load_config("dev", CONFIG_DIR), release_file.Release(image="x"), ROOT
    )
    config = load_config("dev", CONFIG_DIR, ["deploy.image_pull_secret=ghcr-pull"])
    objects = k8s.overlay_objects(config, release_file.Release(image="x"), ROOT)
    assert objects["patch-serviceaccount.yaml"] == [
        {"op": "add", "path": "/imagePullSecrets", "value": [{"name": "ghcr-pull"}]}
    ]
    targets = [p["target"] for p in objects["kustomization.yaml"]["patches"] if "path" in p]
    assert {"group": "", "kind": "ServiceAccount", "name": "model-service"} in targets
