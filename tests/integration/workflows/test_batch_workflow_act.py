"""batch.yml under act, run by hand for dev: the plan job picks dev and its table, the batch job runs
`nox -s batch` against the registry named by the secret MLFLOW_TRACKING_URI (here the sqlite file of a
workspace where version 1 serves dev), and the run's evidence is the job summary and the artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_breast_cancer

from tests._workflows import ROOT
from tests.integration.workflows.test_workflows_act import _act, _jobs

pytestmark = pytest.mark.slow  # act runs the whole workflow, with its own nox venv


def _table(folder: Path) -> Path:
    """The breast-cancer rows as two Parquet parts, and one row the card's contract refuses."""
    data = load_breast_cancer()
    columns = {str(name): data.data[:, j].tolist() for j, name in enumerate(data.feature_names)}
    columns["mean radius"][3] = None  # a reject, with its reason
    table = pa.table(columns)
    folder.mkdir(parents=True)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), folder / "part-00000.parquet")
    pq.write_table(table.slice(half), folder / "part-00001.parquet")
    return folder


def test_a_batch_by_hand_scores_with_the_registrys_release_and_leaves_its_evidence(
    stable_and_candidate: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "registry"
    shutil.copytree(stable_and_candidate, workspace)
    table = _table(tmp_path / "table")
    scores = tmp_path / "scores"
    event = json.loads((ROOT / ".github/act/workflow_dispatch.json").read_text(encoding="utf-8"))
    event["inputs"] = {"environment": "dev", "input": str(table), "output": f"{scores}/{{date}}"}
    path = tmp_path / "workflow_dispatch-batch.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    registry = f"sqlite:///{workspace / '.mlflow' / 'mlflow.db'}"
    done = _act(
        "--event",
        "workflow_dispatch",
        "--workflow",
        "batch.yml",
        "--event-path",
        str(path),
        "--",
        "--secret",
        f"MLFLOW_TRACKING_URI={registry}",
        timeout=1800,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    assert {"plan", "batch dev"} <= _jobs(log, "succeeded"), log[-3000:]
    assert "batches: dev" in log
    [output] = list(scores.iterdir())
    assert (output / "_SUCCESS").is_file()
    summary = json.loads((output / "batch.json").read_text(encoding="utf-8"))
    assert (summary["rows"], summary["rejected"], summary["model"]["registry_version"]) == (569, 1, "1")
    # The evidence: the checks as the job's summary (act prints the step's stderr) and the artifact.
    assert "## batch dev: PASS" in log and "| rejects share |" in log
