"""/metrics on a port of its own, through real processes and sockets (issue 21, finding 5): the API port
answers 404 for it, the metrics port serves the series of one worker as of several, a feature marked
sensitive has its bin series hashed or dropped as the input log does, and a flood of scrapes leaves
predictions answered and unshed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer

from model_service.contract.capture import pseudonym
from model_service.contract.card import parse_card
from model_service.contract.monitoring import FEATURE_BIN_TOTAL, FEATURE_PSI
from model_service.server.metrics_server import NICENESS
from pipeline.ml.profile import bin_counts
from pipeline.stages.drift import scrape_counts
from tests._metrics import scraped_when
from tests._service_models import with_reference_profile
from tests.integration.service.conftest import free_port, service_env

if TYPE_CHECKING:
    from tests.integration.service.conftest import Server

HASHED, DROPPED, CLEAR = "mean radius", "mean texture", "mean perimeter"
SENSITIVE = {HASHED: "hash", DROPPED: "drop"}


@pytest.fixture(scope="module")
def model_dir(plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The exported test model with the card's reference profile, so the service counts feature bins."""
    return with_reference_profile(plain_model_dir, tmp_path_factory.mktemp("reference") / "model")


def _rows(n: int) -> np.ndarray:
    return np.asarray(load_breast_cancer().data[:n], dtype=np.float32)


def _predict(server: Server, rows: np.ndarray) -> None:
    for start in range(0, len(rows), 10):
        batch = rows[start : start + 10].tolist()
        assert httpx.post(f"{server.url}/v1/predict", json={"instances": batch}).status_code == 200


def _feature_bins(text: str) -> dict[str, dict[str, float]]:
    bins: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == FEATURE_BIN_TOTAL:
                bins.setdefault(sample.labels["feature"], {})[sample.labels["bin"]] = sample.value
    return bins


