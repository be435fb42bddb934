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
            assert name in {"image", "deploy", "dev", "staging", "prod"}, f"{name}: id-token only for OIDC"
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


def test_every_pin_is_the_locked_release_and_every_locked_action_is_used() -> None:
    locked = yaml.safe_load((ROOT / run_act.LOCK).read_text(encoding="utf-8"))
    assert run_act.lock(ROOT) == {repo: (e["tag"], e["sha"]) for repo, e in locked.items()}
    used = run_act.remote_actions(ROOT)
    assert {a.repo for a in used} == set(locked)
    for action in used:
        assert (action.ref, action.tag) == (locked[action.repo]["sha"], locked[action.repo]["tag"]), action
        assert re.fullmatch(r"v\d+\.\d+\.\d+", action.tag), f"{action}: the comment names a release tag"


def test_a_pin_that_differs_from_the_lock_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / ".github/workflows").mkdir(parents=True)
    stand_in = tmp_path / ".github/act/actions/actions/setup-python/action.yml"
    stand_in.parent.mkdir(parents=True)
    stand_in.write_text("name: x\n", encoding="utf-8")
    sha = "5fda3b95a4ea91299a34e894583c3862153e4b97"
    (tmp_path / ".github/actions.lock.yml").write_text(
        f"actions/setup-python: {{tag: v7.0.0, sha: {sha}}}\n", encoding="utf-8"
    )
    workflow = tmp_path / ".github/workflows/x.yml"
    workflow.write_text(f"jobs:\n  a:\n    steps:\n      - uses: actions/setup-python@{sha} # v7.0.0\n")
    assert run_act.problems(tmp_path) == []
    workflow.write_text(f"jobs:\n  a:\n    steps:\n      - uses: actions/setup-python@{sha} # v5\n")
    [found] = run_act.problems(tmp_path)
    assert "# v5" in found and f"has {sha} # v7.0.0" in found
    impostor = "00985784816f759cd7afd95a14346e99eb403cf6"
    workflow.write_text(f"jobs:\n  a:\n    steps:\n      - uses: actions/setup-python@{impostor} # v7.0.0\n")
    [found] = run_act.problems(tmp_path)
    assert impostor in found and run_act.main(["--check"], root=tmp_path) == 1


def test_ci_runs_zizmor_online_with_the_job_token_on_github_only() -> None:
    [step] = [
        s
        for s in _load(ROOT / ".github/workflows/ci.yml")["jobs"]["check"]["steps"]
        if "zizmor" in s.get("run", "")
    ]
    assert "--offline" not in step["run"] and step["env"] == {"GH_TOKEN": "${{ github.token }}"}
    assert step["if"] == "${{ matrix.session == 'lint' && !github.event.act }}"


def test_ci_concurrency_cancels_but_deploys_never_do() -> None:
    # A superseded push's CI is cancelled, but not CI called by CD (tests/unit/workflows/test_github_rules.py).
    assert _load(ROOT / ".github/workflows/ci.yml")["concurrency"]["cancel-in-progress"] == (
        "${{ github.workflow == 'CI' }}"
    )
    # No run-level group in CD: a run waiting for prod's approval does not hold up the next push's dev.
    assert "concurrency" not in _load(ROOT / ".github/workflows/cd.yml")
    [deploy] = _load(ROOT / ".github/workflows/reusable-deploy.yml")["jobs"].values()
    assert deploy["concurrency"] == {"group": "deploy-${{ inputs.environment }}", "cancel-in-progress": False}


def test_deploys_never_run_in_the_template_repository() -> None:
    jobs = _load(ROOT / ".github/workflows/cd.yml")["jobs"]
    for env in ("dev", "staging", "prod"):
        assert jobs[env]["uses"] == "./.github/workflows/reusable-deploy.yml"
        assert "github.repository != 'example-org/model-cicd-template'" in jobs[env]["if"]
    assert jobs["staging"]["needs"] == ["image", "dev"]
    assert jobs["prod"]["needs"] == ["image", "staging", "preflight"]


