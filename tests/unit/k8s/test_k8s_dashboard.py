"""The Grafana dashboard: built from the service's metric names only, covering what operators watch,
shipped as a ConfigMap for Grafana's sidecar in every overlay."""

import json
import re
from pathlib import Path

import yaml

from model_service.contract import monitoring
from pipeline.config import load_config
from pipeline.deploy.dashboard import dashboard, queries

REPO = Path(__file__).parents[3]
ENVIRONMENTS = REPO / "environments"


def exported_samples() -> set[str]:
    """Every sample name the service exports, from model_service/contract/monitoring.py's one list."""
    names = {value for key, value in vars(monitoring).items() if key.isupper() and isinstance(value, str)}
    families = {name for name in names if name.startswith("model_service_")}
    return families | {
        f"{name}{suffix}" for name in families for suffix in ("_total", "_bucket", "_count", "_sum")
    }


def test_every_query_uses_only_the_services_metric_names() -> None:
    board = dashboard(load_config("prod", ENVIRONMENTS))
    used = {name for _, expr in queries(board) for name in re.findall(r"\bmodel_service_\w+", expr)}
    assert used, "no metric in the dashboard"
    assert used <= exported_samples(), used - exported_samples()


def test_the_panels_cover_what_operators_watch() -> None:
    board = dashboard(load_config("staging", ENVIRONMENTS))
    text = json.dumps(board)
    for needle in (
        monitoring.REQUESTS_TOTAL,
        'status=~\\"5..\\"',
        "histogram_quantile(0.95",
        "histogram_quantile(0.99",
        'status=\\"503\\"',
        monitoring.FEATURE_PSI,
        monitoring.SCORE_PSI,
        monitoring.BREAKER_STATE,
        monitoring.FALLBACK_ANSWERS,
    ):
        assert needle in text, needle
    assert all('namespace="model-staging"' in expr for _, expr in queries(board))
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in board["panels"]]
    assert len(cells) == len(set(cells))  # no two panels on top of each other


def test_each_overlay_ships_its_dashboard_for_the_grafana_sidecar() -> None:
    for env in ("dev", "staging", "prod"):
        overlay = REPO / "k8s" / "overlays" / env
        assert (
            "grafana-dashboard.yaml"
            in yaml.safe_load((overlay / "kustomization.yaml").read_text())["resources"]
        )
        config_map = yaml.safe_load((overlay / "grafana-dashboard.yaml").read_text())
        assert config_map["metadata"]["labels"] == {"grafana_dashboard": "1"}
        shipped = json.loads(config_map["data"][f"model-service-{env}.json"])
        assert shipped == dashboard(load_config(env, ENVIRONMENTS))
        assert shipped["uid"] == f"model-service-{env}"


def test_the_resource_panels_size_the_pods() -> None:
    """CPU and memory of the service's processes against the container's request and limit, descriptors
    against their limit, restarts and CrashLoopBackOff, CPU throttling: what `deploy.resources` is chosen by."""
    board = dashboard(load_config("prod", ENVIRONMENTS))
    text = json.dumps(board)
    for needle in (
        "rate(process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "kube_pod_container_status_restarts_total",
        'reason=\\"CrashLoopBackOff\\"',
        'resource=\\"memory\\"',
        'resource=\\"cpu\\"',
        "container_memory_working_set_bytes",
        "container_cpu_cfs_throttled_periods_total",
    ):
        assert needle in text, needle
    titles = [panel["title"] for panel in board["panels"]]
    assert any(title.startswith("Container restarts") for title in titles)
    assert any(title.startswith("Saturation") for title in titles)
