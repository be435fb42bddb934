"""promote and rollback: move the environment's alias, and keep the history that rollback follows.

The history of an environment is kept in registered-model tags (`history.<env>.<time>`, one per move;
see adapters/registry.py), so it lives in the registry with the versions it names, survives a lost
workspace, and concurrent moves cannot erase each other's entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.adapters import registry
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.deploy import gitops
from pipeline.errors import StageError
from pipeline.stage import StageContext, StageResult
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


def _result(environment: str, version: str, previous: str | None, *, changed: bool) -> PromoteResult:
    headline = (
        f"{environment}: v{previous or '-'} -> v{version}"
        if changed
        else f"{environment}: v{version} already serving"
    )
    return PromoteResult(
        headline=headline,
        reused=not changed,
        environment=environment,
        version=version,
        previous=previous,
        changed=changed,
    )


def _move_alias(
    mlflow: MlflowClient, config: Config, version: str, action: str, reporter: Reporter
) -> PromoteResult:
    name = config.model.name
    current = registry.alias_version(mlflow, name, config.alias)
    previous = str(current.version) if current is not None else None
    if previous == version:
        reporter.note(f"version {version} already serves {config.name}; nothing to move")
        return _result(config.name, version, previous, changed=False)
    mlflow.set_registered_model_alias(name, config.alias, version)
    entry = {
        "version": version,
        "previous": previous,
        "action": action,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    registry.record_alias_move(mlflow, name, config.name, entry)
    reporter.note(f"alias {config.alias!r}: version {previous or '(none)'} -> {version} ({action})")
    return _result(config.name, version, previous, changed=True)


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


def promote(
    config: Config, workspace: Workspace, reporter: Reporter, *, to_version: str | None = None
) -> PromoteResult:
    """Move alias `<env>` to the candidate (or `to_version`), only when its gate passed for `<env>`."""
    mlflow = registry.client(config, workspace)
    name = config.model.name
    with registry.writing(config, workspace):
        candidate = candidate_version(mlflow, config, to_version)
        result = _move_alias(mlflow, config, str(candidate.version), "promote", reporter)
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


def rollback(config: Config, workspace: Workspace, reporter: Reporter) -> PromoteResult:
    """Move alias `<env>` back to the version that served before the current one."""
    mlflow = registry.client(config, workspace)
    with registry.writing(config, workspace):
        return _move_alias(mlflow, config, rollback_target(mlflow, config), "rollback", reporter)


def _get_version(mlflow: MlflowClient, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        return mlflow.get_model_version(name, version)
    except MlflowException:
        raise StageError(f"{name} has no version {version!r}") from None


def run(ctx: StageContext) -> PromoteResult:
    """Move the alias; with `--gitops`, commit and push the overlay first, and revert that commit when the
    alias does not move, so Git and the registry never disagree."""
    c, w, r, to_version = ctx.config, ctx.workspace, ctx.reporter, ctx.args.to_version
    if not ctx.args.gitops:
        return promote(c, w, r, to_version=to_version)
    repo = w.root
    gitops.require_remote(c)
    gitops.ensure_clean(repo)
    candidate = candidate_version(registry.client(c, w), c, to_version)
    lineage = gitops.lineage_from_tags(c, str(candidate.version), registry.version_tags(candidate))
    gitops.commit_release(repo, c, lineage, r)
    try:
        return promote(c, w, r, to_version=to_version)
    except Exception:
        r.warn("the alias did not move; reverting the GitOps commit so Git matches the registry")
        gitops.revert_last(repo, c, r)
        raise


def run_rollback(ctx: StageContext) -> PromoteResult:
    c, w, r = ctx.config, ctx.workspace, ctx.reporter
    if ctx.args.gitops:
        # Refuse before touching Git when the alias has nowhere to go back to.
        rollback_target(registry.client(c, w), c)
        gitops.revert_last(w.root, c, r)
    return rollback(c, w, r)
