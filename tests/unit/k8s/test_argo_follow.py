"""`rollout --target kubernetes` follows the pushed commit: Argo CD Application and Rollout status documents
(shaped as the Application and Rollout CRDs document them) read in order, and the commit to follow taken
from the workspace's git."""

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.deploy.argo import Target, assess, interpret
from pipeline.deploy.gitops import ACTION_TRAILER, ENV_TRAILER, last_promotion, release_at, resolve_commit
from pipeline.errors import StageError

ROOT = Path(__file__).resolve().parents[3]
PUSHED = "c" * 40
OLDER = "a" * 40
DIGEST = "ghcr.io/acme/model@sha256:" + "d" * 64
TARGET = Target(revision=PUSHED, image=DIGEST, model_version="7")


def application(sync: str, revision: str, operation: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "sync": {"status": sync, "revision": revision},
        "health": {"status": "Healthy" if sync == "Synced" else "Progressing"},
    }
    if operation is not None:
        status["operationState"] = operation
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "status": status}


def rollout(
    status: dict[str, Any], image: str = DIGEST, version: str = "7", generation: int = 3
) -> dict[str, Any]:
    """The base Rollout as kustomize renders it for a release, with a status."""
    document: dict[str, Any] = copy.deepcopy(yaml.safe_load((ROOT / "k8s/base/rollout.yaml").read_text()))
    document["metadata"]["generation"] = generation
    document["spec"]["strategy"] = {
        "canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]}
    }
    document["spec"]["template"]["spec"]["containers"][0]["image"] = image
    document["spec"]["template"]["metadata"].setdefault("labels", {})["model-version"] = version
    document["status"] = {"observedGeneration": str(generation), **status}
    return document


def never(_: str) -> bool:
    return False


HEALTHY = {"phase": "Healthy", "currentPodHash": "6f8b", "stableRS": "6f8b", "currentStepIndex": 3}


def test_a_healthy_rollout_of_the_previous_commit_does_not_count() -> None:
    """The defect: Argo CD has not synced the push yet, the Rollout is the old release and Healthy."""
    state = assess(
        application("Synced", OLDER),
        rollout(HEALTHY, image="ghcr.io/acme/model@sha256:" + "0" * 64),
        TARGET,
        never,
    )
    assert (state.phase, state.done) == ("Syncing", False)
    assert OLDER[:12] in state.message and PUSHED[:12] in state.message


def test_synced_at_the_push_but_the_template_is_still_the_old_one() -> None:
    stale = rollout(HEALTHY, image="ghcr.io/acme/model@sha256:" + "0" * 64)
    state = assess(application("Synced", PUSHED), stale, TARGET, never)
    assert (state.phase, state.done) == ("Applying", False)
    assert "waiting for " + DIGEST in state.message
    old_model = assess(application("Synced", PUSHED), rollout(HEALTHY, version="6"), TARGET, never)
    assert (old_model.phase, old_model.done, "model-version 6" in old_model.message) == (
        "Applying",
        False,
        True,
    )
    assert assess(application("Synced", PUSHED), None, TARGET, never).phase == "Applying"


def test_out_of_sync_at_the_push_waits() -> None:
    state = assess(application("OutOfSync", PUSHED), rollout(HEALTHY), TARGET, never)
    assert (state.phase, state.done) == ("Syncing", False)


@pytest.mark.parametrize("phase", ["Failed", "Error"])
def test_a_failed_sync_of_the_push_fails(phase: str) -> None:
    operation = {
        "phase": phase,
        "message": "one or more objects failed to apply",
        "syncResult": {"revision": PUSHED},
    }
    state = assess(application("OutOfSync", OLDER, operation), rollout(HEALTHY), TARGET, never)
    assert (state.phase, state.done, state.ok) == ("SyncFailed", True, False)
    assert "failed to apply" in state.message


def test_a_failed_sync_of_another_commit_is_not_ours() -> None:
    operation = {"phase": "Failed", "message": "x", "operation": {"sync": {"revision": OLDER}}}
    assert assess(application("OutOfSync", OLDER, operation), None, TARGET, never).phase == "Syncing"


def test_a_later_commit_that_deploys_the_same_release_counts_as_synced() -> None:
    later = "e" * 40
    state = assess(application("Synced", later), rollout(HEALTHY), TARGET, lambda sha: sha == later)
    assert (state.phase, state.done, state.ok) == ("Healthy", True, True)
    assert assess(application("Synced", later), rollout(HEALTHY), TARGET, never).phase == "Syncing"


