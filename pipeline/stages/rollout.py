"""rollout: rehearse the environment's rollout plan here (Caddy, live traffic, analysis), or follow the
Rollout of a pushed GitOps commit in the cluster (`--target kubernetes`) until Healthy or Degraded."""

from __future__ import annotations

from pipeline.adapters import registry
from pipeline.adapters.locust import LocustTraffic
from pipeline.config import ConfigError
from pipeline.deploy import argo, gitops
from pipeline.deploy.render import application
from pipeline.errors import StageError
from pipeline.rollout import rehearsal
from pipeline.stage import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    if ctx.args.target == "kubernetes":
        return follow_cluster(ctx)
    if ctx.args.revision is not None:
        raise ConfigError("--revision names the GitOps commit to follow: it needs --target kubernetes")
    c, w, r, args = ctx.config, ctx.workspace, ctx.reporter, ctx.args
    candidate = ctx.exported_model()
    stable = registry.alias_model_dir(c, w, c.alias)
    result = rehearsal.rollout(
        c,
        w,
        r,
        candidate=candidate,
        stable=stable,
        traffic=LocustTraffic(c, candidate),
        candidate_fault=args.candidate_fault,
        approve=args.approve,
        fresh=args.fresh,
    )
    if ctx.whole_run or result.status == "fail" or args.candidate_fault:
        return result  # inside `run`, the promote stage follows; a rehearsal with a fault promotes nothing
    registration = candidate.read_optional(candidate.registration)
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

    state = argo.follow_rollout(
        c,
        r,
        application=(app["namespace"], app["name"]),
        target=target,
        same_release=same_release,
        timeout_s=ctx.args.timeout,
        repo=w.root,
    )
    return StageResult(headline=f"{target.revision[:12]} {state.phase} at step {state.step}: {state.message}")


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
