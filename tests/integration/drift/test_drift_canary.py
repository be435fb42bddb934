"""The local canary for real (two service processes, Caddy, Locust): a candidate that answers fast and
without errors but predicts differently is rolled back on prediction shift, naming the statistic and bound."""

import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main

REPO = Path(__file__).parents[3]
STABLE = ("--set", "model.params.n_estimators=30", "--set", "model.params.max_depth=2")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A first version serves dev; a healthy retrain is registered as the candidate."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = tmp_path_factory.mktemp("drift-canary")
    shutil.copytree(REPO / "environments", root / "environments")
    for stage in ("train", "export", "gate", "register", "promote"):
        assert main([stage, "--env", "dev", "--workdir", str(root), *STABLE]) == 0
    for stage in ("train", "export", "gate", "register"):
        assert main([stage, "--env", "dev", "--workdir", str(root)]) == 0
    return root


def test_drift_inverted_candidate_is_healthy_by_http_but_aborts_on_prediction_shift(workspace: Path) -> None:
    code = main(["rollout", "--env", "dev", "--workdir", str(workspace), "--candidate-fault", "shift"])
    [timeline_path] = (workspace / "reports" / "dev").glob("*/rollout/timeline.json")
    timeline = json.loads(timeline_path.read_text())
    assert code == 1
    assert timeline["status"] == "aborted"
    assert timeline["reason"].startswith("ABORT step 3 (weight 20%): prediction shift: canary ")
    assert "vs stable" in timeline["reason"] and "> max " in timeline["reason"]
    windows = [e for e in timeline["events"] if e["action"] == "analysis"]
    # Healthy by HTTP: the canary answered every request it got without a 5xx.
    assert all(w["new"]["errors"] == 0 and w["new"]["requests"] > 0 for w in windows)
    assert timeline["user_requests"]["failures_after_abort"] == 0
    # The canary's predicted classes are the stable's mirror image.
    new, stable = windows[-1]["new"]["classes"], windows[-1]["stable"]["classes"]
    assert new["0"] / sum(new.values()) > stable["0"] / sum(stable.values())
    shutil.rmtree(timeline_path.parents[1])
