"""Whether a release may enter an environment now: not quarantined, and every clause of the environment's
promotion policy holding. The promote stage asks before it moves an alias or writes a GitOps commit."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipeline.adapters import prometheus, registry
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.release import policy, quarantine
from pipeline.release.policy import Clause, Readings
from pipeline.stage import Check

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


def release_image(tags: dict[str, Any]) -> str | None:
    """The image a version is released with: its pushed digest, else the reference built."""
    return str(tags.get("image_digest") or tags.get("image") or "") or None


def readings(
    mlflow: MlflowClient, config: Config, version: str, image: str | None, now: datetime
) -> Readings:
    """What the policy's clauses read: the source environment's alias history, the freeze tag, and the
    error budget from Prometheus (configured clauses only)."""
    name = config.model.name
    source = config.promotion.from_
    history = registry.alias_history(mlflow, name, source) if source else []
    frozen = registered_model_tags(mlflow, name).get(policy.freeze_tag(config.name))
    budget: tuple[float, float] | str | None = None
    spec = config.promotion.error_budget
    if spec is not None:
        url = spec.prometheus_url or config.deploy.prometheus.address
        errors_query, answers_query = policy.error_budget_queries(config)
        try:
            budget = (prometheus.instant(url, errors_query), prometheus.instant(url, answers_query))
        except prometheus.PrometheusError as exc:
            budget = str(exc)
    return Readings(
        now=now,
        version=version,
        image=image,
        source_history=history,
        freeze=None if frozen is None else json.loads(frozen),
        error_budget=budget,
    )


def admit(
    mlflow: MlflowClient,
    config: Config,
    candidate: ModelVersion,
    *,
    unquarantine: str | None,
    now: datetime,
    reporter: Reporter,
) -> list[Check]:
    """The checks of the release entering `config`'s environment: quarantine first (lifted with
    `unquarantine`, a reason, when given), then each policy clause. The promote stage moves nothing
    when one failed; its line names the clause and when it would pass."""
    version = str(candidate.version)
    tags = registry.version_tags(candidate)
    image = release_image(tags)
    rejected = quarantine.rejection(tags, image)
    if rejected is not None and unquarantine is not None:
        quarantine.lift(mlflow, config, version, reason=unquarantine, now=now, reporter=reporter)
        rejected = None
    elif unquarantine is not None:
        reporter.note(f"version {version} is not quarantined: --unquarantine changes nothing")
    clauses = [
        Clause("quarantine", True, "not rejected")
        if rejected is None
        else Clause(
            "quarantine", False, f"rejected: {rejected.line()}", when=quarantine.lift_hint(config, version)
        )
    ]
    clauses += policy.evaluate(config, readings(mlflow, config, version, image, now))
    checks = [clause.check() for clause in clauses]
    blocked = policy.blocking(clauses)
    reporter.checks(checks)
    if blocked is None:
        reporter.note(f"promotion policy of {config.name}: {len(clauses)} clause(s) hold")
    else:  # the failed check's line follows as the stage's failure; this names the clause as configured
        reporter.note(f"blocked by {_name(blocked)}; nothing moved")
    return checks


def registered_model_tags(mlflow: MlflowClient, name: str) -> dict[str, str]:
    if not registry.registered_model_exists(mlflow, name):
        return {}
    return dict(mlflow.get_registered_model(name).tags or {})


def _name(clause: Clause) -> str:
    return clause.name if clause.name in {"quarantine", "freeze"} else f"promotion.{clause.name}"


def set_freeze(
    mlflow: MlflowClient, config: Config, *, reason: str | None, lift: bool, now: datetime, reporter: Reporter
) -> str:
    """Set (with `reason`) or lift the environment's freeze: a registered-model tag, no commit."""
    name, tag = config.model.name, policy.freeze_tag(config.name)
    registry.ensure_registered_model(mlflow, name)
    if lift:
        if tag in registered_model_tags(mlflow, name):
            mlflow.delete_registered_model_tag(name, tag)
        reporter.note(f"{config.name} is not frozen: promotions follow its policy again")
        return f"{config.name}: not frozen"
    record = {"reason": reason, "at": now.isoformat(timespec="seconds"), "by": quarantine.actor()}
    mlflow.set_registered_model_tag(name, tag, json.dumps(record))
    reporter.warn(
        f"{config.name} is frozen: no promotion enters it until `freeze --env {config.name} --lift`"
    )
    return f"{config.name}: frozen ({reason})"