@pytest.mark.parametrize(
    ("status", "phase", "done", "ok"),
    [
        (HEALTHY, "Healthy", True, True),
        ({"phase": "Progressing", "currentStepIndex": 1}, "Progressing", False, False),
        (
            {"phase": "Paused", "currentStepIndex": 2, "pauseConditions": [{"reason": "CanaryPauseStep"}]},
            "Paused",
            False,
            False,
        ),
        # Healthy while the stable ReplicaSet is still the old one: not promoted yet (Argo CD's health.lua).
        ({"phase": "Healthy", "currentPodHash": "6f8b", "stableRS": "55aa"}, "Progressing", False, False),
        ({"phase": "Degraded", "message": "ProgressDeadlineExceeded"}, "Degraded", True, False),
        (
            {
                "phase": "Degraded",
                "abort": True,
                "message": "RolloutAborted: Rollout aborted update to revision 4",
                "canary": {
                    "currentStepAnalysisRunStatus": {
                        "name": "model-service-6f8b-4-1",
                        "status": "Failed",
                        "message": 'Metric "error-ratio" assessed Failed',
                    }
                },
            },
            "Aborted",
            True,
            False,
        ),
    ],
)
def test_the_pushed_rollout_is_followed_to_its_end(
    status: dict[str, Any], phase: str, done: bool, ok: bool
) -> None:
    state = assess(application("Synced", PUSHED), rollout(status), TARGET, never)
    assert (state.phase, state.done, state.ok) == (phase, done, ok)
    if status.get("abort"):
        assert "error-ratio" in state.message and "RolloutAborted" in state.message
    if status.get("pauseConditions"):
        assert state.message == "CanaryPauseStep"


def test_a_status_of_an_older_generation_is_not_read() -> None:
    """Argo: rely on status.phase only when status.observedGeneration equals metadata.generation."""
    document = rollout(HEALTHY)
    document["status"]["observedGeneration"] = "2"
    assert interpret(document).done is False
    del document["status"]["observedGeneration"]
    assert interpret(document).done is False


# --- the commit to follow, from a real git repository --------------------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _commit_release(repo: Path, env: str, body: str, message: str) -> str:
    path = repo / "k8s/overlays" / env / "release.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q", "-b", "main")
    _commit_release(tmp_path, "dev", "image: model-service\ntag: unreleased\n", "render")
    return tmp_path


RELEASE = (
    f"image: ghcr.io/acme/model\ntag: abc-v7\ndigest: sha256:{'d' * 64}\nmodel_version: '7'\ngit_sha: abc\n"
)


def test_the_release_at_the_promotion_commit_is_the_target(workspace: Path) -> None:
    dev = load_config("dev", ROOT / "environments")
    promoted = _commit_release(
        workspace, "dev", RELEASE, f"deploy(dev): v7\n\n{ENV_TRAILER}: dev\n{ACTION_TRAILER}: promote\n"
    )
    assert last_promotion(workspace, dev) == promoted
    assert resolve_commit(workspace, promoted[:10]) == promoted
    release = release_at(workspace, dev, promoted)
    assert release is not None
    assert (release.reference, release.model_version) == (DIGEST, "7")
    assert release_at(workspace, dev, "f" * 40) is None
    with pytest.raises(StageError, match="not in the git history"):
        resolve_commit(workspace, "f" * 40)


def _rollout_cli(workspace: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(
        [
            "rollout",
            "--env",
            "dev",
            "--workdir",
            str(workspace),
            "--config-dir",
            str(ROOT / "environments"),
            *extra,
        ]
    )
    return code, capsys.readouterr().err


def test_rollout_refuses_a_commit_that_is_not_a_promotion(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(workspace / "no-such-kubeconfig"))
    code, err = _rollout_cli(workspace, "--target", "kubernetes", capsys=capsys)
    assert code == 1 and "no promotion commit of dev" in err and "--revision SHA" in err
    code, err = _rollout_cli(workspace, "--target", "kubernetes", "--revision", "HEAD", capsys=capsys)
    assert code == 1 and "has no k8s/overlays/dev/release.yaml with a model_version" in err
    code, err = _rollout_cli(workspace, "--target", "kubernetes", "--revision", "f" * 40, capsys=capsys)
    assert code == 1 and "not in the git history" in err
    code, err = _rollout_cli(workspace, "--revision", "HEAD", capsys=capsys)
    assert code == 2 and "--revision" in err and "--target kubernetes" in err


def test_rollout_follows_the_promotion_and_needs_a_cluster(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a promotion commit found, the next thing is the cluster: none here, exit 2 naming KUBECONFIG."""
    _commit_release(
        workspace, "dev", RELEASE, f"deploy(dev): v7\n\n{ENV_TRAILER}: dev\n{ACTION_TRAILER}: promote\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(workspace / "no-such-kubeconfig"))
    code, err = _rollout_cli(workspace, "--target", "kubernetes", capsys=capsys)
    assert code == 2 and "no cluster" in err and "KUBECONFIG" in err