def test_the_api_port_answers_404_and_the_metrics_port_serves_one_worker(
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    public = httpx.get(f"{server.url}/metrics")
    assert public.status_code == 404
    assert public.json()["error"]["code"] == "not_found"
    _predict(server, _rows(30))
    # One worker runs in the launcher's own process: its values must reach the multiprocess files too.
    text = scraped_when(
        server.metrics_url, 'model_service_requests_total{route="/v1/predict",status="200"} 3.0'
    )
    assert 'model_service_requests_total{route="unmatched",status="404"} 1.0' in text
    assert _feature_bins(text)[CLEAR]
    other = httpx.get(f"{server.metrics_url}/v1/model")
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"
    wrong_method = httpx.post(f"{server.metrics_url}/metrics")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


def test_sensitive_feature_bins_are_hashed_or_dropped(
    start_server: Callable[..., Server], model_dir: Path
) -> None:
    server = start_server(log_inputs_sensitive=",".join(f"{k}:{v}" for k, v in SENSITIVE.items()))
    rows = _rows(50)
    _predict(server, rows)
    text = scraped_when(
        server.metrics_url, 'model_service_requests_total{route="/v1/predict",status="200"} 5.0'
    )
    bins = _feature_bins(text)
    card = json.loads((model_dir / "model.json").read_text())
    profiles = {f["name"]: f for f in card["reference"]["features"]}
    assert DROPPED not in bins
    assert not re.search(rf'feature="{DROPPED}",bin=|bin="[^"]*",feature="{DROPPED}"', text)
    n_bins = len(profiles[HASHED]["frequencies"])
    assert set(bins[HASHED]) == {pseudonym(str(b)) for b in range(n_bins)}
    assert set(bins[CLEAR]) == {str(b) for b in range(len(profiles[CLEAR]["frequencies"]))}
    # The dropped feature's PSI gauge stays (an aggregate over the window, what the drift alert reads).
    assert any(
        sample.labels.get("feature") == DROPPED
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == FEATURE_PSI
    )
    # `pipeline drift --url` maps the pseudonyms back to the card's bins and skips the dropped feature.
    sample = scrape_counts(server.metrics_url, parse_card(card), SENSITIVE)
    names = [f["name"] for f in card["reference"]["features"]]
    assert sample.rows == len(rows)
    assert sample.feature_counts[names.index(DROPPED)] is None
    hashed = sample.feature_counts[names.index(HASHED)]
    assert hashed is not None
    expected = bin_counts(profiles[HASHED]["edges"], rows[:, names.index(HASHED)])
    assert hashed.tolist() == expected.tolist()


@pytest.mark.slow
def test_a_flood_of_scrapes_leaves_predictions_answered(start_server: Callable[..., Server]) -> None:
    """wrk floods the metrics port while predictions go on: each is answered 200, none shed with 503
    (a worker whose event loop waits more than MODEL_SERVICE_MAX_QUEUE_DELAY_MS sheds); the metrics port
    still counts them all afterwards. How many scrapes the flood got answered depends on this machine's
    load (the metrics process yields the CPU to the workers), so it is reported, not asserted."""
    wrk = shutil.which("wrk")
    assert wrk is not None, "wrk (Debian package) is needed for this test"
    server = start_server()
    rows = _rows(1).tolist()
    flood = subprocess.Popen(
        [wrk, "-t1", "-c16", "-d6s", f"{server.metrics_url}/metrics"], stdout=subprocess.PIPE, text=True
    )
    statuses: list[int] = []

    def predict_until_the_flood_ends() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while flood.poll() is None:
                statuses.append(client.post("/v1/predict", json={"instances": rows}).status_code)

    predicting = threading.Thread(target=predict_until_the_flood_ends)
    predicting.start()
    report, _ = flood.communicate(timeout=60)
    predicting.join(timeout=30)
    assert not predicting.is_alive()
    assert flood.returncode == 0, report
    assert statuses, "no prediction was made during the flood"
    assert set(statuses) == {200}, {status: statuses.count(status) for status in set(statuses)}
    counted = f'model_service_requests_total{{route="/v1/predict",status="200"}} {len(statuses)}.0'
    scraped_when(server.metrics_url, counted)
    print(f"during the flood: {len(statuses)} predictions; wrk: {' '.join(report.split())}")


def test_the_metrics_process_dies_with_a_killed_launcher(start_server: Callable[..., Server]) -> None:
    server = start_server()
    scraped_when(server.metrics_url, "model_service_model_info{")
    children = psutil.Process(server.process.pid).children(recursive=True)
    metrics = [child for child in children if "model_service.server.metrics_server" in child.cmdline()]
    assert len(metrics) == 1, [(c.pid, c.cmdline()) for c in children]
    assert metrics[0].nice() == NICENESS  # it yields the CPU to the workers
    server.process.kill()  # no cleanup runs: the kernel's parent-death signal must end it
    server.process.wait(timeout=10)
    gone, alive = psutil.wait_procs(metrics, timeout=10)
    assert gone and not alive
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.metrics_url}/metrics", timeout=2)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare for a PID namespace"
)
def test_the_metrics_port_answers_when_the_launcher_is_pid_1(model_dir: Path, tmp_path: Path) -> None:
    """In a container the launcher is pid 1: the metrics process must not take that for a dead parent."""
    port, metrics_port = free_port(), free_port()
    command = [
        "unshare", "--fork", "--pid", "--mount-proc", "--kill-child",
        sys.executable, "-m", "model_service", "--model-dir", str(model_dir),
        "--port", str(port), "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    with (tmp_path / "pid1.log").open("w") as log:
        process = subprocess.Popen(command, env=service_env(), stdout=log, stderr=log)
    try:
        text = scraped_when(f"http://127.0.0.1:{metrics_port}", "model_service_model_info{", timeout_s=30)
        assert "model_service_requests_total" in text
        assert '"pid":1}' in (tmp_path / "pid1.log").read_text()  # it did run as pid 1
    finally:
        # unshare passes no signal on: SIGTERM the namespace's pid 1 (a drain, exit 0); if that failed,
        # killing unshare kills it too (--kill-child), and the metrics process dies with it.
        launchers = psutil.Process(process.pid).children()
        for launcher in launchers:
            launcher.terminate()
        _, alive = psutil.wait_procs(launchers, timeout=30)
        process.kill()
        process.wait(timeout=30)
    assert not alive
