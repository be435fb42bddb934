"""The local canary for real (two service processes, Caddy, Locust): a candidate that answers fast and
without errors but predicts differently is rolled back on prediction shift, naming the statistic and bound."""

import json
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main

pytestmark = pytest.mark.slow  # two trained versions and a rollout rehearsal


@pytest.fixture
def workspace(stable_and_candidate: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(stable_and_candidate, root)
    return root


def test_drift_inverted_candidate_is_healthy_by_http_but_aborts_on_prediction_shift(workspace: Path) -> None:
    code = main(["rollout", "--env", "dev", "--workdir", str(workspace), "--candidate-fault", "shift"])
    [timeline_path] = (workspace / "reports" / "dev").glob("*/rollout/timeline.json")
    timeline = json.loads(timeline_path.read_text())
    assert code == 1
    assert timeline["status"] == "aborted"
    assert timeline["reason"].startswith("ABORT step 3 (weight 20%): canary ")
    assert "vs stable" in timeline["reason"] and "> max " in timeline["reason"]
    windows = [e for e in timeline["events"] if e["action"] == "analysis"]
    # Healthy by HTTP: the canary answered every request it got without a 5xx.
    assert all(w["new"]["errors"] == 0 and w["new"]["requests"] > 0 for w in windows)
    assert timeline["user_requests"]["failures_after_abort"] == 0
    # The canary's predicted classes are the stable's mirror image.
    new, stable = windows[-1]["new"]["classes"], windows[-1]["stable"]["classes"]
    assert new["0"] / sum(new.values()) > stable["0"] / sum(stable.values())
    shutil.rmtree(timeline_path.parents[1])
