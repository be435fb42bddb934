"""Follow an Argo Rollout in a real cluster until it is Healthy, Degraded or aborted, or a timeout passes.

Argo CD applies the overlay (automated sync) or a person syncs it; this only watches the Rollout's
status through the Kubernetes API and prints each step. `interpret` is pure and unit-tested on recorded
status dicts; the API calls need a cluster and the `kubernetes` package (dependency group `k8s`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.deploy.names import APP
from pipeline.errors import NoCluster, StageError
from pipeline.workspace import Workspace

POLL_S = 5.0


@dataclass(frozen=True)
class RolloutState:
    phase: str
    """Argo's status.phase: Progressing, Paused, Healthy, Degraded (aborted rollouts are Degraded)."""
    step: str
    """`3/5` (current step index of the canary steps), or `-` for blue-green."""
    message: str
    done: bool
    ok: bool


def interpret(rollout: dict[str, Any]) -> RolloutState:
    """What a Rollout object's status means for us (pure)."""
    spec, status = rollout.get("spec") or {}, rollout.get("status") or {}
    generation = (rollout.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    phase = str(status.get("phase") or "Progressing")
    message = str(status.get("message") or "")
    steps = ((spec.get("strategy") or {}).get("canary") or {}).get("steps")
    step = f"{status.get('currentStepIndex', 0)}/{len(steps)}" if steps is not None else "-"
    if status.get("abort"):
        return RolloutState("Degraded", step, message or "aborted", done=True, ok=False)
    if generation is not None and observed is not None and str(observed) != str(generation):
        return RolloutState("Progressing", step, "controller has not observed the new spec yet", False, False)
    if phase == "Healthy":
        return RolloutState(phase, step, message or "healthy", done=True, ok=True)
    if phase == "Degraded":
        return RolloutState(phase, step, message or "degraded", done=True, ok=False)
    return RolloutState(phase, step, message, done=False, ok=False)


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


def follow_rollout(
    config: Config, workspace: Workspace, reporter: Reporter, timeout_s: float = 1800.0
) -> RolloutState:
    """Watch Rollout `model-service` in deploy.namespace; StageError on Degraded/aborted or timeout,
    NoCluster (exit 2) when no cluster is reachable."""
    api = _api(config)
    namespace = config.deploy.namespace
    deadline = time.monotonic() + timeout_s
    last: RolloutState | None = None
    while True:
        obj = api.get_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "rollouts", APP)
        state = interpret(obj)
        if state != last:
            reporter.note(
                f"rollout {namespace}/{APP}: {state.phase} step {state.step} {state.message}".rstrip()
            )
            last = state
        if state.done:
            if not state.ok:
                raise StageError(f"rollout {namespace}/{APP} {state.phase}: {state.message}")
            return state
        if time.monotonic() > deadline:
            raise StageError(f"rollout {namespace}/{APP} still {state.phase} after {timeout_s:.0f}s")
        time.sleep(POLL_S)
