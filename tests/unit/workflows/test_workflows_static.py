"""The committed workflows follow the least-privilege rules, and run_act.py maps every action."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._workflows import ROOT, load_run_act

run_act = load_run_act()
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _steps(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in data["jobs"].values() for step in job.get("steps", [])]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_least_privilege(path: Path) -> None:
    data = _load(path)
    assert data["permissions"] == {}, "top-level permissions must be {}"
    for name, job in data["jobs"].items():
        assert "permissions" in job, f"{name}: grant permissions per job"
        if "uses" not in job:  # a call of a reusable workflow takes its limits from the callee
            assert job.get("timeout-minutes"), f"{name}: timeout-minutes"
        if "id-token" in (job.get("permissions") or {}):
            assert name in {"image", "rollout", "dev", "staging", "prod"}, f"{name}: id-token only for OIDC"
    for step in _steps(data):
        assert "${{" not in step.get("run", ""), f"{path.name}: ${{{{ }}}} inside run: {step}"
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


def test_every_remote_action_is_pinned_with_a_version_comment_and_has_a_stand_in() -> None:
    assert run_act.problems(ROOT) == []
    text = "\n".join(p.read_text(encoding="utf-8") for p in run_act.workflow_files(ROOT))
    for line in text.splitlines():
        if re.search(r"uses: [\w-]+/[\w-]+@", line):
            assert re.search(r"@[0-9a-f]{40} # v\d", line), line


def test_ci_concurrency_cancels_but_deploys_never_do() -> None:
    assert _load(ROOT / ".github/workflows/ci.yml")["concurrency"]["cancel-in-progress"] is True
    assert _load(ROOT / ".github/workflows/cd.yml")["concurrency"]["cancel-in-progress"] is False
    for job in _load(ROOT / ".github/workflows/reusable-deploy.yml")["jobs"].values():
        if "concurrency" in job:
            assert job["concurrency"]["cancel-in-progress"] is False


def test_deploys_never_run_in_the_template_repository() -> None:
    jobs = _load(ROOT / ".github/workflows/cd.yml")["jobs"]
    for env in ("dev", "staging", "prod"):
        assert jobs[env]["uses"] == "./.github/workflows/reusable-deploy.yml"
        assert "github.repository != 'example-org/model-cicd-template'" in jobs[env]["if"]
    assert jobs["staging"]["needs"] == ["image", "dev"] and jobs["prod"]["needs"] == ["image", "staging"]


def test_ci_aggregate_job_needs_every_other_job() -> None:
    jobs = _load(ROOT / ".github/workflows/ci.yml")["jobs"]
    assert set(jobs["ci-ok"]["needs"]) == set(jobs) - {"ci-ok"}


def test_problems_flag_an_unpinned_action_and_a_missing_stand_in(tmp_path: Path) -> None:
    (tmp_path / ".github/workflows").mkdir(parents=True)
    (tmp_path / ".github/workflows/x.yml").write_text(
        "jobs:\n  a:\n    steps:\n      - uses: actions/checkout@v4\n"
        "      - uses: owner/tool@0123456789abcdef0123456789abcdef01234567 # v1.0.0\n"
        "      - uses: ./.github/actions/setup\n",
        encoding="utf-8",
    )
    found = run_act.problems(tmp_path)
    assert len(found) == 2
    assert "actions/checkout@v4: pin by full commit SHA" in found[0]
    assert "owner/tool@0123456789abcdef0123456789abcdef01234567: no act stand-in" in found[1]
    assert run_act.main(["--check"], root=tmp_path) == 1


def test_act_command_maps_each_action_to_its_stand_in_and_picks_the_event(tmp_path: Path) -> None:
    command = run_act.act_command(ROOT, "workflow_dispatch", artifact_dir=tmp_path)
    assert command[:3] == ["act", "workflow_dispatch", "--workflows"]
    assert command[3] == ".github/workflows/cd.yml"
    assert command[command.index("--eventpath") + 1] == str(ROOT / ".github/act/workflow_dispatch.json")
    assert f"ACT_ARTIFACT_DIR={tmp_path}" in command
    mapped = [command[i + 1] for i, arg in enumerate(command) if arg == "--local-repository"]
    repos = {m.split("@")[0] for m in mapped}
    assert repos == {"actions/setup-python", "actions/upload-artifact", "actions/download-artifact"}
    for entry in mapped:
        assert Path(entry.split("=", 1)[1], "action.yml").is_file()
    push = run_act.act_command(ROOT, "push", artifact_dir=tmp_path, extra=["-j", "gate"])
    assert push[3] == ".github/workflows/ci.yml" and push[-2:] == ["-j", "gate"]


def test_actrc_runs_self_hosted_without_a_cache_server() -> None:
    flags = (ROOT / ".actrc").read_text(encoding="utf-8").split("\n")
    assert "-P ubuntu-latest=-self-hosted" in flags and "--no-cache-server" in flags


def test_event_files_mark_act_and_keep_the_test_job_small() -> None:
    import json  # noqa: PLC0415

    for event in run_act.EVENT_WORKFLOW:
        data = json.loads((ROOT / ".github/act" / f"{event}.json").read_text(encoding="utf-8"))
        assert data["act"] is True
    push = json.loads((ROOT / ".github/act/push.json").read_text(encoding="utf-8"))
    # The act run's `tests` job must not run the act integration tests again (recursion).
    assert push["act_profile"]["pytest_args"].startswith("tests/unit/workflows")


def test_dry_run_prints_the_command_and_runs_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"--dry-run started a process: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    assert run_act.main(["--dry-run", "--event", "pull_request"]) == 0
    printed = capsys.readouterr().err
    assert "pull_request --workflows .github/workflows/ci.yml" in printed
    assert f"--eventpath {ROOT / '.github/act/pull_request.json'}" in printed
