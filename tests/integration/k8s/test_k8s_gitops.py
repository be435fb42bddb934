"""GitOps promotion against a local bare repository as the remote: commit, push, refusals, revert."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.config import Config, load_config
from pipeline.console import Reporter
from pipeline.deploy import gitops, release_file
from pipeline.deploy import render as k8s
from pipeline.errors import StageError

ROOT = Path(__file__).resolve().parents[3]
DIGEST = "sha256:" + "c" * 64


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    remote, work = tmp_path / "gitops.git", tmp_path / "work"
    _git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(remote))
    _git(tmp_path, "init", "--quiet", "-b", "main", str(work))
    for key, value in {"user.name": "t", "user.email": "t@example.com", "commit.gpgsign": "false"}.items():
        _git(work, "config", key, value)
    _git(work, "remote", "add", "origin", str(remote))
    (work / "README").write_text("gitops\n")
    _git(work, "add", ".")
    _git(work, "commit", "--quiet", "-m", "init")
    _git(work, "push", "--quiet", "origin", "main")
    return work


def _config(remote: str | None = "origin") -> Config:
    overrides = [f"deploy.gitops.remote={remote}"] if remote else []
    return load_config("dev", ROOT / "environments", overrides)


def _lineage(gate: str = "pass") -> gitops.Lineage:
    return gitops.Lineage(
        "breast-cancer-classifier", "4", "f00dbabe", "ghcr.io/acme/model", None, DIGEST, gate, "pass"
    )


def test_promotion_commits_the_digest_and_version_and_the_push_lands(repo: Path) -> None:
    sha = gitops.commit_release(repo, _config(), _lineage(), Reporter())
    remote_head = _git(repo, "ls-remote", "origin", "refs/heads/main").split()[0]
    assert remote_head == sha
    message = _git(repo, "log", "-1", "--format=%B")
    for line in ("Model-Version: 4", "Git-Sha: f00dbabe", "Gate: pass", "Load-Test: pass", f"@{DIGEST}"):
        assert line in message
    kustomization = yaml.safe_load(_git(repo, "show", "HEAD:k8s/overlays/dev/kustomization.yaml"))
    assert kustomization["images"][0]["digest"] == DIGEST
    release = yaml.safe_load(_git(repo, "show", "HEAD:k8s/overlays/dev/release.yaml"))
    assert release["model_version"] == "4"
    assert _git(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize("case", ["dirty", "failed-gate", "no-remote"])
def test_refusals_write_nothing(repo: Path, case: str) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    if case == "dirty":
        (repo / "README").write_text("edited\n")
    config, lineage = (
        _config(None if case == "no-remote" else "origin"),
        _lineage("fail" if case == "failed-gate" else "pass"),
    )
    match = {
        "dirty": "uncommitted changes",
        "failed-gate": "gate.dev=fail",
        "no-remote": "deploy.gitops.remote",
    }[case]
    with pytest.raises(StageError, match=match):
        gitops.commit_release(repo, config, lineage, Reporter())
    assert _git(repo, "rev-parse", "HEAD") == head
    assert not (repo / "k8s").exists()
    assert _git(repo, "ls-remote", "origin", "refs/heads/main").split()[0] == head


def test_a_failed_push_undoes_the_commit(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    _git(repo, "remote", "set-url", "origin", str(repo.parent / "missing.git"))
    with pytest.raises(StageError, match="git push"):
        gitops.commit_release(repo, _config(), _lineage(), Reporter())
    assert _git(repo, "rev-parse", "HEAD") == head
    assert _git(repo, "status", "--porcelain") == ""


def test_rollback_is_a_revert_of_the_last_promotion(repo: Path) -> None:
    config = _config()
    first = gitops.commit_release(repo, config, _lineage(), Reporter())
    second = gitops.commit_release(repo, config, _second_lineage(), Reporter())
    revert = gitops.revert_last(repo, config, Reporter())
    assert f"This reverts commit {second}." in _git(repo, "log", "-1", "--format=%B")
    assert _git(repo, "ls-remote", "origin", "refs/heads/main").split()[0] == revert
    assert _git(repo, "diff", first, revert, "--", "k8s") == ""
    assert gitops.last_promotion(repo, config) == first


@pytest.mark.slow  # trains, exports and registers a model
def test_rollback_of_a_first_deploy_refuses_before_touching_git(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Git and the registry never disagree: with nothing to roll back to, no revert is pushed."""
    from pipeline.cli import main  # noqa: PLC0415  (the whole CLI: the runner composes Git and registry)

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copytree(ROOT / "environments", repo / "environments")
    (repo / ".gitignore").write_text("artifacts/\nreports/\n.mlflow/\nbuild/\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "--quiet", "-m", "environments")
    _git(repo, "push", "--quiet", "origin", "main")
    for stage in ("train", "export", "gate", "register", "promote"):
        assert main([stage, "--env", "dev", "--workdir", str(repo)]) == 0
    gitops.commit_release(repo, _config(), _lineage(), Reporter())  # a promotion commit to revert
    head = _git(repo, "ls-remote", "origin", "refs/heads/main").split()[0]
    args = ["rollback", "--env", "dev", "--gitops", "--set", "deploy.gitops.remote=origin"]
    assert main([*args, "--workdir", str(repo)]) == 1
    assert "nothing earlier to roll back to" in capsys.readouterr().err
    assert _git(repo, "ls-remote", "origin", "refs/heads/main").split()[0] == head


def _second_lineage() -> gitops.Lineage:
    return gitops.Lineage(
        "breast-cancer-classifier",
        "5",
        "beef",
        "ghcr.io/acme/model",
        None,
        "sha256:" + "d" * 64,
        "pass",
        "pass",
    )


def test_gitops_commits_skip_ci(repo: Path) -> None:
    """GitHub starts no push/pull_request workflow for a head commit whose message holds `[skip ci]`
    (docs.github.com, "Skipping workflow runs"): a deploy commit can neither loop CD nor cancel CI."""
    config = _config()
    gitops.commit_release(repo, config, _lineage(), Reporter())
    assert _git(repo, "log", "-1", "--format=%s").endswith(" [skip ci]")
    gitops.revert_last(repo, config, Reporter())
    subject = _git(repo, "log", "-1", "--format=%s")
    assert subject.startswith("rollback(dev): revert deploy(dev):")
    assert subject.count("[skip ci]") == 1
    assert subject.endswith(" [skip ci]")


def _merge_since(repo: Path, override: str) -> Config:
    """A change merged after the run started: the environment rendered with `override`, committed."""
    changed = load_config("dev", ROOT / "environments", ["deploy.gitops.remote=origin", override])
    release = release_file.read_release(repo, changed)
    k8s.write_files(repo, k8s.render_environment(changed, release, repo))
    _git(repo, "commit", "--quiet", "-am", f"merged since: {override}")
    return changed


def test_a_promotion_writes_only_what_the_release_changes(repo: Path) -> None:
    config = _config()
    first = gitops.commit_release(repo, config, _lineage(), Reporter())
    release = release_file.read_release(repo, config)
    assert release.replaces is None  # the environment's first release: judged by its own PostSync run
    hook = repo / "k8s/overlays/dev/first-release-analysis.yaml"
    assert hook.is_file()
    second = gitops.commit_release(repo, config, _second_lineage(), Reporter())
    assert not hook.exists()  # from the second release on, the canary compares with stable
    touched = _git(repo, "diff", "--name-only", first, second).splitlines()
    assert set(touched) <= {
        "k8s/overlays/dev/release.yaml",
        "k8s/overlays/dev/kustomization.yaml",
        "k8s/overlays/dev/patch-rollout.yaml",
        "k8s/overlays/dev/first-release-analysis.yaml",
    }
    assert release_file.read_release(repo, config).replaces == f"ghcr.io/acme/model@{DIGEST}"


def test_a_late_promotion_keeps_changes_merged_since(repo: Path) -> None:
    """An old run approved late (its config from before a merge) writes only the release's files."""
    old_config = _config()
    gitops.commit_release(repo, old_config, _lineage(), Reporter())
    _merge_since(repo, "deploy.max_replicas=3")  # touches patch-hpa.yaml only
    merged_hpa = (repo / "k8s/overlays/dev/patch-hpa.yaml").read_text()
    gitops.commit_release(repo, old_config, _second_lineage(), Reporter())
    assert _git(repo, "show", "HEAD:k8s/overlays/dev/patch-hpa.yaml") + "\n" == merged_hpa
    assert release_file.read_release(repo, old_config).model_version == "5"


def test_a_late_promotion_over_a_changed_release_file_refuses(repo: Path) -> None:
    """A merged change in a file the release also writes: the run's config cannot render it; refuse."""
    old_config = _config()
    gitops.commit_release(repo, old_config, _lineage(), Reporter())
    _merge_since(repo, "deploy.resources.requests_cpu=300m")  # patch-rollout.yaml
    head = _git(repo, "rev-parse", "HEAD")
    with pytest.raises(
        StageError, match=r"patch-rollout\.yaml .*differ from what environments/dev\.yaml renders"
    ):
        gitops.commit_release(repo, old_config, _second_lineage(), Reporter())
    assert _git(repo, "rev-parse", "HEAD") == head
    assert _git(repo, "status", "--porcelain") == ""
