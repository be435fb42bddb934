"""The cluster's side of the rollout plan: timings from the scrape interval, refusals of timings that get no
data (file and key named), the in-cluster load Job, traffic routers, selector labels and NetworkPolicy peers."""

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from model_service.contract.monitoring import PREDICTION_ROUTES, PREDICTION_ROUTES_REGEX
from pipeline.config import ClusterTiming, Config, ConfigError, load_config
from pipeline.deploy import analysis_load, argo_analysis, names, release_file, render
from pipeline.rollout.plan import Analysis

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "environments"


def _render(config: Config) -> dict[str, Any]:
    """File name (in the overlay, or `application`) -> parsed YAML."""
    files = render.render_environment(config, release_file.Release(image="model-service"), ROOT)
    prefix = f"k8s/overlays/{config.name}/"
    out = {
        name.removeprefix(prefix): yaml.safe_load(text)
        for name, text in files.items()
        if not name.startswith("k8s/deployer/")  # several documents: the CD identity, tested on its own
    }
    out["application"] = yaml.safe_load(files[f"k8s/argocd/{config.name}.yaml"])
    return out


def _ops(files: dict[str, Any], name: str) -> dict[str, Any]:
    return {op["path"]: op["value"] for op in files[name]}


def _metrics(files: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in _ops(files, "patch-analysis.yaml")["/spec/metrics"]}


def _env_dir(tmp_path: Path, env: str, extra: str) -> Path:
    """A copy of environments/ with `extra` appended to ENV.yaml."""
    folder = tmp_path / "environments"
    shutil.copytree(CONFIG_DIR, folder)
    path = folder / f"{env}.yaml"
    path.write_text(path.read_text() + extra)
    return folder


@pytest.mark.parametrize(
    ("scrape", "interval", "window"), [("30s", 60, 120), ("15s", 30, 60), ("1m", 120, 240)]
)
def test_timings_derive_from_the_scrape_interval(scrape: str, interval: int, window: int) -> None:
    config = load_config("dev", CONFIG_DIR, [f"deploy.prometheus.scrape_interval={scrape}"])
    files = _render(config)
    prometheus_metrics = [m for m in _metrics(files).values() if "prometheus" in m["provider"]]
    assert {m["interval"] for m in prometheus_metrics} == {f"{interval}s"}
    assert {m["initialDelay"] for m in prometheus_metrics} == {f"{window}s"}
    assert all(f"[{window}s]" in m["provider"]["prometheus"]["query"] for m in prometheus_metrics)
    assert {m["count"] for m in prometheus_metrics} == {config.rollout.analysis.count}
    assert _ops(files, "patch-servicemonitor.yaml")["/spec/endpoints/0/interval"] == scrape


def test_a_longer_analysis_interval_widens_the_window_and_the_local_clock_is_untouched() -> None:
    config = load_config("dev", CONFIG_DIR, ["deploy.prometheus.analysis_interval=3m"])
    assert config.cluster_timing == ClusterTiming(
        scrape=30, interval=180, window=180, initial_delay=180, count=2
    )
    assert config.rollout.analysis.interval_seconds == 3  # the rehearsal's compressed clock


def test_an_interval_shorter_than_two_scrapes_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    folder = _env_dir(tmp_path, "dev", "  prometheus:\n    analysis_interval: 45s\n")
    with pytest.raises(ConfigError) as error:
        load_config("dev", folder)
    message = str(error.value)
    assert message.startswith(f"{folder / 'dev.yaml'}: deploy.prometheus: analysis_interval 45s is shorter")
    assert "at least 60s" in message


def test_a_blue_green_preview_without_traffic_is_refused(tmp_path: Path) -> None:
    folder = _env_dir(tmp_path, "staging", "  analysis_traffic:\n    enabled: false\n")
    with pytest.raises(ConfigError, match=r"staging.yaml: .*rollout.blue_green.preview_analysis .* no data"):
        load_config("staging", folder)


