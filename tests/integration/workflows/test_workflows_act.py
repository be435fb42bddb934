"""act runs the real workflows on this machine (self-hosted, offline); the linters catch mistakes.

Each act run executes the real nox sessions of its jobs on the small profile of the event file
(`.github/act/*.json`): the `tests` job runs only tests/unit/workflows, so there is no recursion.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests._workflows import ROOT

pytestmark = pytest.mark.slow  # act runs whole workflows

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail(f"{name} is missing: install the `workflows` dependency group")
    return found


def _act(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    _tool("act")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/run_act.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _jobs(log: str, verdict: str) -> set[str]:
    """Job names act reported with `🏁  Job succeeded` or `🏁  Job failed`."""
    return {
        line.split("]", 1)[0].strip("[ ").split("/")[-1].strip()
        for line in log.splitlines()
        if f"🏁  Job {verdict}" in line
    }


def test_ci_push_runs_every_job_and_passes() -> None:
    done = _act("--event", "push")
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert {"train", "export", "gate", "loadtest", "image", "ci-ok"} <= _jobs(log, "succeeded")
    assert "Session gate was successful" in log and "Session tests was successful" in log
    # The image is built on run_act's private engine and smoke-tested, not pushed.
    assert "prediction 200, wrong shape 422" in log and "not pushed (image.push is false)" in log


def test_a_failing_gate_fails_the_gate_job_and_stops_the_chain(tmp_path: Path) -> None:
    event = json.loads((ROOT / ".github/act/push.json").read_text(encoding="utf-8"))
    event["act_profile"]["stage_args"] = "--set gates.metrics.roc_auc.min=0.999"
    path = tmp_path / "push-failing-gate.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    done = _act("--event", "push", "--event-path", str(path), "--", "--job", "gate")
    log = done.stdout + done.stderr
    assert done.returncode != 0, log[-4000:]
    assert _jobs(log, "failed") == {"gate"}
    assert {"train", "export"} <= _jobs(log, "succeeded")
    assert "roc_auc" in log and "0.999" in log


def test_cd_dispatch_pushes_the_image_once_and_commits_its_digest_for_dev_then_staging(
    tmp_path: Path,
) -> None:
    """cd.yml with run_act's local parts: a real registry on loopback, a private Docker engine, a bare
    GitOps remote. The image is built and pushed once; dev commits the overlay with its digest, staging's
    commit fast-forwards dev's (one dispatch to staging deploys dev first)."""
    event = json.loads((ROOT / ".github/act/workflow_dispatch.json").read_text(encoding="utf-8"))
    event["inputs"]["environment"] = "staging"
    path = tmp_path / "workflow_dispatch-staging.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    done = _act("--event", "workflow_dispatch", "--event-path", str(path), timeout=1800)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    succeeded = _jobs(log, "succeeded")
    # CD calls CI first (its `ci-ok` among the jobs), then trains, builds, deploys.
    assert {"ci-ok", "model", "image", "deploy"} <= succeeded, succeeded
    assert not {"preflight", "prod", "image-skipped"} & (succeeded | _jobs(log, "failed"))
    assert "rollout skipped::act runs this workflow on a laptop - no cluster here" in log
    # run_act's summary: what the registry holds and what landed on the GitOps remote's main.
    [pushed] = [line.split()[1:] for line in log.splitlines() if line.startswith("registry: ")]
    reference, digest = pushed
    assert digest.startswith("sha256:") and "/act-local/model-cicd:" in reference
    commits = [line.split(maxsplit=3)[1:] for line in log.splitlines() if line.startswith("gitops: ")]
    assert [subject.split(":")[0] for _, _, subject in commits] == ["deploy(dev)", "deploy(staging)"], commits
    (dev_sha, _, dev_subject), (_, staging_parent, staging_subject) = commits
    assert staging_parent == dev_sha  # staging fast-forwarded dev's commit
    assert digest in dev_subject and digest in staging_subject  # the pushed digest, unchanged
    assert "Session image was successful" in log and "Session register was successful" in log


def _lint(root: Path) -> list[int]:
    workflows = sorted(str(p) for p in (root / ".github/workflows").glob("*.yml"))
    zizmor = [_tool("zizmor"), "--offline", str(root / ".github/workflows"), str(root / ".github/actions")]
    schema = [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *workflows]
    return [
        subprocess.run(c, cwd=root, capture_output=True, check=False).returncode for c in (zizmor, schema)
    ]


def test_linters_pass_on_the_committed_workflows() -> None:
    assert _lint(ROOT) == [0, 0]


def test_linters_fail_on_planted_mistakes(tmp_path: Path) -> None:
    shutil.copytree(ROOT / ".github", tmp_path / ".github")
    ci = tmp_path / ".github/workflows/ci.yml"
    text = ci.read_text(encoding="utf-8")
    stage = "      - uses: ./.github/actions/stage\n        with:\n          sessions: train\n"
    assert text.count(stage) == 1
    ci.write_text(
        text.replace(stage, "      - run: echo ${{ github.event.head_commit.message }}\n" + stage),
        encoding="utf-8",
    )
    assert _lint(tmp_path)[0] != 0  # zizmor: template injection
    ci.write_text(text.replace("    runs-on: ubuntu-latest\n", "    runs-on: 7\n", 1), encoding="utf-8")
    assert _lint(tmp_path)[1] != 0  # check-jsonschema: structure
