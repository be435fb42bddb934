"""`pipeline shadow` for real: stable (alias dev) and candidate as service processes, the mirror, Locust
users checking every answer, a real registry. Faults must fail naming the measurement, a healthy retrain
with tail latency noise must pass, and in all of them every user got stable's answer.

Calibrated with one core kept busy (docs/shadow.md, Calibration)."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from tests._processes import command_lines

pytestmark = pytest.mark.slow  # each mirrors live traffic between two service processes

STABLE_VERSION_ARGS = ("--set", "model.params.n_estimators=30", "--set", "model.params.max_depth=2")
"""The config version 1 was trained with (tests/integration/conftest.py): the candidate is the serving version."""


@pytest.fixture
def workspace(stable_and_candidate: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(stable_and_candidate, root, ignore=shutil.ignore_patterns("reports"))
    return root


def shadow(workspace: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["shadow", "--env", "dev", "--workdir", str(workspace), *args])
    [verdict] = (workspace / "reports" / "dev").glob("*/shadow/shadow.json")
    return code, json.loads(verdict.read_text())


def every_user_got_stable(verdict: dict[str, Any]) -> bool:
    users = verdict["user_requests"]
    return bool(users["requests"] > 0 and users["failures"] == 0 and users["proxy_resets"] == 0)


def test_a_healthy_retrain_with_tail_noise_passes(workspace: Path) -> None:
    """Another data split (seed 7) and 8 % of the candidate's requests 3 ms late: no fault."""
    code, verdict = shadow(workspace, "--set", "data.seed=7", "--candidate-fault", "latency=3ms@0.08")
    assert code == 0, verdict["decision"]
    assert verdict["status"] == "pass"
    assert every_user_got_stable(verdict)
    assert verdict["copies"].get("dropped", 0) == 0
    assert list((workspace / "reports" / "dev").glob("*/shadow/shadow.png"))
    assert [cmd for _, cmd in command_lines() if str(workspace) in cmd] == []


@pytest.mark.parametrize(
    ("args", "measurement"),
    [
        (("--candidate-fault", "shift"), "label_agreement"),  # scores inverted by the service
        (
            ("--set", "model.params.learning_rate=0.00001"),
            "label_agreement",
        ),  # a retrain that predicts one class
    ],
)
def test_a_faulty_candidate_fails_naming_the_measurement(
    workspace: Path, args: tuple[str, ...], measurement: str
) -> None:
    code, verdict = shadow(workspace, *args)
    assert code == 1
    assert verdict["status"] == "fail"
    assert verdict["decision"].startswith(f"FAIL: candidate vs stable {measurement} ")
    failed = {c["metric"] for c in verdict["checks"] if c["result"] == "fail"}
    assert {"label_agreement", "positive_rate_delta"} <= failed
    assert every_user_got_stable(verdict)


def test_the_serving_version_is_a_stated_skip(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shadow", "--env", "dev", "--workdir", str(workspace), *STABLE_VERSION_ARGS]) != 0
    assert "already serves dev: nothing to compare" in capsys.readouterr().err


def test_a_first_release_and_a_disabled_shadow_are_stated_skips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(Path(__file__).parents[3] / "environments", tmp_path / "environments")
    assert main(["shadow", "--env", "dev", "--workdir", str(tmp_path)]) != 0
    assert "no version holds alias 'dev' (a first release to dev)" in capsys.readouterr().err
    assert main(["shadow", "--env", "dev", "--workdir", str(tmp_path), "--set", "shadow.enabled=false"]) != 0
    assert "shadow.enabled is false for dev" in capsys.readouterr().err
    assert not (tmp_path / "artifacts").exists()  # nothing trained for a skip
