"""Follow the pushed GitOps commit into a real cluster: Argo CD syncs it, then Argo Rollouts rolls it out.

A Rollout read as Healthy before Argo CD has synced the pushed commit is the previous release's health,
so `follow_rollout` first waits until the environment's Argo CD Application reports `Synced` at the
pushed commit and the Rollout's pod template carries the pushed image and model version; only then
does the Rollout's health count. The reading of the status documents (`assess`) is pure and
unit-tested on documents shaped as Argo documents them; the API calls need a cluster and the
`kubernetes` package (dependency group `k8s`) and stay thin.

Status fields read, as documented upstream:
- Argo CD Application `status.sync.status` (Synced/OutOfSync/Unknown), `status.sync.revision` (the commit
  the comparison was made against), `status.health.status`, `status.operationState.phase`
  (Running/Succeeded/Failed/Error/Terminating) with `operationState.syncResult.revision`: the Application
  CRD (argoproj/argo-cd manifests/crds/application-crd.yaml, printer columns Sync Status / Revision) and
  https://argo-cd.readthedocs.io/en/stable/user-guide/commands/argocd_app_wait/ (synced and healthy).
- Argo Rollouts `status.phase` ("clients should only rely on the value if status.observedGeneration equals
  metadata.generation"), `status.abort`, `status.currentPodHash`, `status.stableRS`, `status.message`,
  `status.pauseConditions`, `status.canary.currentStepAnalysisRunStatus`: the Rollout CRD
  (argoproj/argo-rollouts manifests/crds/rollout-crd.yaml) and Argo CD's own reading of a Rollout,
  https://github.com/argoproj/argo-cd/blob/master/resource_customizations/argoproj.io/Rollout/health.lua
  (Healthy only when the stable ReplicaSet is the current pod hash).

Two things the follower does besides reading:
- A commit merged to the GitOps branch after the push: Argo CD then reports that later revision, which
  this checkout may not have. The follower fetches `deploy.gitops.remote`/`branch` and accepts the
  revision when it descends from the pushed commit (`git merge-base --is-ancestor`) and the
  environment's release.yaml is unchanged between them: that sync deploys the pushed release.
- An Application without `spec.syncPolicy.automated` (prod) syncs only when asked. Once Argo CD compares
  against the pushed revision (or an accepted later one), the follower asks for that sync as
  `argocd app sync` and the UI do: it sets the Application's `operation` field,
  `{"operation": {"initiatedBy": {"username": ...}, "sync": {"revision": SHA, "syncOptions": [...]}}}`
  with the Application's own `syncPolicy.syncOptions` (and `retry`) copied in, as the API server does
  (argo-cd server/application/application.go `Sync` -> util/argo `SetAppOperation`, which refuses while
  another operation is set; the controller applies only the operation's sync options, controller/sync.go;
  https://argo-cd.readthedocs.io/en/stable/user-guide/sync-kubectl/ documents the same merge patch).
  Once only: a failed sync fails the step.

Kubernetes API calls (the deploy identity's minimal RBAC): `get` and `patch` on
`applications.argoproj.io` in the Argo CD namespace (patch only for an Application without automated
sync), `get` on `rollouts.argoproj.io` in deploy.namespace, and `GET /version` (a reachability check,
allowed to every authenticated user by the default `system:public-info-viewer` role).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.deploy.gitops import release_path
from pipeline.deploy.names import APP
from pipeline.errors import NoCluster, StageError

POLL_S = 5.0
SYNC_FAILED = {"Failed", "Error"}
"""Argo CD operation phases that end a sync without applying it (auto-sync does not retry the same
revision unless `syncPolicy.retry` says so)."""
ANALYSIS_FAILED = {"Failed", "Error", "Inconclusive"}
OPERATION_RUNNING = {"Running", "Terminating"}
"""Operation phases before the end of a sync: its hooks (PostSync) may still fail it."""
INITIATOR = "model-cicd rollout"
"""`operation.initiatedBy.username` of a sync the follower starts (shown in Argo CD's history)."""
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Target:
    """What the pushed commit deploys: the cluster must show exactly this before its health counts."""

    revision: str
    """The full SHA `promote --gitops` pushed."""
    image: str
    """`repository@sha256:…` (or `repository:tag`), as kustomize writes it into the pod template."""
    model_version: str


@dataclass(frozen=True)
class RolloutState:
    phase: str
    """Syncing (Argo CD is not at the pushed commit yet), Applying (the Rollout does not carry the pushed
    template yet), SyncFailed, or Argo's status.phase: Progressing, Paused, Healthy, Degraded, Aborted."""
    step: str
    """`3/5` (current step index of the canary steps), or `-` for blue-green and before the Rollout counts."""
    message: str
    done: bool
    ok: bool


class RolloutFailed(StageError):
    """The followed rollout ended and did not become Healthy: `state` says how (SyncFailed, Degraded,
    Aborted); the release is rejected on Degraded and Aborted (release/quarantine.py)."""

    def __init__(self, message: str, state: RolloutState) -> None:
        super().__init__(message)
        self.state = state


def interpret(rollout: dict[str, Any]) -> RolloutState:
    """What a Rollout's status means, once its template is the pushed one (pure)."""
    spec, status = rollout.get("spec") or {}, rollout.get("status") or {}
    generation = (rollout.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    phase = str(status.get("phase") or "Progressing")
    message = str(status.get("message") or "")
    steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps")
    step = f"{status.get('currentStepIndex', 0)}/{len(steps)}" if steps is not None else "-"
    analysis = (status.get("canary") or {}).get("currentStepAnalysisRunStatus") or {}
    if analysis.get("status") in ANALYSIS_FAILED:
        detail = f"analysis {analysis.get('name', '?')} {analysis['status']}: {analysis.get('message', '')}"
        message = f"{message}; {detail.rstrip(': ')}" if message else detail.rstrip(": ")
    if status.get("abort"):
        return RolloutState("Aborted", step, message or "aborted", done=True, ok=False)
    if generation is not None and str(observed) != str(generation):
        return RolloutState("Progressing", step, "controller has not observed the new spec yet", False, False)
    if phase == "Degraded":
        return RolloutState(phase, step, message or "degraded", done=True, ok=False)
    if phase == "Healthy":
        current, stable = status.get("currentPodHash"), status.get("stableRS")
        if current and stable and current != stable:
            return RolloutState("Progressing", step, f"stable is still {stable}, not {current}", False, False)
        return RolloutState(phase, step, message or "healthy", done=True, ok=True)
    if phase == "Paused":
        reasons = [str(c.get("reason")) for c in status.get("pauseConditions") or [] if c.get("reason")]
        message = message or ", ".join(reasons)
    return RolloutState(phase, step, message, done=False, ok=False)


def template_mismatch(rollout: dict[str, Any], target: Target) -> str | None:
    """Why the Rollout's pod template is not the pushed release (None when it is), pure."""
    template = (rollout.get("spec") or {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    image = next((str(c.get("image")) for c in containers if c.get("name") == APP), None)
    version = ((template.get("metadata") or {}).get("labels") or {}).get("model-version")
    if image != target.image:
        return f"pod template has image {image}, waiting for {target.image}"
    if str(version) != target.model_version:
        return f"pod template has model-version {version}, waiting for {target.model_version}"
    return None


def sync_state(
    application: dict[str, Any], target: Target, same_release: Callable[[str], bool]
) -> RolloutState | None:
    """None when Argo CD has applied the pushed commit (or a later one that deploys the same release) and
    its sync operation has ended; otherwise the state to report (pure apart from `same_release`, which
    reads git). A sync operation runs its hooks after the resources are Synced (the first release's
    analysis is a PostSync hook, docs/kubernetes.md): until it ends, the sync can still fail."""
    status = application.get("status") or {}
    sync = status.get("sync") or {}
    revision, synced = str(sync.get("revision") or ""), sync.get("status") == "Synced"
    ours = revision == target.revision or bool(revision and same_release(revision))
    operation = status.get("operationState") or {}
    operated = (operation.get("syncResult") or {}).get("revision") or (
        (operation.get("operation") or {}).get("sync") or {}
    ).get("revision")
    phase = operation.get("phase")
    if phase in SYNC_FAILED and (operated == target.revision or (operated == revision and ours)):
        return RolloutState(
            "SyncFailed", "-", f"Argo CD {phase}: {operation.get('message', '')}".rstrip(": "), True, False
        )
    if synced and ours:
        if phase in OPERATION_RUNNING:
            detail = f"{operation.get('message', '')}".strip()
            message = f"Argo CD synced {revision[:12]}; its sync operation is {phase}: {detail}".rstrip(": ")
            return RolloutState("Syncing", "-", message, False, False)
        return None
    at = f"{sync.get('status') or 'Unknown'} at {revision[:12] or 'no revision'}"
    return RolloutState("Syncing", "-", f"Argo CD {at}, waiting for {target.revision[:12]}", False, False)


def sync_request(
    application: dict[str, Any], target: Target, accepts: Callable[[str], bool], initiator: str
) -> dict[str, Any] | None:
    """The merge patch that starts the Application's sync of the pushed revision, or None: the Application
    syncs by itself (`spec.syncPolicy.automated`), an operation is already set or running, it is already
    Synced there, or Argo CD does not compare against the pushed revision (or an accepted later one) yet
    (pure apart from `accepts`, which reads git)."""
    policy = (application.get("spec") or {}).get("syncPolicy") or {}
    status = application.get("status") or {}
    sync = status.get("sync") or {}
    revision = str(sync.get("revision") or "")
    if policy.get("automated") is not None or application.get("operation"):
        return None
    if (status.get("operationState") or {}).get("phase") in OPERATION_RUNNING:
        return None
    if sync.get("status") == "Synced" or not revision:
        return None
    if revision != target.revision and not accepts(revision):
        return None
    # As the API server's Sync does: the Application's sync options (ApplyOutOfSyncOnly keeps a canary's
    # weights, CreateNamespace, ...) and retry go into the operation; the controller reads only those.
    requested: dict[str, Any] = {"revision": revision}
    if policy.get("syncOptions"):
        requested["syncOptions"] = list(policy["syncOptions"])
    operation: dict[str, Any] = {"initiatedBy": {"username": initiator}, "sync": requested}
    if policy.get("retry"):
        operation["retry"] = policy["retry"]
    return {"operation": operation}


@dataclass
class GitopsHistory:
    """The workspace's git as the follower reads it: a revision Argo CD reports that this checkout does not
    have is fetched from the GitOps remote once; results are kept per revision."""

    repo: Path
    remote: str
    branch: str
    release_file: str
    """`k8s/overlays/ENV/release.yaml`: what a later commit must leave unchanged."""
    reporter: Reporter
    seen: dict[str, bool] = field(default_factory=dict)

    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=self.repo, capture_output=True, text=True, check=False)

    def _has(self, revision: str) -> bool:
        return self._git("cat-file", "-e", f"{revision}^{{commit}}").returncode == 0

    def descends_unchanged(self, pushed: str, revision: str) -> bool:
        """`revision` descends from `pushed` and deploys the same release file (fetching it when unknown)."""
        if revision in self.seen:
            return self.seen[revision]
        if not self._has(revision):
            fetched = self._git("fetch", "--quiet", self.remote, f"refs/heads/{self.branch}")
            if fetched.returncode != 0:
                self.reporter.note(
                    f"Argo CD reports {revision[:12]}, unknown here, and fetching {self.remote} {self.branch} "
                    f"failed: {fetched.stderr.strip()[-300:]}"
                )
                return False
            self.reporter.note(f"fetched {self.remote} {self.branch}: Argo CD reports {revision[:12]}")
        ok = (
            self._has(revision)
            and self._git("merge-base", "--is-ancestor", pushed, revision).returncode == 0
            and self._git("diff", "--quiet", pushed, revision, "--", self.release_file).returncode == 0
        )
        self.seen[revision] = ok
        return ok


def assess(
    application: dict[str, Any],
    rollout: dict[str, Any] | None,
    target: Target,
    same_release: Callable[[str], bool],
) -> RolloutState:
    """Where the pushed release stands: Argo CD's sync first, then the Rollout's template, then its health."""
    waiting = sync_state(application, target, same_release)
    if waiting is not None:
        return waiting
    if rollout is None:
        return RolloutState("Applying", "-", f"Rollout {APP} does not exist yet", False, False)
    mismatch = template_mismatch(rollout, target)
    if mismatch is not None:
        return RolloutState("Applying", "-", mismatch, False, False)
    return interpret(rollout)


def _api(config: Config) -> Any:
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not Path(kubeconfig.split(os.pathsep)[0]).is_file():
        raise NoCluster(
            f"no cluster: KUBECONFIG is unset and {kubeconfig} does not exist; point KUBECONFIG at a cluster "
            f"with Argo Rollouts, or use `--target local` to rehearse the rollout of {config.name} here"
        )
    try:
        from kubernetes import client  # noqa: PLC0415
        from kubernetes import config as kube_config  # noqa: PLC0415
    except ImportError:
        raise NoCluster("the `kubernetes` package is missing: install the `k8s` dependency group") from None
    try:
        kube_config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        api = client.CustomObjectsApi()
        client.VersionApi().get_code(_request_timeout=5)
    except Exception as exc:  # noqa: BLE001  (any failure to reach the API means: no cluster here)
        raise NoCluster(f"no cluster answers at the KUBECONFIG context ({kubeconfig}): {exc}") from None
    return api


def _get(api: Any, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    try:
        found: dict[str, Any] = api.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, plural, name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def follow_rollout(
    config: Config,
    reporter: Reporter,
    *,
    application: tuple[str, str],
    target: Target,
    same_release: Callable[[str], bool],
    timeout_s: float = 1800.0,
    repo: Path,
) -> RolloutState:
    """Wait for Argo CD Application `application` (namespace, name) to sync `target.revision` (starting the
    sync when the Application has no automated policy), then follow Rollout `model-service` in
    deploy.namespace until Healthy. A later revision counts when `same_release` says so or it descends
    from the pushed one with the release unchanged in `repo` (the workspace's git). StageError on a
    failed sync, Degraded, aborted or timeout; NoCluster (exit 2) when no cluster is reachable."""
    api = _api(config)
    app_namespace, app_name = application
    namespace = config.deploy.namespace
    history = GitopsHistory(
        repo,
        config.deploy.gitops.remote or "origin",
        config.deploy.gitops.branch,
        release_path(config),
        reporter,
    )

    def accepts(revision: str) -> bool:
        return same_release(revision) or history.descends_unchanged(target.revision, revision)

    actor = os.environ.get("GITHUB_ACTOR")
    initiator = f"{INITIATOR} ({actor})" if actor else INITIATOR
    deadline = time.monotonic() + timeout_s
    last: RolloutState | None = None
    sync_started = False
    while True:
        app = _get(api, app_namespace, "applications", app_name)
        if app is None:
            raise StageError(
                f"Argo CD Application {app_namespace}/{app_name} does not exist: apply k8s/argocd/{config.name}.yaml"
            )
        request = None if sync_started else sync_request(app, target, accepts, initiator)
        if request is not None:
            api.patch_namespaced_custom_object(
                "argoproj.io",
                "v1alpha1",
                app_namespace,
                "applications",
                app_name,
                request,
                _content_type=MERGE_PATCH,
            )
            sync_started = True
            revision = request["operation"]["sync"]["revision"]
            reporter.note(
                f"{app_namespace}/{app_name} has no automated sync policy: started its sync of {revision[:12]} "
                f"(operation.sync, as `argocd app sync` does), initiated by {initiator}"
            )
            continue
        state = assess(app, _get(api, namespace, "rollouts", APP), target, accepts)
        if state != last:
            reporter.note(
                f"{config.name} {target.revision[:12]}: {state.phase} step {state.step} {state.message}".rstrip()
            )
            last = state
        if state.done:
            if not state.ok:
                raise RolloutFailed(
                    f"rollout {namespace}/{APP} of {target.revision[:12]} {state.phase}: {state.message}",
                    state,
                )
            return state
        if time.monotonic() > deadline:
            raise StageError(
                f"rollout {namespace}/{APP} of {target.revision[:12]} still {state.phase} after "
                f"{timeout_s:.0f}s: {state.message}"
            )
        time.sleep(POLL_S)
