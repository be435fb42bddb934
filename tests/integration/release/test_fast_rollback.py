"""Rolling back to a release that served within `rollout.rollback_window` skips the steps and the analysis
(a rehearsal with real processes, Caddy and Locust), and says how long the restore took; outside the
window the plan runs in full. A rehearsal that aborts on its own (no injected fault) quarantines its
release."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from tests._pipeline_runs import FAST

pytestmark = pytest.mark.slow  # rehearsals


@pytest.fixture
def v2_serving(stable_and_candidate: Path, tmp_path: Path) -> Path:
    """Version 1 served dev, version 2 serves it now."""
    root = tmp_path / "workspace"
    shutil.copytree(stable_and_candidate, root, ignore=shutil.ignore_patterns("reports"))
    assert main(["promote", "--env", "dev", "--workdir", str(root)]) == 0
    return root


def timeline(root: Path) -> dict[str, Any]:
    (path,) = sorted((root / "reports" / "dev").glob("*/rollout/timeline.json"))[-1:]
    return dict(json.loads(path.read_text()))


def rollback(root: Path, *extra: str) -> int:
    return main(["rollback", "--env", "dev", "--workdir", str(root), "--rehearse", *FAST, *extra])


def test_a_rollback_within_the_window_skips_steps_and_analysis(
    v2_serving: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollback(v2_serving) == 0
    out = capsys.readouterr().out
    record = timeline(v2_serving)
    assert record["fast"] is True
    assert [event["action"] for event in record["events"]] == ["promote", "retire_stable"]
    assert record["restored_after_s"] > 0
    assert "rollback to version 1: 0 release(s) served since" in out and "fast (no steps, no analysis)" in out
    assert "time to restore:" in out


def test_a_rollback_outside_the_window_runs_the_plan(
    v2_serving: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollback(v2_serving, "--set", "rollout.rollback_window=0") == 0
    record = timeline(v2_serving)
    assert record["fast"] is False
    actions = [event["action"] for event in record["events"]]
    assert "analysis" in actions and actions[0] == "set_weight"
    assert "the full plan" in capsys.readouterr().out


def test_a_rehearsal_that_aborts_on_its_own_quarantines_its_release(
    stable_and_candidate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "workspace"
    shutil.copytree(stable_and_candidate, root, ignore=shutil.ignore_patterns("reports"))
    impossible = ("--set", "rollout.analysis.metrics={error_ratio: {max: 0.01}, p95_ms: {max: 0.001}}")
    assert main(["rollout", "--env", "dev", "--workdir", str(root), *FAST, *impossible]) == 1
    assert "quarantined breast-cancer-classifier version 2" in capsys.readouterr().out
    assert main(["promote", "--env", "dev", "--workdir", str(root)]) == 1
    assert "promotion quarantine: rejected: REJECTED in dev" in capsys.readouterr().err
