"""A rolled-back release cannot be promoted again without the override, in the registry and in Git: the
rollback's revert commit records the rejection, `promote --gitops` refuses it, `--unquarantine --reason`
lifts it in the promotion commit; every promotion commit is tagged `<model>/<env>/v<semver>`."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from pipeline.cli import main

pytestmark = pytest.mark.slow  # trains two versions

REPO = Path(__file__).resolve().parents[3]
MODEL = "breast-cancer-classifier"
STABLE = ("--set", "model.params.n_estimators=30", "--set", "model.params.max_depth=2")
GITOPS = ("--set", "deploy.gitops.remote=origin")
DIGESTS = ("sha256:" + "a" * 64, "sha256:" + "b" * 64)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace in git with a bare remote, the environments committed."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    remote, work = tmp_path / "gitops.git", tmp_path / "work"
    _git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(remote))
    _git(tmp_path, "init", "--quiet", "-b", "main", str(work))
    for key, value in {"user.name": "t", "user.email": "t@example.com", "commit.gpgsign": "false"}.items():
        _git(work, "config", key, value)
    _git(work, "remote", "add", "origin", str(remote))
    shutil.copytree(REPO / "environments", work / "environments")
    (work / ".gitignore").write_text("artifacts/\nreports/\n.mlflow/\nbuild/\n")
    _git(work, "add", ".")
    _git(work, "commit", "--quiet", "-m", "environments")
    _git(work, "push", "--quiet", "origin", "main")
    return work


def run(repo: Path, *args: str) -> int:
    return main([args[0], "--env", "dev", "--workdir", str(repo), *args[1:]])


def release(repo: Path, digest: str, *overrides: str) -> None:
    for stage in ("train", "export", "gate"):
        assert run(repo, stage, *overrides) == 0
    assert run(repo, "register", "--image", digest, *overrides) == 0
    assert run(repo, "promote", "--gitops", *GITOPS, *overrides) == 0


def remote_head(repo: Path) -> str:
    return _git(repo, "ls-remote", "origin", "refs/heads/main").split()[0]


def test_a_rolled_back_release_needs_the_override_in_registry_and_git(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release(repo, DIGESTS[0], *STABLE)
    release(repo, DIGESTS[1])
    tags = set(_git(repo, "ls-remote", "--tags", "origin").split())
    assert {f"refs/tags/{MODEL}/dev/v1.0.0", f"refs/tags/{MODEL}/dev/v1.0.1"} <= tags
    assert _git(repo, "rev-list", "-n1", f"{MODEL}/dev/v1.0.1") == remote_head(repo)

    assert run(repo, "rollback", "--gitops", "--reason", "canary answered 5xx", *GITOPS) == 0
    message = _git(repo, "log", "-1", "--format=%B")
    assert f"Quarantine: {MODEL} version 2: canary answered 5xx" in message
    (entry,) = yaml.safe_load(_git(repo, "show", "HEAD:k8s/quarantine/dev.yaml"))
    assert (entry["model_version"], entry["image"], entry["reason"]) == (
        "2",
        f"model-service@{DIGESTS[1]}",
        "canary answered 5xx",
    )
    uri = f"sqlite:///{repo / '.mlflow' / 'mlflow.db'}"
    assert "canary answered 5xx" in MlflowClient(uri, uri).get_model_version(MODEL, "2").tags["quarantine"]

    head = remote_head(repo)
    capsys.readouterr()
    assert run(repo, "promote", "--gitops", "--to-version", "2", *GITOPS) == 1
    assert "k8s/quarantine/dev.yaml rejects version 2" in capsys.readouterr().err
    assert run(repo, "promote", "--to-version", "2") == 1  # the registry refuses it too, without Git
    assert "--unquarantine --reason TEXT" in capsys.readouterr().err
    assert remote_head(repo) == head

    reason = "the canary's 5xx came from a node drain"
    assert (
        run(repo, "promote", "--gitops", "--to-version", "2", "--unquarantine", "--reason", reason, *GITOPS)
        == 0
    )
    assert f"Unquarantine-Reason: {reason}" in _git(repo, "log", "-1", "--format=%B")
    assert not (repo / "k8s" / "quarantine" / "dev.yaml").exists()
    out = capsys.readouterr().out
    assert f"tag {MODEL}/dev/v1.0.1 exists already" in out
    assert run(repo, "history") == 0
    history = capsys.readouterr().out
    assert "REJECTED in dev" in history and "lifted in dev" in history and reason in history
