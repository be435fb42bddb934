"""Every query of the rendered Grafana dashboard against a real Prometheus scraping a running service:
each returns data. The service serves a primary whose ONNX graph raises on some rows, with a fallback
behind the breaker (tests/_faulty_model.py), and a card with a reference profile, so the request, latency,
drift, breaker and fallback series all exist; traffic mixes clean and poisoned rows."""

import json
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import yaml
from sklearn.datasets import load_breast_cancer

from pipeline.adapters.service_process import FALLBACK_DIR_ENV, running_service
from pipeline.config import Config, load_config
from pipeline.deploy import release_file, render
from pipeline.deploy.alerting import CLUSTER_SERIES
from pipeline.deploy.dashboard import RATE_WINDOW, queries
from tests._faulty_model import RAISE_BELOW, faulty_primary, other_version
from tests._prometheus import NAMESPACE, query, running_prometheus
from tests._service_models import with_reference_profile

REPO = Path(__file__).resolve().parents[3]
DATA_TIMEOUT_S = 60.0
SCRAPE_RATE_WINDOW = "10s"
"""What Grafana makes of $__rate_interval on a 1 s scrape (at least four scrape intervals)."""

pytestmark = pytest.mark.needs_tool("prometheus", "prometheus")


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(
        "dev",
        REPO / "environments",
        ["deploy.prometheus.scrape_interval=1s", "service.fallback={source: previous}"],
    )


def rendered_dashboard(config: Config) -> dict[str, object]:
    """The dashboard JSON as shipped: read back from the rendered ConfigMap's YAML text."""
    files = render.render_environment(config, release_file.Release(image="model-service"), REPO)
    config_map = yaml.safe_load(files[f"k8s/overlays/{config.name}/grafana-dashboard.yaml"])
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    board: dict[str, object] = json.loads(text)
    return board


@pytest.fixture(scope="module")
def folders(plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The faulty primary (with the card's reference profile, for the PSI gauges) and the fallback."""
    root = tmp_path_factory.mktemp("dashboard")
    profiled = with_reference_profile(plain_model_dir, root / "profiled")
    return faulty_primary(profiled, root / "primary", "2"), other_version(profiled, root / "fallback", "1")


def send_traffic(url: str, stop: threading.Event) -> None:
    """Clean batches, and every fifth a batch the primary raises on (the fallback answers it)."""
    rows = load_breast_cancer().data[:20].tolist()
    poisoned = [[RAISE_BELOW * 2, *rows[0][1:]], *rows[1:]]
    with httpx.Client(timeout=10) as client:
        for i in range(1_000_000):
            if stop.is_set():
                return
            client.post(f"{url}/v1/predict", json={"instances": poisoned if i % 5 == 4 else rows})


def test_every_dashboard_query_returns_data(
    config: Config, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    primary, fallback = folders
    assert config.deploy.namespace == NAMESPACE  # the scrape labels are the ones the queries select
    board = rendered_dashboard(config)
    # kube-state-metrics' and cAdvisor's series exist only in a cluster; the service's own series all do here.
    promql = [
        (title, expr.replace(RATE_WINDOW, SCRAPE_RATE_WINDOW))
        for title, expr in queries(board)
        if not any(series in expr for series in CLUSTER_SERIES)
    ]
    assert len(promql) >= 10
    stop = threading.Event()
    with ExitStack() as stack:
        service = stack.enter_context(
            running_service(
                config,
                primary,
                tmp_path / "service.log",
                settings={FALLBACK_DIR_ENV: str(fallback), "MODEL_SERVICE_DRIFT_WINDOW": "10"},
            )
        )
        prometheus = stack.enter_context(running_prometheus({"pod0hash": service.metrics_url}, tmp_path))
        traffic = threading.Thread(target=send_traffic, args=(service.url, stop), daemon=True)
        traffic.start()
        stack.callback(traffic.join, timeout=15)
        stack.callback(stop.set)
        empty = promql
        deadline = time.monotonic() + DATA_TIMEOUT_S
        while empty and time.monotonic() < deadline:
            time.sleep(1)
            empty = [(title, expr) for title, expr in empty if not query(prometheus, expr)]
        # The breaker and fallback panels saw the fallback at work, not only zeros.
        answers = query(prometheus, 'sum (model_service_fallback_answers_total{reason="primary_error"})')
    assert empty == [], "queries without data:\n" + "\n".join(f"{t}: {e}" for t, e in empty)
    assert answers and answers[0] > 0
