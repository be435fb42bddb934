"""`python -m pipeline drift` on a real export: offline from a CSV, and live from a real service's metrics port."""

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from pipeline.adapters.service_process import running_service
from pipeline.artifacts import current_model_dir
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.ml.data import load_dataset
from pipeline.workspace import Workspace
from tests._metrics import scraped_when

REPO = Path(__file__).parents[3]
SHIFTED = "mean concave points"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = tmp_path_factory.mktemp("drift")
    shutil.copytree(REPO / "environments", root / "environments")
    for stage in ("train", "export"):
        assert main([stage, "--env", "dev", "--workdir", str(root)]) == 0
    return root


def _rows(workspace: Path, shift: bool) -> tuple[list[str], np.ndarray]:
    data = load_dataset(load_config("dev", workspace / "environments").data, workspace)
    rng = np.random.default_rng(5)
    rows = data.x_test[rng.integers(0, len(data.x_test), 600)].copy()  # unseen rows, like live traffic
    if shift:
        j = data.features.index(SHIFTED)
        rows[:, j] += 1.5 * rows[:, j].std()
    return data.features, rows


def _drift(workspace: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["drift", "--env", "dev", "--workdir", str(workspace), *args])
    newest = max((workspace / "reports" / "dev").glob("*/drift/drift.json"), key=lambda p: p.stat().st_mtime)
    report = json.loads(newest.read_text())
    assert (newest.parent / "drift.png").is_file()
    return code, report


def _features_flagged(report: dict[str, Any]) -> list[str]:
    return [name for name in report["flagged"] if name != "(score)"]


@pytest.mark.parametrize("shift", [False, True])
def test_drift_offline_from_a_csv(workspace: Path, tmp_path: Path, shift: bool) -> None:
    features, rows = _rows(workspace, shift)
    path = tmp_path / "sample.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(features)
        writer.writerows(rows.tolist())
    code, report = _drift(workspace, "--input", str(path))
    assert _features_flagged(report) == ([SHIFTED] if shift else [])
    assert code == (1 if shift else 0)
    assert {c["metric"] for c in report["checks"]} == {"psi", "ks"}
    if shift:
        results = {c["metric"]: c["result"] for c in report["checks"] if c["scope"] == SHIFTED}
        assert results == {"psi": "fail", "ks": "fail"}


@pytest.mark.parametrize("shift", [False, True])
def test_drift_live_from_the_service_metrics(workspace: Path, shift: bool) -> None:
    config = load_config("dev", workspace / "environments")
    model_dir = current_model_dir(config, Workspace(workspace)).path
    _, rows = _rows(workspace, shift)
    with running_service(config, model_dir, workspace / f"service-{shift}.log") as service:
        for start in range(0, len(rows), 25):
            batch = rows[start : start + 25].tolist()
            response = httpx.post(
                f"{service.url}/v1/predict", json={"instances": batch}, headers=service.headers
            )
            assert response.status_code == 200
        requests = len(range(0, len(rows), 25))
        scraped_when(service.metrics_url, f'route="/v1/predict",status="200"}} {requests}.0')
        code, report = _drift(workspace, "--url", service.metrics_url)
    assert report["rows"] == len(rows)
    assert _features_flagged(report) == ([SHIFTED] if shift else [])
    assert code == (1 if shift else 0)
    assert {c["metric"] for c in report["checks"]} == {"psi", "ks_binned"}


def test_drift_live_with_sensitive_features(workspace: Path) -> None:
    """A hashed feature is still checked (its bins mapped back from their pseudonyms), a dropped one is
    not exported, so not checked; unshifted rows pass as without the marks."""
    marks = f'--set=drift.log_inputs.sensitive={{"mean radius": hash, "{SHIFTED}": drop}}'
    config = load_config("dev", workspace / "environments", [marks.removeprefix("--set=")])
    model_dir = current_model_dir(config, Workspace(workspace)).path
    _, rows = _rows(workspace, shift=False)
    with running_service(config, model_dir, workspace / "service-sensitive.log") as service:
        for start in range(0, len(rows), 25):
            batch = rows[start : start + 25].tolist()
            response = httpx.post(
                f"{service.url}/v1/predict", json={"instances": batch}, headers=service.headers
            )
            assert response.status_code == 200
        requests = len(range(0, len(rows), 25))
        text = scraped_when(service.metrics_url, f'route="/v1/predict",status="200"}} {requests}.0')
        exported = [line for line in text.splitlines() if line.startswith("model_service_feature_bin_total{")]
        assert exported
        assert not [line for line in exported if f'feature="{SHIFTED}"' in line]
        code, report = _drift(workspace, "--url", service.metrics_url, marks)
    checked = {c["scope"] for c in report["checks"]}
    assert "mean radius" in checked
    assert SHIFTED not in checked  # dropped: not exported, so not checked
    assert len(checked) == 30 - 1 + 1  # the other features and the score
    assert report["rows"] == len(rows)
    assert _features_flagged(report) == []
    assert code == 0
