"""Where a deploy goes: a cluster through GitOps, or the registry alias only, decided in a step.

    python3 scripts/deploy_target.py     # reusable-deploy.yml's "Where to deploy" step

The environment-scoped secrets and variables reach only the steps of a job that runs under the
GitHub Environment (a job-level `if:` cannot see them), so the deploy job asks here and the later
steps test the step outputs `cluster` and `gitops` (`true` or `false`):

- under act (ACT set): no cluster; a GitOps commit when an image was pushed (scripts/run_act.py serves
  a registry and a bare GitOps remote);
- no KUBE_CONFIG: neither; the alias moves after the gate and registration, with a notice. KUBE_CLUSTER
  without KUBE_CONFIG fails: a half-configured cluster must not get an alias with nothing deployed;
- KUBE_CONFIG: both, which needs a push credential (GITOPS_TOKEN, or GITOPS_APP_ID with
  GITOPS_APP_PRIVATE_KEY) and a pushed image (IMAGE_DIGEST), else it fails naming what is missing. The
  kubeconfig is written 0600 to RUNNER_TEMP/kubeconfig, KUBECONFIG points the later steps at it
  (GITHUB_ENV), and KUBE_CLUSTER, when set, is made its current context (`kubectl config use-context`).

Environment: TARGET_ENV, ACT, KUBE_CONFIG, KUBE_CLUSTER, GITOPS_TOKEN, GITOPS_APP_ID,
GITOPS_APP_PRIVATE_KEY, IMAGE_DIGEST, and RUNNER_TEMP, GITHUB_OUTPUT, GITHUB_ENV (set by GitHub).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CI_DOC = "docs/ci.md"
NOTICE_TITLE = "rollout skipped"


class Misconfigured(Exception):
    """The environment is half-configured; the message names what to set and where."""


@dataclass(frozen=True)
class Target:
    cluster: bool
    """A cluster is configured: follow the Argo Rollout after the GitOps commit."""
    gitops: bool
    """Commit the release to the environment's overlay (else move the alias only)."""
    notice: str = ""
    """Why part of the deploy is skipped, shown in the run's summary."""


def decide(environ: Mapping[str, str]) -> Target:
    """Where the deploy of TARGET_ENV goes, from the environment's secrets and variables."""
    name = environ.get("TARGET_ENV", "")
    digest = environ.get("IMAGE_DIGEST", "")
    if environ.get("ACT"):
        return Target(
            cluster=False, gitops=bool(digest), notice="act runs this workflow on a laptop - no cluster here"
        )
    if not environ.get("KUBE_CONFIG"):
        if environ.get("KUBE_CLUSTER"):
            raise Misconfigured(
                f"KUBE_CLUSTER is set for {name} but the secret KUBE_CONFIG is not: set it in the "
                f"environment {name} ({CI_DOC})"
            )
        return Target(
            cluster=False,
            gitops=False,
            notice=f"no cluster for {name} - set the environment secret KUBE_CONFIG ({CI_DOC}); moving the alias only",
        )
    missing = []
    app = environ.get("GITOPS_APP_ID") and environ.get("GITOPS_APP_PRIVATE_KEY")
    if not environ.get("GITOPS_TOKEN") and not app:
        missing.append(
            "GITOPS_APP_ID+GITOPS_APP_PRIVATE_KEY (a GitHub App that may push to main) or GITOPS_TOKEN"
        )
    if not digest:
        missing.append("IMAGE_REGISTRY (variable: no image was pushed)")
    if missing:
        raise Misconfigured(
            f"{name} has a cluster (KUBE_CONFIG) but nothing can be deployed to it; missing: "
            f"{' '.join(missing)} ({CI_DOC})"
        )
    return Target(cluster=True, gitops=True)


def use_cluster(environ: Mapping[str, str]) -> Path:
    """Write KUBE_CONFIG where only this job's user can read it, point the later steps at it, and select
    KUBE_CLUSTER's context when set; return the file."""
    kubeconfig = Path(environ["RUNNER_TEMP"]) / "kubeconfig"
    descriptor = os.open(kubeconfig, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(environ["KUBE_CONFIG"] + "\n")
    _append(environ, "GITHUB_ENV", [f"KUBECONFIG={kubeconfig}"])
    context = environ.get("KUBE_CLUSTER", "")
    if context:
        done = subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), "config", "use-context", context],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise Misconfigured(
                f"KUBE_CLUSTER={context} is not a context of the KUBE_CONFIG of {environ.get('TARGET_ENV', '')}: "
                f"{(done.stderr or done.stdout).strip()} (set KUBE_CLUSTER to one of its contexts, {CI_DOC})"
            )
    return kubeconfig


def _append(environ: Mapping[str, str], variable: str, lines: list[str]) -> None:
    """Append `name=value` lines to the runner's file named by `variable` (GITHUB_OUTPUT, GITHUB_ENV)."""
    with Path(environ[variable]).open("a", encoding="utf-8") as handle:
        handle.writelines(f"{line}\n" for line in lines)


def main(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    try:
        target = decide(environ)
        if target.cluster:
            use_cluster(environ)
    except Misconfigured as exc:
        sys.stdout.write(f"::error::{exc}\n")
        return 1
    if target.notice:
        sys.stdout.write(f"::notice title={NOTICE_TITLE}::{target.notice}\n")
    _append(
        environ,
        "GITHUB_OUTPUT",
        [f"cluster={str(target.cluster).lower()}", f"gitops={str(target.gitops).lower()}"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
