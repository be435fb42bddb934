"""The live-quality loop with real processes: the service captures what it served, labels arrive (the
feedback endpoint and `pipeline feedback`, some duplicate, some for unknown ids, some late), `pipeline
evaluate` judges each version and its gauges reach the metrics port. Then a worse model (trained on shuffled
labels: the same inputs, the same kind of scores) serves the same rows: its live quality fails while drift
on the same capture does not. The captured rows also feed the parity check and the load test.

Everything the stages are asked goes through `pipeline.cli.main`, as a person or the scheduled check asks."""

import csv
import json
import os
import shutil
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from model_service.contract.capture import LABELS_FILE, LabelStore, read_capture
from model_service.contract.monitoring import LIVE_QUALITY_VERDICT
from pipeline.adapters.service_process import ServiceProcess, running_service
from pipeline.artifacts import current_model_dir
from pipeline.cli import main
from pipeline.config import Config, load_config
from pipeline.ml.data import load_dataset
from pipeline.workspace import Workspace, read_json
from tests._metrics import scraped_when

pytestmark = pytest.mark.slow  # two trainings, two services, a load test: about a minute

REPO = Path(__file__).parents[3]
CAPTURE_ALL = ("--set", "capture.sample_ratio=1")
WORSE = (
    *CAPTURE_ALL,
    "--set",
    "data.source=csv",
    "--set",
    "data.path=shuffled.csv",
    "--set",
    "data.target=target",
)
"""The same features, labels shuffled against them: a model that learned nothing."""


def _run(root: Path, stage: str, *args: str) -> int:
    return main([stage, "--env", "dev", "--workdir", str(root), *args])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = tmp_path_factory.mktemp("live-quality")
    shutil.copytree(REPO / "environments", root / "environments")
    data = load_breast_cancer(as_frame=True).frame
    data["target"] = np.random.default_rng(0).permutation(data["target"].to_numpy())
    data.to_csv(root / "shuffled.csv", index=False)
    for args in (CAPTURE_ALL, WORSE):
        for stage in ("train", "export"):
            assert _run(root, stage, *args) == 0
    return root


def _config(root: Path, args: Sequence[str]) -> Config:
    return load_config("dev", root / "environments", list(args[1::2]))


def _traffic(root: Path) -> tuple[list[list[float]], list[int]]:
    """Rows neither model has been scored on as it is served: the worse model's evaluation rows (its own
    reference, so drift compares like with like), with their true labels (not the shuffled ones)."""
    data = load_dataset(_config(root, WORSE).data, root)
    original = load_breast_cancer()
    truth = {tuple(np.round(row, 6)): int(y) for row, y in zip(original.data, original.target, strict=True)}
    rows = data.x_test.tolist()
    return rows, [truth[tuple(np.round(row, 6))] for row in rows]


def _serve(root: Path, args: Sequence[str]) -> AbstractContextManager[ServiceProcess]:
    """The service on the export `args` configure, capturing into the workspace's capture folder."""
    config = _config(root, args)
    model = current_model_dir(config, Workspace(root))
    log = root / f"service-{model.version}.log"
    return running_service(config, model.path, log, capture_dir=root / "capture")


def _send(service: ServiceProcess, rows: Sequence[Sequence[float]], prefix: str) -> None:
    with httpx.Client(base_url=service.url, headers=service.headers) as client:
        for i, row in enumerate(rows):
            headers = {"X-Request-ID": f"{prefix}-{i}"}
            response = client.post("/v1/predict", json={"instances": [row]}, headers=headers)
            assert response.status_code == 200, response.text


