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
from pipeline.console import Reporter
from pipeline.deploy import argo
from pipeline.deploy.argo import Target, assess, interpret, sync_request
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


def test_synced_counts_only_once_the_sync_operation_ended() -> None:
    """A PostSync hook (the first release's AnalysisRun) runs after the resources are Synced and can still
    fail the operation (gitops-engine sync_context.go getOperationPhase; docs/kubernetes.md)."""
    running = {
        "phase": "Running",
        "message": "waiting for completion of hook",
        "syncResult": {"revision": PUSHED},
    }
    state = assess(application("Synced", PUSHED, running), rollout(HEALTHY), TARGET, never)
    assert (state.phase, state.done) == ("Syncing", False) and "Running" in state.message
    failed = {**running, "phase": "Failed", "message": "PostSync hook failed"}
    state = assess(application("Synced", PUSHED, failed), rollout(HEALTHY), TARGET, never)
    assert (state.phase, state.done, state.ok) == ("SyncFailed", True, False)
    # The same for an accepted later revision: its operation's failure is ours.
    later = "e" * 40
    failed_later = {**failed, "syncResult": {"revision": later}}
    state = assess(
        application("Synced", later, failed_later), rollout(HEALTHY), TARGET, lambda sha: sha == later
    )
    assert state.phase == "SyncFailed"
    succeeded = {**running, "phase": "Succeeded"}
    assert assess(application("Synced", PUSHED, succeeded), rollout(HEALTHY), TARGET, never).ok


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


# --- the follower against a fake Kubernetes API: manual sync, a commit merged meanwhile ---------------


def manual(document: dict[str, Any]) -> dict[str, Any]:
    """The Application as k8s/argocd/prod.yaml renders it: no `syncPolicy.automated` (a person syncs)."""
    document["spec"] = {"syncPolicy": {"syncOptions": ["ServerSideApply=true"]}}
    return document


def automated(document: dict[str, Any]) -> dict[str, Any]:
    document["spec"] = {"syncPolicy": {"automated": {"prune": True, "selfHeal": True}}}
    return document


def test_a_manual_application_gets_a_sync_request_once_argo_compares_against_the_push() -> None:
    """argo-cd server/application/application.go `Sync` -> util/argo `SetAppOperation`: `argocd app sync`
    sets `operation` = {sync: {revision}, initiatedBy: {username}} and refuses while one is set;
    https://argo-cd.readthedocs.io/en/stable/user-guide/sync-kubectl/ documents the merge patch."""
    request = sync_request(manual(application("OutOfSync", PUSHED)), TARGET, never, "me")
    # The Application's sync options go into the operation, as the API server's Sync copies them: the
    # controller applies only the operation's (ApplyOutOfSyncOnly would otherwise be lost).
    assert request == {
        "operation": {
            "initiatedBy": {"username": "me"},
            "sync": {"revision": PUSHED, "syncOptions": ["ServerSideApply=true"]},
        }
    }
    # Not before Argo CD compares against the pushed commit, nor when nothing is left to do.
    assert sync_request(manual(application("OutOfSync", OLDER)), TARGET, never, "me") is None
    assert sync_request(manual(application("Synced", PUSHED)), TARGET, never, "me") is None
    # An automated Application syncs by itself.
    assert sync_request(automated(application("OutOfSync", PUSHED)), TARGET, never, "me") is None
    # An operation already requested, or one still running: Argo CD would refuse a second one.
    busy = manual(application("OutOfSync", PUSHED))
    busy["operation"] = {"sync": {"revision": PUSHED}}
    assert sync_request(busy, TARGET, never, "me") is None
    running = manual(application("OutOfSync", PUSHED, {"phase": "Running"}))
    assert sync_request(running, TARGET, never, "me") is None
    # A later revision that deploys the same release: that is what the Application would sync.
    later = "e" * 40
    request = sync_request(manual(application("OutOfSync", later)), TARGET, lambda sha: sha == later, "me")
    assert request is not None and request["operation"]["sync"]["revision"] == later


class FakeApi:
    """CustomObjectsApi as the follower uses it: one Application document per poll, the Rollout, patches."""

    def __init__(self, applications: list[dict[str, Any]], rollout: dict[str, Any]) -> None:
        self.applications = applications
        self.rollout = rollout
        self.patches: list[tuple[str, str, dict[str, Any], str]] = []
        self.gets: list[tuple[str, str]] = []

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        assert (group, version) == ("argoproj.io", "v1alpha1")
        self.gets.append((namespace, plural))
        if plural == "rollouts":
            return self.rollout
        return self.applications.pop(0) if len(self.applications) > 1 else self.applications[0]

    def patch_namespaced_custom_object(  # noqa: PLR0917  (the kubernetes client's own signature)
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        name: str,
        body: dict[str, Any],
        *,
        _content_type: str,
    ) -> dict[str, Any]:
        assert (group, version, plural) == ("argoproj.io", "v1alpha1", "applications")
        self.patches.append((namespace, name, body, _content_type))
        return body


def _follow(
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeApi,
    target: Target,
    repo: Path,
    *,
    timeout_s: float = 60.0,
    overrides: tuple[str, ...] = (),
) -> tuple[argo.RolloutState, list[str]]:
    config = load_config("dev", ROOT / "environments", overrides)
    notes: list[str] = []
    monkeypatch.setattr(argo, "_api", lambda _: fake)
    monkeypatch.setattr(argo, "POLL_S", 0.0)
    monkeypatch.delenv("GITHUB_ACTOR", raising=False)
    reporter = Reporter()
    monkeypatch.setattr(reporter, "note", notes.append)
    state = argo.follow_rollout(
        config,
        reporter,
        application=("argocd", "model-service-dev"),
        target=target,
        same_release=never,
        timeout_s=timeout_s,
        repo=repo,
    )
    return state, notes


