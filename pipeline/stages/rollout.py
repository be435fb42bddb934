"""rollout: rehearse the environment's rollout plan here (Caddy, live traffic, analysis), or follow the
Rollout of a pushed GitOps commit in the cluster (`--target kubernetes`) until Healthy or Degraded."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.adapters import registry
from pipeline.adapters.locust import LocustTraffic
from pipeline.artifacts import ModelDir
from pipeline.config import Config, ConfigError
from pipeline.console import Reporter
from pipeline.deploy import argo, gitops
from pipeline.deploy.argocd import application
from pipeline.errors import StageError
from pipeline.release import quarantine
from pipeline.release.compatibility import compare
from pipeline.release.gating import breaking_plan, rollout_config, say_compatibility
from pipeline.release.history import within_rollback_window
from pipeline.rollout import rehearsal
from pipeline.stage import StageContext, StageResult
from pipeline.workspace import Workspace


def run(ctx: StageContext) -> StageResult:
    if ctx.args.target == "kubernetes":
        return follow_cluster(ctx)
    if ctx.args.revision is not None:
        raise ConfigError("--revision names the GitOps commit to follow: it needs --target kubernetes")
    c, w, r, args = ctx.config, ctx.workspace, ctx.reporter, ctx.args
    candidate = ctx.exported_model()
    stable = registry.alias_model_dir(c, w, c.alias)
    registration = candidate.read_optional(candidate.registration)
    registered = None if registration is None else str(registration["model_version"])
    plan_config, fast = release_plan(c, w, r, candidate=candidate, stable=stable, registered=registered)
    result = rehearsal.rollout(
        plan_config,
        w,
        r,
        candidate=candidate,
        stable=stable,
        traffic=LocustTraffic(c, candidate),
        candidate_fault=args.candidate_fault,
        approve=args.approve,
        fresh=args.fresh,
        fast=fast,
    )
    if result.status == "fail" and not args.candidate_fault and registered is not None:
        reject(c, w, r, registered, reason=f"rehearsal aborted: {result.headline}", action="rehearsal")
    if ctx.whole_run or result.status == "fail" or args.candidate_fault:
        return result  # inside `run`, the promote stage follows; a rehearsal with a fault promotes nothing
    if registration is None:
        r.note("the candidate is not registered; alias unchanged (run register, then promote)")
        return result
    ctx.run_stage("promote", to_version=str(registration["model_version"]))
    return result


def follow_cluster(ctx: StageContext) -> StageResult:
    c, w, r = ctx.config, ctx.workspace, ctx.reporter
    target = pushed_release(ctx)
    app = application(c)["metadata"]

    def same_release(revision: str) -> bool:  # a later commit (another env's) that deploys ours
        release = gitops.release_at(w.root, c, revision)
        return release is not None and (release.reference, release.model_version) == (
            target.image,
            target.model_version,
        )

    try:
        state = argo.follow_rollout(
            c,
            r,
            application=(app["namespace"], app["name"]),
            target=target,
            same_release=same_release,
            timeout_s=ctx.args.timeout,
            repo=w.root,
        )
    except argo.RolloutFailed as exc:
        if exc.state.phase in REJECTING_PHASES:
            reject(c, w, r, target.model_version, reason=str(exc), action="rollout", image=target.image)
        raise
    # The canary evidence a later environment's release pull request shows (release/approval.py).
    mlflow = registry.client(c, w)
    for key, value in registry.verdict_tags("rollout", c.name, "pass").items():
        mlflow.set_model_version_tag(c.model.name, target.model_version, key, value)
    return StageResult(headline=f"{target.revision[:12]} {state.phase} at step {state.step}: {state.message}")


REJECTING_PHASES = frozenset({"Degraded", "Aborted"})
"""How a cluster rollout ends that rejects its release (a failed sync is no verdict on the release)."""


def release_plan(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    candidate: ModelDir,
    stable: tuple[ModelDir, str] | None,
    registered: str | None,
) -> tuple[Config, bool]:
    """The config whose plan rolls the candidate out (blue-green for a breaking release; StageError when
    `rollout.breaking` refuses it), and whether it is a fast rollback (it served within
    `rollout.rollback_window`)."""
    if stable is None or stable[0].path == candidate.path:
        return config, False
    compatibility = compare(stable[0].read_card(), candidate.read_card(), against=stable[1])
    if compatibility.breaking:
        say_compatibility(config, compatibility, reporter)
        if config.rollout.breaking == "refuse":
            raise StageError(f"{compatibility.summary()}: {breaking_plan(config)}")
    fast = False
    if registered is not None:
        mlflow = registry.client(config, workspace)
        history = registry.alias_history(mlflow, config.model.name, config.name)
        fast = within_rollback_window(history, registered, config.rollout.rollback_window)
        if fast:
            reporter.note(
                f"version {registered} served {config.name} within rollout.rollback_window "
                f"{config.rollout.rollback_window}: all traffic at once, no steps, no analysis"
            )
    return rollout_config(config, compatibility), fast


def reject(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    version: str,
    *,
    reason: str,
    action: str,
    image: str | None = None,
) -> None:
    """Quarantine a release whose rollout failed (a rehearsal serves the model: every image of it)."""
    mlflow = registry.client(config, workspace)
    with registry.writing(config, workspace):
        quarantine.reject(
            mlflow,
            config,
            version,
            image=image,
            reason=reason,
            action=action,
            now=datetime.now(UTC),
            reporter=reporter,
        )


def pushed_release(ctx: StageContext) -> argo.Target:
    """The commit to follow (--revision, else the env's last promotion in the workspace's git) and what its
    overlay deploys."""
    c, repo = ctx.config, ctx.workspace.root
    given = ctx.args.revision or gitops.last_promotion(repo, c)
    if given is None:
        raise StageError(
            f"no promotion commit of {c.name} in the git history of {repo}: pass --revision SHA (the "
            f"commit `promote --env {c.name} --gitops` pushed)"
        )
    revision = gitops.resolve_commit(repo, given)
    release = gitops.release_at(repo, c, revision)
    if release is None or release.model_version is None:
        raise StageError(
            f"commit {revision[:12]} has no {gitops.release_path(c)} with a model_version: it is not a "
            f"promotion of {c.name}; pass the commit `promote --env {c.name} --gitops` pushed"
        )
    return argo.Target(revision=revision, image=release.reference, model_version=release.model_version)
