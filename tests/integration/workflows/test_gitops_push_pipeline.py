"""CD's GitOps step as reusable-deploy.yml runs it: scripts/gitops_push.py around the real
`python -m pipeline promote --gitops`, on a real registry, against a bare remote whose main moves
while the job pushes (a pre-push hook lets another clone push first, as dev's deploy would)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from tests._workflows import ROOT, load_script

gitops_push = load_script("gitops_push")

DIGEST = "registry.example/acme/model@sha256:" + "d" * 64


def _git(repo: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(repo), "GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "d@x"}
    env |= {"GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": "d@x"}
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


RACE = """#!/bin/sh
# The first push finds that another deploy pushed to main an instant before.
[ -f "{flag}" ] && exit 0
touch "{flag}"
cd "{other}" && env -i PATH="$PATH" HOME="{other}" sh -c 'git pull -q --rebase origin main &&
  git -c user.name=dev -c user.email=d@x commit -q --allow-empty -m "deploy(dev): the other run" &&
  git push -q origin HEAD:main' >&2
"""


def test_the_overlay_commit_lands_on_the_moved_branch_and_the_alias_moves(
    stable_and_candidate: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    remote, job, other = tmp_path / "remote.git", tmp_path / "job", tmp_path / "other"
    _git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(remote))
    _git(tmp_path, "clone", "--quiet", str(remote), str(other))
    _git(other, "commit", "--quiet", "--allow-empty", "-m", "the run's commit")
    _git(other, "push", "--quiet", "origin", "HEAD:main")
    _git(tmp_path, "clone", "--quiet", str(remote), str(job))
    for name in ("environments", "artifacts", ".mlflow"):
        shutil.copytree(stable_and_candidate / name, job / name)
    assert main(["register", "--env", "dev", "--workdir", str(job), "--image", DIGEST]) == 0
    hook = job / ".git" / "hooks" / "pre-push"
    hook.write_text(RACE.format(flag=tmp_path / "raced", other=other), encoding="utf-8")
    hook.chmod(0o755)
    worktree = tmp_path / "gitops"
    command = [sys.executable, "-m", "pipeline", "promote", "--env", "dev", "--gitops", "--workdir"]
    command += [str(worktree), "--config-dir", "environments"]
    command += ["--set", "deploy.gitops.remote=origin", "--set", "deploy.gitops.branch=main"]
    capfd.readouterr()
    environ = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"}
    code = gitops_push.run(
        job, worktree, command, remote="origin", branch="main", attempts=3, environ=environ
    )
    out = capfd.readouterr().out
    assert code == 0, out
    assert "attempt 2/3" in out and "moved to" in out
    log = _git(remote, "log", "--format=%s%x09%an", "main").splitlines()
    assert [line.split("\t")[1] for line in log] == ["github-actions[bot]", "dev", "dev"]
    assert log[0].startswith("deploy(dev): breast-cancer-classifier version 2 (sha256:" + "d" * 64)
    assert log[1].startswith("deploy(dev): the other run")
    changed = _git(remote, "show", "--name-only", "--format=", "main").splitlines()
    cd = yaml.safe_load((ROOT / ".github/workflows/cd.yml").read_text(encoding="utf-8"))
    ignored = [p.removesuffix("**") for p in cd[True]["push"]["paths-ignore"]]
    assert "k8s/overlays/dev/release.yaml" in changed
    assert all(path.startswith(tuple(ignored)) for path in changed), changed  # this push starts no CD run
    assert "alias 'dev'" in out and "-> 2" in out  # the job's registry, linked into the worktree