def test_load_longer_than_the_load_test_cap_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"rollout.analysis.count 40 .* more than the 1800s cap"):
        load_config("dev", CONFIG_DIR, ["rollout.analysis.count=40"])


def test_render_refuses_impossible_timings_naming_file_and_key() -> None:
    assert ClusterTiming(scrape=30, interval=30, window=60, initial_delay=30, count=2).problems() == [
        "interval 30s is shorter than 2 scrapes of 30s",
        "range window 60s holds fewer than 4 scrapes of 30s",
        (
            "initialDelay 30s is shorter than the window 60s: the first measurement would look at time before "
            "the new version was scraped"
        ),
    ]
    config = load_config("dev", CONFIG_DIR)
    prometheus = config.deploy.prometheus.model_copy(update={"analysis_interval": "20s"})  # not validated
    broken = config.model_copy(update={"deploy": config.deploy.model_copy(update={"prometheus": prometheus})})
    with pytest.raises(
        ConfigError, match=r"^environments/dev.yaml: deploy.prometheus .*interval 20s is shorter"
    ):
        render.render_environment(broken, release_file.Release(image="model-service"), ROOT)


def test_gateway_api_is_the_default_router() -> None:
    config = load_config("dev", CONFIG_DIR)
    files = _render(config)
    assert files["kustomization.yaml"]["components"] == [
        "../../components/canary",
        "../../components/gateway-api",
    ]
    assert "patch-ingress.yaml" not in files
    route = _ops(files, "patch-httproute.yaml")
    assert route["/spec/hostnames"] == [config.deploy.host]
    assert route["/spec/parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "gateway",
            "namespace": "gateway-system",
        }
    ]
    routing = _ops(files, "patch-rollout.yaml")["/spec/strategy/canary/trafficRouting"]
    assert routing == {
        "plugins": {"argoproj-labs/gatewayAPI": {"httpRoute": "model-service", "namespace": "model-dev"}},
        "managedRoutes": [{"name": "shadow"}],  # the shadow step's mirror (pipeline/deploy/shadow.py)
    }
    (ignored,) = files["application"]["spec"]["ignoreDifferences"]
    assert ignored["kind"] == "HTTPRoute"
    # the weights, and the shadow step's RequestMirror filter (tests/unit/k8s/test_argocd_sync_weights.py)
    assert ignored["jqPathExpressions"] == [".spec.rules[].backendRefs[].weight", ".spec.rules[].filters"]


def test_nginx_stays_an_option() -> None:
    files = _render(load_config("dev", CONFIG_DIR, ["deploy.traffic_router=nginx"]))
    assert files["kustomization.yaml"]["components"][1] == "../../components/nginx"
    assert _ops(files, "patch-ingress.yaml") == {"/spec/rules/0/host": "model.dev.example.com"}
    assert "patch-httproute.yaml" not in files
    routing = _ops(files, "patch-rollout.yaml")["/spec/strategy/canary/trafficRouting"]
    assert routing == {"nginx": {"stableIngress": "model-service"}}
    assert "ignoreDifferences" not in files["application"]["spec"]
    peers = _ops(files, "patch-networkpolicy.yaml")["/spec/ingress/0/from"]
    assert peers[0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}


def test_servicemonitor_and_prometheusrule_carry_the_selector_labels() -> None:
    labels = 'deploy.prometheus.selector_labels={release: monitoring, "example.com/team": ml}'
    files = _render(load_config("dev", CONFIG_DIR, [labels]))
    for name in ("patch-servicemonitor.yaml", "patch-prometheusrule.yaml"):
        ops = _ops(files, name)
        assert ops["/metadata/labels/release"] == "monitoring"
        assert ops["/metadata/labels/example.com~1team"] == "ml"  # RFC 6901 escaping of the slash
    default = _render(load_config("prod", CONFIG_DIR))
    assert _ops(default, "patch-servicemonitor.yaml")["/metadata/labels/release"] == "kube-prometheus-stack"