def test_prod_runs_only_from_main_after_the_preflight() -> None:
    jobs = _load(ROOT / ".github/workflows/cd.yml")["jobs"]
    assert "github.ref == 'refs/heads/main'" in jobs["prod"]["if"]
    [check] = [s for s in jobs["preflight"]["steps"] if "run" in s]
    assert check["run"] == "python3 scripts/prod_preflight.py"
    assert check["env"]["ALLOW_UNPROTECTED_PROD"] == "${{ vars.ALLOW_UNPROTECTED_PROD }}"
    assert jobs["preflight"]["permissions"] == {"actions": "read", "contents": "read"}


def test_a_failed_or_cancelled_rollout_is_rolled_back_through_the_branch_as_it_is_now() -> None:
    steps = {
        s.get("id") or s.get("name"): s
        for s in _load(ROOT / ".github/workflows/reusable-deploy.yml")["jobs"]["deploy"]["steps"]
    }
    rollback = steps["nox -s rollback -- --gitops"]
    assert (
        "(failure() || cancelled())" in rollback["if"]
        and "steps.gitops.outcome == 'success'" in rollback["if"]
    )
    for step in (steps["gitops"], rollback):
        assert step["run"].startswith("python3 scripts/gitops_push.py --worktree")
        assert step["env"]["GITOPS_TOKEN"] == "${{ secrets.GITOPS_TOKEN }}"
    assert "--gitops" in steps["gitops"]["run"] and "--config-dir environments" in rollback["run"]
    # The promotion refuses when ENV's config changed on main since the run, else renders with main's files.
    assert '--same-config "$TARGET_ENV" --' in steps["gitops"]["run"]
    assert '--config-dir "$RUNNER_TEMP/gitops/environments"' in steps["gitops"]["run"]
    assert "--same-config" not in rollback["run"]
    # The rollout follows the commit the GitOps step pushed, not whatever the cluster runs.
    follow = steps["nox -s rollout -- --target kubernetes"]
    assert follow["env"]["REVISION"] == "${{ steps.gitops.outputs.revision }}"
    assert '--revision "$REVISION"' in follow["run"]


def test_ci_aggregate_job_needs_every_other_job() -> None:
    jobs = _load(ROOT / ".github/workflows/ci.yml")["jobs"]
    assert set(jobs["ci-ok"]["needs"]) == set(jobs) - {"ci-ok"}


STAGE_ACTION = "./.github/actions/stage"


