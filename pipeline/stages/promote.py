"""promote and rollback: move the environment's alias, and keep the history that rollback follows.

The history of an environment is kept in registered-model tags (`history.<env>.<time>`, one per move;
see adapters/registry.py), so it lives in the registry with the versions it names, survives a lost
workspace, and concurrent moves cannot erase each other's entry.

A release enters an environment only when it is not quarantined and the environment's promotion policy
holds (release/promotion.py); a rollback rejects the release it leaves (release/quarantine.py).

Over 400 lines on purpose: promote and rollback are one lifecycle (alias, history, quarantine, the GitOps
commit and its revert, the release pull request), and each refusal is read beside the move it guards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.adapters import registry
from pipeline.adapters.github_actions import write_step_outputs
from pipeline.adapters.github_api import GitHub
from pipeline.adapters.locust import LocustTraffic
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.deploy import gitops
from pipeline.errors import StageError
from pipeline.release import approval, quarantine
from pipeline.release.history import releases_between, within_rollback_window
from pipeline.release.promotion import admit, release_image
from pipeline.release.record import SEMVER_TAG, against_serving
from pipeline.rollout import rehearsal
from pipeline.stage import Check, StageContext, StageResult
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient

PROMOTABLE = {"pass", "warn"}


@dataclass(frozen=True, kw_only=True)
class PromoteResult(StageResult):
    environment: str
    version: str
    previous: str | None
    changed: bool
    timings: dict[str, float] = field(default_factory=dict)
    """A rehearsed rollback's time to restore (`restored_after_s`), the plan's part of it, the whole rollback."""


def _result(
    environment: str, version: str, previous: str | None, *, changed: bool, checks: list[Check] | None = None
) -> PromoteResult:
    headline = (
        f"{environment}: v{previous or '-'} -> v{version}"
        if changed
        else f"{environment}: v{version} already serving"
    )
    return PromoteResult(
        headline=headline,
        reused=not changed,
        checks=checks or [],
        environment=environment,
        version=version,
        previous=previous,
        changed=changed,
    )


def _blocked(config: Config, version: str, previous: str | None, checks: list[Check]) -> PromoteResult:
    """A promotion the policy or the quarantine holds back: nothing moved, the failed check says why."""
    first = next(check for check in checks if check.failed)
    return PromoteResult(
        status="fail",
        headline=f"{config.name}: v{version} blocked by {first.name}",
        checks=checks,
        environment=config.name,
        version=version,
        previous=previous,
        changed=False,
    )


def _move_alias(
    mlflow: MlflowClient,
    config: Config,
    version: str,
    action: str,
    reporter: Reporter,
    *,
    now: datetime,
    checks: list[Check] | None = None,
) -> PromoteResult:
    name = config.model.name
    current = registry.alias_version(mlflow, name, config.alias)
    previous = str(current.version) if current is not None else None
    if previous == version:
        reporter.note(f"version {version} already serves {config.name}; nothing to move")
        return _result(config.name, version, previous, changed=False, checks=checks)
    mlflow.set_registered_model_alias(name, config.alias, version)
    tags = registry.version_tags(mlflow.get_model_version(name, version))
    entry = {
        "version": version,
        "previous": previous,
        "action": action,
        "at": now.isoformat(timespec="seconds"),
        # What soak and fast rollback read: the release is the version with this image.
        "image": release_image(tags),
        "semver": tags.get(SEMVER_TAG),
    }
    registry.record_alias_move(mlflow, name, config.name, entry)
    reporter.note(f"alias {config.alias!r}: version {previous or '(none)'} -> {version} ({action})")
    return _result(config.name, version, previous, changed=True, checks=checks)


def candidate_version(mlflow: MlflowClient, config: Config, to_version: str | None) -> Any:
    """The version `promote` would move alias `<env>` to; StageError unless its gate passed for `<env>`."""
    name = config.model.name
    if to_version is None:
        candidate = registry.alias_version(mlflow, name, config.candidate_alias)
        if candidate is None:
            msg = (
                f"no version holds alias {config.candidate_alias!r}; run `python -m pipeline register "
                f"--env {config.name}` or pass --to-version N"
            )
            raise StageError(msg)
    else:
        candidate = _get_version(mlflow, name, to_version)
    gate = registry.version_tags(candidate).get(f"gate.{config.name}")
    if gate not in PROMOTABLE:
        msg = (
            f"version {candidate.version} has gate.{config.name}={gate or '(none)'}; only a version whose gate "
            f"passed for {config.name} is promoted (run the gate and register for {config.name}); aliases unchanged"
        )
        raise StageError(msg)
    return candidate


def _serving(mlflow: MlflowClient, config: Config) -> str | None:
    current = registry.alias_version(mlflow, config.model.name, config.alias)
    return None if current is None else str(current.version)


def promote(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    to_version: str | None = None,
    unquarantine: str | None = None,
    now: datetime | None = None,
    admitted: list[Check] | None = None,
) -> PromoteResult:
    """Move alias `<env>` to the candidate (or `to_version`), only when its gate passed for `<env>`, it is
    not quarantined (`unquarantine`: a person's reason to lift that) and the environment's promotion
    policy holds at `now` (default: the clock). `admitted`: the checks of a caller that asked already."""
    mlflow = registry.client(config, workspace)
    name = config.model.name
    now = now or datetime.now(UTC)
    with registry.writing(config, workspace):
        candidate = candidate_version(mlflow, config, to_version)
        version, serving = str(candidate.version), _serving(mlflow, config)
        checks = admitted
        if checks is None and version != serving:  # already serving: nothing enters, nothing to admit
            checks = admit(mlflow, config, candidate, unquarantine=unquarantine, now=now, reporter=reporter)
        if checks is not None and any(check.failed for check in checks):
            return _blocked(config, version, serving, checks)
        result = _move_alias(mlflow, config, version, "promote", reporter, now=now, checks=checks)
        on_its_way = registry.alias_version(mlflow, name, config.candidate_alias)
        if on_its_way is not None and str(on_its_way.version) == result.version:
            mlflow.delete_registered_model_alias(name, config.candidate_alias)  # it has arrived
    return result


def rollback_target(mlflow: MlflowClient, config: Config) -> str:
    """The version that served `<env>` before the current one; StageError when there is none."""
    current = registry.alias_version(mlflow, config.model.name, config.alias)
    if current is None:
        raise StageError(
            f"no version serves {config.name} (alias {config.alias!r} unset); nothing to roll back"
        )
    entries = registry.alias_history(mlflow, config.model.name, config.name)
    # Follow promotions only, so two rollbacks in a row walk further back instead of toggling.
    previous = next(
        (
            e["previous"]
            for e in reversed(entries)
            if e["version"] == str(current.version) and e["action"] == "promote"
        ),
        None,
    )
    if previous is None:
        msg = f"version {current.version} is the first to serve {config.name}; there is nothing earlier to roll back to"
        raise StageError(msg)
    return str(previous)


def rollback(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    reason: str | None = None,
    now: datetime | None = None,
) -> PromoteResult:
    """Move alias `<env>` back to the version that served before the current one, and quarantine the one
    it leaves (with its image): no promotion ships it again until a person lifts that."""
    mlflow = registry.client(config, workspace)
    now = now or datetime.now(UTC)
    with registry.writing(config, workspace):
        leaving = _serving(mlflow, config)
        result = _move_alias(mlflow, config, rollback_target(mlflow, config), "rollback", reporter, now=now)
        if leaving is not None and result.changed:
            reject_leaving(mlflow, config, leaving, reason=reason, now=now, reporter=reporter)
    return result


def reject_leaving(
    mlflow: MlflowClient,
    config: Config,
    version: str,
    *,
    reason: str | None,
    now: datetime,
    reporter: Reporter,
) -> quarantine.Event:
    """Quarantine the release a rollback leaves."""
    tags = registry.version_tags(mlflow.get_model_version(config.model.name, version))
    return quarantine.reject(
        mlflow,
        config,
        version,
        image=release_image(tags),
        reason=reason or f"rolled back from {config.name}",
        action="rollback",
        now=now,
        reporter=reporter,
    )


def _get_version(mlflow: MlflowClient, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        return mlflow.get_model_version(name, version)
    except MlflowException:
        raise StageError(f"{name} has no version {version!r}") from None


def run(ctx: StageContext) -> PromoteResult:
    """Move the alias; with `--gitops`, commit and push the overlay first (after the quarantine and the
    policy admitted the release), and revert that commit when the alias does not move, so Git and the
    registry never disagree."""
    c, w, r, args = ctx.config, ctx.workspace, ctx.reporter, ctx.args
    unquarantine = _override(args)
    if args.release_commit:
        return _merged(ctx, args.release_commit)
    if not args.gitops:
        return promote(c, w, r, to_version=args.to_version, unquarantine=unquarantine)
    repo = w.root
    gitops.require_remote(c)
    gitops.ensure_clean(repo)
    mlflow = registry.client(c, w)
    now = datetime.now(UTC)
    candidate = candidate_version(mlflow, c, args.to_version)
    version, tags = str(candidate.version), registry.version_tags(candidate)
    if version == _serving(mlflow, c):
        return promote(c, w, r, to_version=version, now=now)
    lineage = gitops.lineage_from_tags(c, version, tags)
    compatibility = against_serving(mlflow, c, w, candidate)
    if compatibility is not None:
        lineage = replace(lineage, compatibility=compatibility.level)
    records, trailers = _git_quarantine(repo, c, version, release_image(tags), unquarantine)
    checks = admit(mlflow, c, candidate, unquarantine=unquarantine, now=now, reporter=r)
    if any(check.failed for check in checks):
        return _blocked(c, version, _serving(mlflow, c), checks)
    if c.promotion.approval == "pull_request":
        proposal = _propose(ctx, version, tags, lineage, checks, records=records, trailers=trailers)
        return replace(proposal, previous=_serving(mlflow, c))
    semver = tags.get(SEMVER_TAG)
    tag = gitops.release_tag(c.model.name, c.name, str(semver)) if semver else None
    gitops.commit_release(repo, c, lineage, r, records=records, trailers=trailers, tag=tag)
    try:
        return promote(c, w, r, to_version=version, now=now, admitted=checks)
    except Exception:
        r.warn("the alias did not move; reverting the GitOps commit so Git matches the registry")
        gitops.revert_last(repo, c, r)
        raise


def _propose(
    ctx: StageContext,
    version: str,
    tags: dict[str, Any],
    lineage: gitops.Lineage,
    checks: list[Check],
    *,
    records: dict[str, str | None],
    trailers: dict[str, str],
) -> PromoteResult:
    """`promotion.approval: pull_request`: the release as a pull request with its evidence; nothing moves
    until it is merged (release-merged.yml then runs `promote --release-commit`)."""
    c, w, r = ctx.config, ctx.workspace, ctx.reporter
    github = GitHub.from_environment()  # before anything is pushed
    branch = approval.branch_name(c, version, tags.get(SEMVER_TAG))
    commit = gitops.propose_release(w.root, c, lineage, r, branch=branch, records=records, trailers=trailers)
    found = approval.evidence(c, tags, checks)
    number, url = approval.open_pull_request(
        github,
        c,
        version=version,
        reference=lineage.release().reference,
        branch=branch,
        commit=commit,
        found=found,
        admitted=checks,
    )
    write_step_outputs({"pull_request": str(number)})
    r.note(f"opened pull request #{number} {url}".rstrip())
    for item in found:
        r.note(f"  {item.context}: {'success' if item.passed else 'FAILURE'} ({item.description})")
    r.note(f"alias {c.alias!r} moves when a code owner has approved and it is merged")
    return PromoteResult(
        headline=f"{c.name}: pull request #{number} proposes v{version}",
        checks=checks,
        environment=c.name,
        version=version,
        previous=None,
        changed=False,
    )


def _merged(ctx: StageContext, revision: str) -> PromoteResult:
    """The merge of a release pull request: the policy again, the alias to the version the commit's
    release.yaml deploys, and the commit tagged `<model>/<env>/v<semver>`."""
    c, w, r = ctx.config, ctx.workspace, ctx.reporter
    commit = gitops.resolve_commit(w.root, revision)
    release = gitops.release_at(w.root, c, commit)
    if release is None or release.model_version is None:
        raise StageError(
            f"commit {commit[:12]} has no {gitops.release_path(c)} with a model_version: it is no release of "
            f"{c.name}; pass the merge commit of a release pull request"
        )
    result = promote(c, w, r, to_version=release.model_version)
    if result.status == "fail":
        return result
    mlflow = registry.client(c, w)
    semver = registry.version_tags(mlflow.get_model_version(c.model.name, release.model_version)).get(
        SEMVER_TAG
    )
    if semver:
        tag = gitops.release_tag(c.model.name, c.name, str(semver))
        message = f"{c.model.name} version {release.model_version} ({release.reference}) in {c.name}"
        gitops.tag_and_push(w.root, c, tag, message, r, commit=commit)
    return result


def _override(args: Any) -> str | None:
    """`--unquarantine --reason TEXT`: a person's reason to ship a rejected release; None without it."""
    if not args.unquarantine:
        return None
    if not (args.reason or "").strip():
        raise StageError("--unquarantine needs --reason TEXT: why the rejected release may ship after all")
    return str(args.reason)


def _git_quarantine(
    repo: Path, config: Config, version: str, image: str | None, unquarantine: str | None
) -> tuple[dict[str, str | None], dict[str, str]]:
    """The quarantine files a promotion commit rewrites (this release's entries removed) and its trailer,
    when `unquarantine` lifts the rejection Git records; StageError when Git rejects it without that."""
    found = quarantine.git_rejections(repo, config.model.name, version, image)
    if not found:
        return {}, {}
    if unquarantine is None:
        where, entry = found[0]
        raise StageError(
            f"refusing: {quarantine.git_path(where)} rejects version {version} ({entry.get('reason')}, "
            f"{entry.get('at')}); it passes {quarantine.lift_hint(config, version)}"
        )
    records: dict[str, str | None] = {}
    for environment in sorted({where for where, _ in found}):
        kept = [
            entry
            for entry in quarantine.git_entries(repo, environment)
            if not quarantine.rejects(entry, config.model.name, version, image)
        ]
        records[quarantine.git_path(environment)] = quarantine.git_text(environment, kept) if kept else None
    return records, {quarantine.UNQUARANTINE_TRAILER: unquarantine}


def run_rollback(ctx: StageContext) -> PromoteResult:
    """Roll back: `--rehearse` first rehearses the way back here (straight to all traffic within
    `rollout.rollback_window`); `--gitops` reverts the last promotion commit with the rejection recorded."""
    c, w, r, args = ctx.config, ctx.workspace, ctx.reporter, ctx.args
    mlflow = registry.client(c, w)
    now = datetime.now(UTC)
    target = rollback_target(mlflow, c)  # refuses before touching Git when there is nowhere to go back to
    leaving = _serving(mlflow, c)
    restore = _rehearse_rollback(ctx, target) if args.rehearse else None
    if args.gitops:
        assert leaving is not None  # rollback_target found a version serving
        event = reject_leaving(mlflow, c, leaving, reason=args.reason, now=now, reporter=r)
        path = quarantine.git_path(c.name)
        entries = [*quarantine.git_entries(w.root, c.name), quarantine.git_entry(c, leaving, event)]
        gitops.revert_last(
            w.root,
            c,
            r,
            records={path: quarantine.git_text(c.name, entries)},
            trailers={quarantine.QUARANTINE_TRAILER: f"{c.model.name} version {leaving}: {event.reason}"},
        )
        with registry.writing(c, w):
            result = _move_alias(mlflow, c, target, "rollback", r, now=now)
    else:
        result = rollback(c, w, r, reason=args.reason, now=now)
    if restore is None:
        return result
    return PromoteResult(**{**vars(result), **restore})


def _rehearse_rollback(ctx: StageContext, target: str) -> dict[str, Any]:
    """Rehearse going back from the release serving to `target`; fast (all traffic at once, no analysis)
    when `target` served within `rollout.rollback_window` releases. StageError when the way back fails."""
    c, w, r = ctx.config, ctx.workspace, ctx.reporter
    started = time.monotonic()
    mlflow = registry.client(c, w)
    entries = registry.alias_history(mlflow, c.model.name, c.name)
    fast = within_rollback_window(entries, target, c.rollout.rollback_window)
    between = releases_between(entries, target)
    r.note(
        f"rollback to version {target}: {between} release(s) served since, rollout.rollback_window "
        f"{c.rollout.rollback_window}: " + ("fast (no steps, no analysis)" if fast else "the full plan")
    )
    stable = registry.alias_model_dir(c, w, c.alias)
    candidate = registry.version_model_dir(mlflow, c, w, mlflow.get_model_version(c.model.name, target))
    outcome = rehearsal.rollout(
        c,
        w,
        r,
        candidate=candidate,
        stable=stable,
        traffic=LocustTraffic(c, candidate),
        fast=fast,
        fresh=True,
    )
    if outcome.status == "fail":
        raise StageError(
            f"the rehearsed rollback to version {target} failed: {outcome.headline}; alias unchanged"
        )
    restored, switched = outcome.restored_after_s or 0.0, outcome.switched_after_s or 0.0
    total = time.monotonic() - started
    r.note(
        f"time to restore: {restored:.1f}s from the rehearsal's start to all traffic on version {target}, "
        f"{switched:.1f}s of them the plan ({'fast: no steps, no analysis' if fast else 'steps and analysis'}); "
        f"{total:.1f}s for the whole rollback"
    )
    return {
        "timings": {"restored_after_s": restored, "plan_s": switched, "rollback_s": total},
        "headline": f"{c.name}: back to v{target} in {restored:.1f}s ({'fast' if fast else 'full plan'})",
        "checks": outcome.checks,
    }