def test_networkpolicy_admits_the_rollouts_controller_and_the_load_only_where_sent_prometheus_to_metrics() -> (
    None
):
    def peers(env: str, rule: int = 0, *overrides: str) -> list[dict[str, Any]]:
        ops = _ops(_render(load_config(env, CONFIG_DIR, list(overrides))), "patch-networkpolicy.yaml")
        found: list[dict[str, Any]] = ops[f"/spec/ingress/{rule}/from"]
        return found

    dev = peers("dev")
    namespaces = [
        p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") for p in dev
    ]
    assert namespaces == ["gateway-system", "argo-rollouts", None]  # the API port: no Prometheus
    assert dev[1]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "argo-rollouts"}}
    assert dev[2] == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": names.LOAD_APP}}}
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": names.LOAD_APP}}} not in peers("prod")
    # The metrics port: Prometheus alone, in the namespace the deploy section names.
    assert peers("dev", 1, "deploy.prometheus.namespace=observability") == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]


@pytest.mark.parametrize(
    ("env", "new_service"), [("dev", "model-service-canary"), ("staging", "model-service-preview")]
)
def test_the_load_job_sends_the_loadtest_profile_to_the_new_and_the_stable_version(
    env: str, new_service: str
) -> None:
    config = load_config(env, CONFIG_DIR)
    files = _render(config)
    job = _metrics(files)["load"]["provider"]["job"]["spec"]
    containers = {c["name"]: c for c in job["template"]["spec"]["containers"]}
    hosts = {name: c["command"][c["command"].index("--host") + 1] for name, c in containers.items()}
    assert hosts == {
        "new": f"http://{new_service}.{{{{args.namespace}}}}.svc",
        "stable": "http://model-service-stable.{{args.namespace}}.svc",
    }
    assert {c["image"] for c in containers.values()} == {config.deploy.analysis_traffic.image}
    assert all(c["command"][-2:] == ["--exit-code-on-error", "0"] for c in containers.values())
    assert job["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == names.LOAD_APP
    data = files["loadtest-configmap.yaml"]["data"]
    assert data["locustfile.py"] == (ROOT / "loadtests/locustfile.py").read_text()
    profile = json.loads(data["profile.json"])
    timing = config.cluster_timing
    assert profile["profile"]["shape"] == "constant"
    assert profile["profile"]["users"] == config.loadtest.profile.users
    assert profile["profile"]["duration_s"] == timing.load == timing.last_measurement + timing.scrape
    assert profile["traffic"] == config.loadtest.traffic.model_dump(mode="json")
    assert len(profile["rows"][0]) == len(profile["features"])
    assert job["activeDeadlineSeconds"] > timing.load
    assert "loadtest-configmap.yaml" in files["kustomization.yaml"]["resources"]
    env_names = {e["name"] for e in containers["new"]["env"]}
    assert ("LOADTEST_HEADERS" in env_names) is (config.service.auth != "none")


@pytest.mark.parametrize(
    ("env", "overrides"), [("prod", []), ("staging", ["rollout.blue_green.preview_analysis=false"])]
)
def test_no_load_where_real_traffic_is_judged_or_nothing_is_analysed(env: str, overrides: list[str]) -> None:
    files = _render(load_config(env, CONFIG_DIR, overrides))
    assert "load" not in _metrics(files)
    assert "loadtest-configmap.yaml" not in files
    assert "loadtest-configmap.yaml" not in files["kustomization.yaml"]["resources"]
    peers = _ops(files, "patch-networkpolicy.yaml")["/spec/ingress/0/from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": names.LOAD_APP}}} not in peers


