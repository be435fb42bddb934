"""Approval on any plan, offline: a promotion into prod with `promotion.approval: pull_request` opens a pull
request against the deploy branch with its evidence as commit statuses; release-evidence.yml (under act)
turns them into the required check; a local stand-in of the GitHub API refuses the merge until a code owner
approved, as the repository's ruleset and CODEOWNERS say; release-merged.yml (under act) then moves the
alias and tags the merge commit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from tests._github_api import GitHubStandIn, serving
from tests._pipeline_runs import FAST
from tests._workflows import ROOT, load_script

pytestmark = pytest.mark.slow  # a rehearsal and two act runs

run_act = load_script("run_act")
REPOSITORY = "acme/model-cicd"
MODEL = "breast-cancer-classifier"
DIGEST = "sha256:" + "e" * 64
TOKENS = {"bot": "release-bot", "alice": "alice", "mallory": "mallory", "actions": "github-actions[bot]"}
TEAMS = {"@OWNER/release-approvers": {"alice"}}
BIN = Path(sys.executable).parent


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This working tree, committed, in a clone whose origin is a bare remote (the deploy branch main)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    remote, work = tmp_path / "remote.git", tmp_path / "checkout"
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(remote)], check=True)
    run_act.clone_working_tree(ROOT, work)
    for key, value in {
        "user.name": "dev",
        "user.email": "dev@example.com",
        "commit.gpgsign": "false",
    }.items():
        _git(work, "config", key, value)
    _git(work, "add", "--all")
    _git(work, "commit", "--quiet", "--allow-empty", "-m", "the working tree")
    _git(work, "remote", "set-url", "origin", str(remote))
    _git(work, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    return work


def stage(work: Path, name: str, env: str, *args: str) -> None:
    assert main([name, "--env", env, "--workdir", str(work), *args]) == 0, name


def call(api: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{api}/repos/{REPOSITORY}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def act(cwd: Path, workflow: str, event: dict[str, Any], tmp_path: Path, *extra: str) -> str:
    path = tmp_path / f"{workflow}.json"
    path.write_text(json.dumps({"act": True, **event}), encoding="utf-8")
    command = run_act.act_command(
        cwd, "pull_request", event_path=path, workflow=workflow, artifact_dir=tmp_path, act=str(BIN / "act")
    )
    env = {**os.environ, "ACT_DISABLE_VERSION_CHECK": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [*command, *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    return log


def test_a_prod_release_merges_only_under_code_owner_review_with_its_evidence(
    checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Version 1: load-tested in dev, rehearsed in staging (the canary evidence), serving staging.
    for name in ("train", "export"):
        stage(checkout, name, "dev")
    stage(checkout, "gate", "staging")
    stage(checkout, "register", "staging", "--image", DIGEST)
    stage(checkout, "loadtest", "dev", *FAST)
    stage(checkout, "rollout", "staging", *FAST)  # a first deploy: the rehearsal promotes staging after it
    stage(checkout, "gate", "prod")
    stage(checkout, "register", "prod", "--image", DIGEST)

    remote = tmp_path / "remote.git"
    stand_in = GitHubStandIn(remote, REPOSITORY, dict(TOKENS), TEAMS)
    uri = f"sqlite:///{checkout / '.mlflow' / 'mlflow.db'}"
    registry = MlflowClient(uri, uri)
    with serving(stand_in) as api:
        for name, value in {
            "GITHUB_API_URL": api,
            "GITHUB_REPOSITORY": REPOSITORY,
            "GITOPS_API_TOKEN": "bot",
        }.items():
            monkeypatch.setenv(name, value)
        pr_mode = ("--set", "promotion.approval=pull_request", "--set", "deploy.gitops.remote=origin")
        stage(checkout, "promote", "prod", "--gitops", *pr_mode)
        pull = stand_in.pulls[1]
        assert (pull.head, pull.base, pull.author) == (f"release/prod/{MODEL}-v1.0.0", "main", "release-bot")
        evidence = {s["context"]: s["state"] for s in stand_in.statuses[pull.head_sha]}
        assert evidence == dict.fromkeys(
            ["release/gate", "release/loadtest", "release/canary", "release/soak", "release/policy"],
            "success",
        )
        assert "prod" not in (registry.get_registered_model(MODEL).aliases or {})  # nothing moved yet

        event = {"action": "opened", "pull_request": {"number": 1, "head": {"ref": pull.head, "sha": pull.head_sha}, "base": {"ref": "main"}}}  # fmt: skip
        secrets = ("--env", f"GITHUB_API_URL={api}", "--env", f"GITHUB_REPOSITORY={REPOSITORY}", "--secret", "GITHUB_TOKEN=actions")  # fmt: skip
        log = act(checkout, "release-evidence.yml", event, tmp_path, *secrets)
        assert "release/evidence: success: 5 evidence statuses passed" in log

        assert call(api, "bot", "PUT", "/pulls/1/merge")[0] == 405
        status, answer = call(api, "bot", "POST", "/pulls/1/reviews", {"event": "APPROVE"})
        assert status == 422 and "your own pull request" in answer["message"]
        call(api, "mallory", "POST", "/pulls/1/reviews", {"event": "APPROVE"})
        status, answer = call(api, "mallory", "PUT", "/pulls/1/merge")
        assert (
            status == 405
            and "Waiting on code owner review from @OWNER/release-approvers" in answer["message"]
        )
        call(api, "alice", "POST", "/pulls/1/reviews", {"event": "APPROVE"})
        status, answer = call(api, "alice", "PUT", "/pulls/1/merge")
        assert status == 200 and answer["merged"], answer

    merged = tmp_path / "merged"
    subprocess.run(["git", "clone", "--quiet", str(remote), str(merged)], check=True)
    merge = _git(merged, "rev-parse", "HEAD")
    assert merge == pull.merge_commit_sha
    event = {
        "action": "closed",
        "pull_request": {
            "number": 1,
            "merged": True,
            "merge_commit_sha": merge,
            "head": {"ref": pull.head, "sha": pull.head_sha},
            "base": {"ref": "main"},
        },
    }
    act(merged, "release-merged.yml", event, tmp_path, "--secret", f"MLFLOW_TRACKING_URI={uri}")
    assert str(registry.get_model_version_by_alias(MODEL, "prod").version) == "1"
    tags = _git(merged, "ls-remote", "--tags", "origin")
    assert f"refs/tags/{MODEL}/prod/v1.0.0^{{}}" in tags  # annotated, on the merge commit
    assert any(line.startswith(merge) and line.endswith("v1.0.0^{}") for line in tags.splitlines())