def _stage_step(job: dict[str, Any]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [s for s in job.get("steps", []) if s.get("uses") == STAGE_ACTION]
    [step] = steps
    return step


def test_each_stage_job_is_its_checkout_and_the_stage_action() -> None:
    """ci.yml's model stages are a table: one job per stage session, each downloading what a job it
    needs uploaded, in the order of the pipeline."""
    jobs = _load(ROOT / ".github/workflows/ci.yml")["jobs"]
    stage_jobs = {name: job for name, job in jobs.items() if name not in {"check", "ci-ok"}}
    assert list(stage_jobs) == ["train", "export", "gate", "loadtest", "image", "rollout"]
    uploads = {name: _stage_step(job)["with"].get("upload") for name, job in stage_jobs.items()}
    for name, job in stage_jobs.items():
        assert str(job["steps"][0]["uses"]).startswith("actions/checkout@"), name
        given = _stage_step(job)["with"]
        assert given["sessions"] == name
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        if "download" in given:
            assert given["download"] in {uploads[n] for n in needs}, f"{name} downloads {given['download']}"
        else:
            assert not needs, f"{name} needs {needs} but downloads nothing they made"


def test_the_stage_action_passes_its_inputs_through_the_environment() -> None:
    """Template injection: a composite action's `run:` reads inputs from `env:`, never from `${{ }}`."""
    for path in sorted((ROOT / ".github/actions").glob("*/action.yml")):
        for step in _load(path)["runs"]["steps"]:
            assert "${{" not in step.get("run", ""), f"{path}: ${{{{ }}}} inside run: {step}"
    stage = _load(ROOT / ".github/actions/stage/action.yml")
    [upload] = [
        s for s in stage["runs"]["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")
    ]
    assert upload["with"]["overwrite"] is True and upload["with"]["if-no-files-found"] == "error"
    assert set(stage["outputs"]) == {
        "image",
        "digest",
    }  # what the image stage writes (pipeline/stages/image.py)


def test_cd_reads_the_pushed_digest_from_the_image_stage_and_fails_without_one() -> None:
    jobs = _load(ROOT / ".github/workflows/cd.yml")["jobs"]
    assert jobs["image"]["outputs"] == {"digest": "${{ steps.image.outputs.digest }}"}
    image = next(s for s in jobs["image"]["steps"] if s.get("id") == "image")
    assert image["uses"] == STAGE_ACTION and image["with"]["sessions"] == "image"
    assert "--set image.push=true" in image["with"]["args"]
    [check] = [s for s in jobs["image"]["steps"] if "steps.image.outputs.digest" in str(s.get("if", ""))]
    assert "exit 1" in check["run"]
    text = (ROOT / ".github/workflows/cd.yml").read_text(encoding="utf-8")
    assert "image.json" not in text and "python3 -" not in text  # no parsing of the artifact layout


def test_every_environment_gets_the_same_secrets_passed_once() -> None:
    """`secrets: inherit` would hand the called workflow every secret; the explicit list is written once
    (a YAML anchor) and is exactly what reusable-deploy.yml declares."""
    jobs = _load(ROOT / ".github/workflows/cd.yml")["jobs"]
    callee = yaml.safe_load((ROOT / ".github/workflows/reusable-deploy.yml").read_text(encoding="utf-8"))
    declared = set(callee[True]["workflow_call"]["secrets"])  # PyYAML reads the key `on` as True
    for env in ("dev", "staging", "prod"):
        assert jobs[env]["secrets"] == {name: f"${{{{ secrets.{name} }}}}" for name in declared}, env
    text = (ROOT / ".github/workflows/cd.yml").read_text(encoding="utf-8")
    assert text.count("${{ secrets.KUBE_CONFIG }}") == 1


def test_where_to_deploy_runs_the_script_with_every_value_it_reads() -> None:
    workflow = _load(ROOT / ".github/workflows/reusable-deploy.yml")
    [deploy] = workflow["jobs"].values()
    [target] = [s for s in deploy["steps"] if s.get("id") == "target"]
    assert target["run"] == "python3 scripts/deploy_target.py"
    source = (ROOT / "scripts/deploy_target.py").read_text(encoding="utf-8")
    read = set(re.findall(r"environ(?:\.get\(|\[)\"([A-Z_]+)\"", source))
    from_runner = {"RUNNER_TEMP", "GITHUB_OUTPUT", "GITHUB_ENV"}
    assert read - from_runner - {"TARGET_ENV"} == set(target["env"]), "the step's env and the script disagree"
    assert workflow["env"]["TARGET_ENV"] == "${{ inputs.environment }}"


def test_problems_flag_an_unpinned_action_and_a_missing_stand_in(tmp_path: Path) -> None:
    (tmp_path / ".github/workflows").mkdir(parents=True)
    (tmp_path / ".github/workflows/x.yml").write_text(
        "jobs:\n  a:\n    steps:\n      - uses: actions/checkout@v4\n"
        "      - uses: owner/tool@0123456789abcdef0123456789abcdef01234567 # v1.0.0\n"
        "      - uses: ./.github/actions/setup\n",
        encoding="utf-8",
    )
    found = run_act.problems(tmp_path)
    assert len(found) == 3
    assert "actions/checkout@v4: pin by full commit SHA" in found[0]
    assert "owner/tool@0123456789abcdef0123456789abcdef01234567: not in .github/actions.lock.yml" in found[1]
    assert "owner/tool@0123456789abcdef0123456789abcdef01234567: no act stand-in" in found[2]
    assert run_act.main(["--check"], root=tmp_path) == 1


def test_act_command_maps_each_action_to_its_stand_in_and_picks_the_event(tmp_path: Path) -> None:
    command = run_act.act_command(ROOT, "workflow_dispatch", artifact_dir=tmp_path)
    assert command[:3] == ["act", "workflow_dispatch", "--workflows"]
    assert command[3] == ".github/workflows/cd.yml"
    assert command[command.index("--eventpath") + 1] == str(ROOT / ".github/act/workflow_dispatch.json")
    assert f"ACT_ARTIFACT_DIR={tmp_path}" in command
    mapped = [command[i + 1] for i, arg in enumerate(command) if arg == "--local-repository"]
    repos = {m.split("@")[0] for m in mapped}
    assert repos == {
        "actions/setup-python",
        "actions/upload-artifact",
        "actions/download-artifact",
        "docker/login-action",
    }
    for entry in mapped:
        assert Path(entry.split("=", 1)[1], "action.yml").is_file()
    push = run_act.act_command(ROOT, "push", artifact_dir=tmp_path, extra=["-j", "gate"])
    assert push[3] == ".github/workflows/ci.yml" and push[-2:] == ["-j", "gate"]


def test_act_command_with_the_local_release_parts(tmp_path: Path) -> None:
    release = run_act.LocalRelease(tmp_path / "checkout", tmp_path / "gitops.git", "127.0.0.1:5999")
    command = run_act.act_command(
        ROOT, "workflow_dispatch", artifact_dir=tmp_path, docker_host="unix:///s", release=release
    )
    assert command[command.index("--var") + 1] == "IMAGE_REGISTRY=127.0.0.1:5999"
    assert "DOCKER_HOST=unix:///s" in command
    assert command[command.index("--remote-name") + 1] == run_act.SLUG_REMOTE
    # CI's `image` job builds on the private engine too: a push run gets DOCKER_HOST, no registry.
    push = run_act.act_command(ROOT, "push", artifact_dir=tmp_path, docker_host="unix:///s")
    assert "DOCKER_HOST=unix:///s" in push and "--var" not in push and "--remote-name" not in push


def test_the_clone_act_runs_in_carries_the_uncommitted_changes(tmp_path: Path) -> None:
    def git(repo: Path, *args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True)

    root = tmp_path / "root"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for name in ("kept", "changed", "deleted"):
        (root / name).write_text(name)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "x")
    (root / "changed").write_text("changed, not committed")
    (root / "deleted").unlink()
    (root / "new").write_text("untracked")
    run_act.clone_working_tree(root, tmp_path / "clone")
    clone = tmp_path / "clone"
    assert {p.name: p.read_text() for p in clone.iterdir() if p.is_file()} == {
        "kept": "kept",
        "changed": "changed, not committed",
        "new": "untracked",
    }