def _captured(root: Path, count: int, timeout_s: float = 20.0) -> None:
    """Wait until the writer threads have written and indexed `count` rows (they run off the hot path)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (root / "capture" / LABELS_FILE).is_file():
            store = LabelStore(root / "capture" / LABELS_FILE)
            indexed = store.counts()["captured"]
            store.close()
            if indexed >= count and len(list(read_capture(root / "capture"))) >= count:
                return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} rows captured after {timeout_s:g} s")


def _labels_csv(path: Path, rows: Sequence[tuple[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["request_id", "label"])
        writer.writerows(rows)
    return path


def _stored(root: Path) -> dict[str, object]:
    store = LabelStore(root / "capture" / LABELS_FILE)
    try:
        return store.labels()
    finally:
        store.close()


def _quality(root: Path) -> dict[str, Any]:
    newest = max((root / "reports" / "dev").glob("*/evaluate/quality.json"), key=lambda p: p.stat().st_mtime)
    return dict(read_json(newest))


def test_the_loop(root: Path) -> None:
    served_rows, truth = _traffic(root)
    good = current_model_dir(_config(root, CAPTURE_ALL), Workspace(root)).version
    worse = current_model_dir(_config(root, WORSE), Workspace(root)).version
    extra = load_breast_cancer().data[:10].tolist()

    # Nothing captured yet: evaluate says so and writes nothing.
    assert _run(root, "evaluate", *CAPTURE_ALL) == 1
    assert not (root / "capture").exists()

    with _serve(root, CAPTURE_ALL) as service:
        _send(service, served_rows, "good")
        _send(service, extra, "extra")
        _captured(root, len(served_rows) + len(extra))

        # Labels through the endpoint: stored, then the same again, another for the same id, an unknown id.
        half = len(served_rows) // 2
        items = [{"request_id": f"good-{i}", "label": truth[i]} for i in range(half)]
        items += [
            {"request_id": "good-0", "label": truth[0]},
            {"request_id": "good-1", "label": 1 - truth[1]},
            {"request_id": "never-served", "label": 1},
        ]
        answer = httpx.post(f"{service.url}/v1/feedback", json={"labels": items}, headers=service.headers)
        assert answer.status_code == 200, answer.text
        outcomes = [result["outcome"] for result in answer.json()["results"]]
        assert outcomes == ["stored"] * half + ["duplicate", "conflict", "unknown"]

        # A malformed file stores nothing and fails; a good one stores its rows and answers the others.
        bad = _labels_csv(root / "bad.csv", [(f"good-{half}", truth[half]), (f"good-{half + 1}", "benign?")])
        assert _run(root, "feedback", "--labels", str(bad), *CAPTURE_ALL) == 1
        assert len(_stored(root)) == half
        rest = [(f"good-{i}", truth[i]) for i in range(half, len(served_rows))]
        rest += [("good-2", truth[2]), ("unknown-id", 0)]
        assert (
            _run(root, "feedback", "--labels", str(_labels_csv(root / "rest.csv", rest)), *CAPTURE_ALL) == 0
        )
        assert len(_stored(root)) == len(served_rows)
        # Late: rows served longer ago than the label window (here a tenth of a second) are refused.
        time.sleep(0.2)
        late = _labels_csv(root / "late.csv", [(f"extra-{i}", 1) for i in range(len(extra))])
        window = ("--set", "capture.label_window_days=0.000001", "--set", "capture.retention_days=1")
        assert _run(root, "feedback", "--labels", str(late), *CAPTURE_ALL, *window) == 0
        assert len(_stored(root)) == len(served_rows)

        assert _run(root, "evaluate", *CAPTURE_ALL) == 0
        report = _quality(root)
        (version,) = report["versions"]
        assert (version["version"], version["verdict"]) == (good, "pass")
        assert (version["served"], version["labelled"]) == (len(served_rows) + len(extra), len(served_rows))
        assert version["estimate"]["basis"].startswith(
            f"estimate from {len(served_rows) + len(extra)} served"
        )
        scraped_when(
            service.metrics_url,
            f'{LIVE_QUALITY_VERDICT}{{model="{_config(root, CAPTURE_ALL).model.name}",'
            f'version="{good}",verdict="pass"}} 1',
        )

    # The captured rows feed the parity check and the load test.
    assert _run(root, "export", "--from-capture", *CAPTURE_ALL) == 0
    short = ("--set", "loadtest.profile.duration_s=3", "--set", "loadtest.slo.total.min_rps=1")
    assert _run(root, "loadtest", "--from-capture", "--fresh", *CAPTURE_ALL, *short) == 0
    profile = json.loads(max((root / "reports" / "dev").glob("*/loadtest/profile.json")).read_text())
    assert len(profile["rows"]) == len(served_rows) + len(extra)

    # The worse model serves the same rows, labelled as truly as the first.
    with _serve(root, WORSE) as service:
        _send(service, served_rows, "worse")
        _captured(root, 2 * len(served_rows) + len(extra))
    labels = [(f"worse-{i}", truth[i]) for i in range(len(served_rows))]
    assert _run(root, "feedback", "--labels", str(_labels_csv(root / "worse.csv", labels)), *WORSE) == 0

    assert _run(root, "evaluate", *WORSE) == 1
    verdicts = {v["version"]: v["verdict"] for v in _quality(root)["versions"]}
    assert verdicts == {good: "pass", worse: "fail"}
    gauges = (root / "capture" / "live_quality.prom").read_text()
    assert f'version="{worse}",verdict="fail"}} 1' in gauges
    # Drift on the same capture sees the same inputs: it does not fail.
    assert _run(root, "drift", "--from-capture", *WORSE) == 0
