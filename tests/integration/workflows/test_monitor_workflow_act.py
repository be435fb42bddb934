"""monitor.yml under act, run by hand for dev, on what a release really served: version 1 serves dev and
captures what it answered; the labels that arrive say the world changed (each the opposite of what the
model learned: concept drift, the inputs unchanged). The job's `nox -s monitor -- --report-to-github`
finds drift holding and live quality failing, and against a local stand-in of the GitHub API (which
records every call and enforces the dispatch rules) opens one issue with the evidence and, as
monitoring.retrain allows here, dispatches cd.yml up to dev."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
from sklearn.datasets import load_breast_cancer

from model_service.contract.capture import LABELS_FILE, LabelStore
from pipeline.adapters import registry
from pipeline.adapters.service_process import running_service
from pipeline.config import load_config
from pipeline.workspace import Workspace
from tests._github_api import GitHubStandIn, bare_remote, serving
from tests._workflows import ROOT
from tests.integration.workflows.test_workflows_act import _act, _jobs

pytestmark = pytest.mark.slow  # act runs the workflow, with its own nox venv

REPOSITORY = "acme/model-cicd"
ROWS = 150


def _serve_and_label(workspace: Path, capture: Path) -> None:
    """Version 1 (alias dev) answers ROWS rows with capture on; every row gets the label it did not predict."""
    config = load_config(
        "dev", workspace / "environments", ["capture.enabled=true", "capture.sample_ratio=1"]
    )
    served = registry.alias_model_dir(config, Workspace(workspace), config.alias)
    assert served is not None
    rows = load_breast_cancer().data[:ROWS].tolist()
    with running_service(config, served[0].path, workspace / "service.log", capture_dir=capture) as service:
        predicted = []
        with httpx.Client(base_url=service.url, headers=service.headers) as client:
            for i, row in enumerate(rows):
                answer = client.post(
                    "/v1/predict", json={"instances": [row]}, headers={"X-Request-ID": f"r-{i}"}
                )
                assert answer.status_code == 200, answer.text
                predicted.append(answer.json()["predictions"][0])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            store = LabelStore(capture / LABELS_FILE) if (capture / LABELS_FILE).is_file() else None
            captured = store.counts()["captured"] if store else 0
            if store:
                store.close()
            if captured >= ROWS:
                break
            time.sleep(0.1)
        labels = [{"request_id": f"r-{i}", "label": 1 - int(label)} for i, label in enumerate(predicted)]
        answer = httpx.post(f"{service.url}/v1/feedback", json={"labels": labels}, headers=service.headers)
        assert answer.status_code == 200, answer.text
        assert {item["outcome"] for item in answer.json()["results"]} == {"stored"}


def test_a_failing_live_quality_opens_one_issue_and_dispatches_retraining(
    stable_and_candidate: Path, tmp_path: Path
) -> None:
    workspace = tmp_path / "registry"
    shutil.copytree(stable_and_candidate, workspace)
    capture = tmp_path / "capture"
    _serve_and_label(workspace, capture)

    cd_yml = (ROOT / ".github/workflows/cd.yml").read_text(encoding="utf-8")
    stand_in = GitHubStandIn(
        bare_remote(tmp_path / "remote.git", {".github/workflows/cd.yml": cd_yml}),
        REPOSITORY,
        {"actions": "github-actions[bot]"},
    )
    event = json.loads((ROOT / ".github/act/workflow_dispatch.json").read_text(encoding="utf-8"))
    event["inputs"] = {"environment": "dev"}
    event["act_profile"]["stage_args"] = (
        f"--set capture.enabled=true --set capture.directory={capture} --set monitoring.retrain=true"
    )
    path = tmp_path / "workflow_dispatch-monitor.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    registry_uri = f"sqlite:///{workspace / '.mlflow' / 'mlflow.db'}"
    with serving(stand_in) as api:
        done = _act(
            "--event", "workflow_dispatch", "--workflow", "monitor.yml", "--event-path", str(path), "--",
            "--secret", f"MLFLOW_TRACKING_URI={registry_uri}", "--secret", "GITHUB_TOKEN=actions",
            "--env", f"GITHUB_API_URL={api}", "--env", f"GITHUB_REPOSITORY={REPOSITORY}",
            timeout=1800,
        )  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode != 0, log[-6000:]  # the failing verdict fails the job: the run is red
    assert "plan" in _jobs(log, "succeeded") and "monitor dev" in _jobs(log, "failed"), log[-4000:]
    assert "monitor: dev" in log
    [issue] = stand_in.issues.values()
    assert issue["title"] == "breast-cancer-classifier in dev: evaluate failing", issue
    assert issue["labels"] == ["model-monitor"]
    assert "| evaluate | FAIL |" in issue["body"] and "| drift | PASS |" in issue["body"], issue["body"]
    assert stand_in.dispatches == [{"workflow": "cd.yml", "ref": "main", "inputs": {"environment": "dev"}}]