def test_the_load_job_is_hardened_like_the_service() -> None:
    from pipeline.deploy.validate import policy  # noqa: PLC0415

    files = _render(load_config("staging", CONFIG_DIR))
    template: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": names.ANALYSIS_TEMPLATE},
        "spec": {"metrics": list(_metrics(files).values())},
    }
    assert policy(template, "staging") == []
    load = next(m for m in template["spec"]["metrics"] if m["name"] == "load")
    load["provider"]["job"]["spec"]["template"]["spec"]["containers"][1]["securityContext"][
        "runAsNonRoot"
    ] = None
    del load["provider"]["job"]["spec"]["template"]["spec"]["containers"][1]["resources"]["limits"]
    fields = sorted(p.field for p in policy(template, "staging"))
    index = len(template["spec"]["metrics"]) - 1
    assert fields == [
        f"spec.metrics.{index}.provider.job.spec.template.spec.containers.1.resources.limits.cpu",
        f"spec.metrics.{index}.provider.job.spec.template.spec.containers.1.resources.limits.memory",
    ]


def test_a_regression_analysis_template_has_score_psi_and_no_class_metric() -> None:
    from pipeline.deploy.argo_analysis import analysis_metrics  # noqa: PLC0415
    from pipeline.rollout.analysis import for_task  # noqa: PLC0415
    from pipeline.rollout.plan import plan  # noqa: PLC0415

    config = load_config("dev", CONFIG_DIR)
    names_of = [
        m["name"]
        for m in analysis_metrics(for_task(plan(config), "regression").analysis, config.cluster_timing)
    ]
    assert "positive-rate-delta" not in names_of
    score = next(
        m
        for m in analysis_metrics(for_task(plan(config), "regression").analysis, config.cluster_timing)
        if m["name"] == "score-psi"
    )
    assert "model_service_score_bin_total" in score["provider"]["prometheus"]["query"]
    assert "model_service_predicted_class_total" not in score["provider"]["prometheus"]["query"]
    # The default environments state no regression task: every metric is rendered.
    assert "positive-rate-delta" in _metrics(_render(config))


@pytest.mark.parametrize(
    ("route", "judged"),
    [
        ("/v1/predict", True),
        ("/v2/models/{name}/infer", True),
        ("/v2/models/{name}/ready", False),
        ("/v1/model", False),
        ("/healthz", False),
        ("unmatched", False),
    ],
)
def test_the_cluster_and_the_local_judge_count_the_same_routes(route: str, judged: bool) -> None:
    """The `route` label values the service writes: the PromQL selector (RE2, fully anchored like
    Python's fullmatch for this pattern) and the local judge agree on which are predictions."""
    analysis = Analysis(interval_seconds=2, count=1, failure_limit=0, min_requests=5, thresholds=())
    selector = argo_analysis.promql("error_ratio", analysis, 30)
    assert f'route=~"{PREDICTION_ROUTES_REGEX}"' in selector
    assert (re.fullmatch(PREDICTION_ROUTES_REGEX, route) is not None) is judged
    assert (route in PREDICTION_ROUTES) is judged


def test_the_cluster_load_sends_mixed_rows_per_column_and_a_trainers_model_only_v1() -> None:
    """The in-cluster load sends a fork's own rows (strings, nulls): per-column v2 inputs for a built-in
    family on mixed data (export's layout); a trainer's layout is known only after training, so v1 only."""
    examples = CONFIG_DIR.parent / "examples"
    timing = ClusterTiming(scrape=30, interval=60, window=120, initial_delay=120, count=3)
    lightgbm = load_config("dev", examples / "lightgbm-binary" / "environments")
    profile = analysis_load.load_profile(lightgbm, timing, examples / "lightgbm-binary")
    assert {i["datatype"] for i in profile["inputs"]} == {"FP32", "BYTES"}
    assert all(len(i["columns"]) == 1 for i in profile["inputs"])
    assert any(isinstance(v, str) for row in profile["rows"] for v in row)
    assert any(v is None for row in profile["rows"] for v in row)
    assert "v2_infer" in profile["traffic"]["weights"]

    custom = load_config("dev", examples / "custom-pipeline" / "environments")
    profile = analysis_load.load_profile(custom, timing, examples / "custom-pipeline")
    assert "v2_infer" not in profile["traffic"]["weights"]
    assert profile["traffic"]["weights"]