def test_the_follower_starts_the_sync_of_a_manual_application_and_follows_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    feed = [
        manual(application("OutOfSync", OLDER)),  # Argo CD has not seen the push yet: no request
        manual(application("OutOfSync", PUSHED)),  # now it would sync the push: one request
        manual(application("OutOfSync", PUSHED, {"phase": "Running", "syncResult": {"revision": PUSHED}})),
        manual(application("Synced", PUSHED)),
    ]
    fake = FakeApi(feed, rollout(HEALTHY))
    state, notes = _follow(monkeypatch, fake, TARGET, tmp_path)
    assert (state.phase, state.ok) == ("Healthy", True)
    assert fake.patches == [
        (
            "argocd",
            "model-service-dev",
            {
                "operation": {
                    "initiatedBy": {"username": argo.INITIATOR},
                    "sync": {"revision": PUSHED, "syncOptions": ["ServerSideApply=true"]},
                }
            },
            "application/merge-patch+json",
        )
    ]
    assert any("has no automated sync policy: started its sync of " + PUSHED[:12] in n for n in notes)
    # The API calls the docs' minimal Role grants: get applications (Argo CD namespace), get rollouts.
    assert {plural for _, plural in fake.gets} == {"applications", "rollouts"}


def test_an_automated_application_is_never_patched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeApi(
        [automated(application("OutOfSync", PUSHED)), automated(application("Synced", PUSHED))],
        rollout(HEALTHY),
    )
    state, _ = _follow(monkeypatch, fake, TARGET, tmp_path)
    assert state.ok and fake.patches == []


@pytest.fixture
def gitops_remote(tmp_path: Path) -> tuple[Path, Path, str]:
    """A bare GitOps remote, the workspace's clone at the pushed promotion commit, and that commit; a
    second clone (someone merging to main) pushes after it."""
    remote, workspace, other = tmp_path / "remote.git", tmp_path / "workspace", tmp_path / "other"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    _git(tmp_path, "clone", "-q", str(remote), str(other))
    _commit_release(other, "dev", "image: model-service\ntag: unreleased\n", "render")
    pushed = _commit_release(
        other, "dev", RELEASE, f"deploy(dev): v7\n\n{ENV_TRAILER}: dev\n{ACTION_TRAILER}: promote\n"
    )
    _git(other, "push", "-q", "origin", "HEAD:main")
    _git(tmp_path, "clone", "-q", str(remote), str(workspace))
    return workspace, other, pushed


def _merge_meanwhile(other: Path, path: str, text: str) -> str:
    (other / path).parent.mkdir(parents=True, exist_ok=True)
    (other / path).write_text(text)
    _git(other, "add", "-A")
    _git(other, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", f"change {path}")
    _git(other, "push", "-q", "origin", "HEAD:main")
    return _git(other, "rev-parse", "HEAD")


def test_a_commit_merged_during_the_rollout_is_fetched_and_accepted(
    monkeypatch: pytest.MonkeyPatch, gitops_remote: tuple[Path, Path, str]
) -> None:
    """Argo CD reports a revision pushed after ours, which the workspace has not fetched: it descends from
    the push and leaves dev's release.yaml alone, so it deploys our release (before: waited out the
    timeout and reverted a healthy release)."""
    workspace, other, pushed = gitops_remote
    later = _merge_meanwhile(other, "pipeline/cli.py", "# a merged change\n")
    assert subprocess.run(["git", "cat-file", "-e", later], cwd=workspace, check=False).returncode != 0
    target = Target(revision=pushed, image=DIGEST, model_version="7")
    fake = FakeApi([automated(application("Synced", later))], rollout(HEALTHY))
    state, notes = _follow(
        monkeypatch,
        fake,
        target,
        workspace,
        overrides=("deploy.gitops.remote=origin", "deploy.gitops.branch=main"),
    )
    assert (state.phase, state.ok) == ("Healthy", True)
    assert f"fetched origin main: Argo CD reports {later[:12]}" in notes


@pytest.mark.parametrize("changes", ["release", "diverged"])
def test_a_later_revision_that_changes_the_release_or_does_not_descend_is_not_ours(
    monkeypatch: pytest.MonkeyPatch, gitops_remote: tuple[Path, Path, str], changes: str
) -> None:
    workspace, other, pushed = gitops_remote
    if changes == "release":
        later = _merge_meanwhile(other, "k8s/overlays/dev/release.yaml", RELEASE.replace("'7'", "'8'"))
    else:
        _git(other, "reset", "-q", "--hard", "HEAD~1")  # history rewritten: a sibling of the push
        later = _commit_release(other, "dev", RELEASE, "the same release, not after ours")
        _git(other, "push", "-q", "--force", "origin", "HEAD:main")
    target = Target(revision=pushed, image=DIGEST, model_version="7")
    fake = FakeApi([automated(application("Synced", later))], rollout(HEALTHY))
    with pytest.raises(StageError, match=f"still Syncing after 0s: Argo CD Synced at {later[:12]}"):
        _follow(
            monkeypatch, fake, target, workspace, timeout_s=0.0, overrides=("deploy.gitops.remote=origin",)
        )