def test_actrc_runs_self_hosted_without_a_cache_server() -> None:
    flags = (ROOT / ".actrc").read_text(encoding="utf-8").split("\n")
    assert "-P ubuntu-latest=-self-hosted" in flags and "--no-cache-server" in flags


def test_event_files_mark_act_and_keep_the_test_job_small() -> None:
    import json  # noqa: PLC0415

    for event in run_act.EVENT_WORKFLOW:
        data = json.loads((ROOT / ".github/act" / f"{event}.json").read_text(encoding="utf-8"))
        assert data["act"] is True
        # The act run's `tests` job (cd.yml runs ci.yml too) must not run the act integration tests
        # again (recursion).
        assert data["act_profile"]["pytest_args"].startswith("tests/unit/workflows"), event
    # ci.yml's push trigger leaves main to CD: the push event file is a push to another branch.
    push = json.loads((ROOT / ".github/act/push.json").read_text(encoding="utf-8"))
    assert push["ref"] != "refs/heads/main"


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


def test_the_upload_stand_in_refuses_a_second_upload_of_a_name_without_overwrite(tmp_path: Path) -> None:
    """As upload-artifact v4+ does (artifacts are immutable; `overwrite: false` fails when the name
    exists), so `nox -s act` catches a workflow that uploads one name twice in a run."""
    [step] = _load(ROOT / ".github/act/actions/actions/upload-artifact/action.yml")["runs"]["steps"]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "file").write_text("x")

    def upload(overwrite: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "ACT_ARTIFACT_DIR": str(tmp_path / "store"), "NAME": "model"}
        env |= {"PATHS": "out/", "IF_NONE": "error", "OVERWRITE": overwrite}
        return subprocess.run(
            ["bash", "-e", "-c", step["run"]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    assert upload("false").returncode == 0
    refused = upload("false")
    assert refused.returncode == 1 and "409" in refused.stdout and "overwrite: true" in refused.stdout
    assert upload("true").returncode == 0
    assert (tmp_path / "store" / "model" / "out" / "file").read_text() == "x"
