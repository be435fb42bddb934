"""gate: the candidate's metrics against absolute bounds and against the version serving the environment.

Both models are scored by their ONNX files on the same evaluation rows, so the comparison is fair
and measures what will actually be served.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.adapters import registry
from pipeline.artifacts import ModelDir, inputs_key
from pipeline.config import Config, gate_metric_problems
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.ml.onnx_model import predict
from pipeline.ml.scoring import evaluate, evaluate_values
from pipeline.release.compatibility import Compatibility, compare
from pipeline.release.gating import checks_for, compatibility_check, projected_rows, say_compatibility
from pipeline.release.record import SEMVER_TAG
from pipeline.stage import Check, Reuse, StageContext, StageResult, checked_status, result_line, reusable
from pipeline.workspace import Workspace, write_json

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


REUSE: Reuse = "any"
"""Both models are scored on fixed files: the same candidate, champion and gates give the same verdict."""


@dataclass(frozen=True, kw_only=True)
class GateResult(StageResult):
    environment: str
    version: str
    candidate: dict[str, float]
    champion: dict[str, float] | None = None
    champion_version: str | None = None
    note: str = ""
    mode: str = "enforce"
    compatibility: dict[str, Any] | None = None
    """The candidate against the champion (`release.compatibility.Compatibility` as JSON); None on a first deploy."""


def evaluate_model_dir(model: ModelDir, rows: list[list[Any]], labels: np.ndarray) -> dict[str, float]:
    """The task's metrics of the ONNX model in `model` on rows of JSON values (eval.json's)."""
    card = model.read_card()
    outputs = predict(model.onnx, card, rows)
    if outputs.values is not None:
        return evaluate_values(outputs.values, labels)
    assert outputs.probabilities is not None
    return evaluate(outputs.probabilities, labels, card.classes)


def gate(
    config: Config, workspace: Workspace, reporter: Reporter, *, model: ModelDir, fresh: bool = False
) -> GateResult:
    """Judge `model` against the bounds and the version serving the environment (the champion).

    The same candidate, champion and gates give the same verdict: it is reused unless `fresh`."""
    if not model.exported():
        msg = f"{model.path} has no exported model; run `python -m pipeline export --env {config.name}` first"
        raise StageError(msg)
    mlflow = registry.client(config, workspace)
    champion = registry.alias_version(mlflow, config.model.name, config.alias)
    champion_id = (
        "none"
        if champion is None
        else f"{champion.version}:{registry.version_tags(champion).get('artifact_version')}"
    )
    key = inputs_key(config, ("gates",), model.version, champion_id, config.rollout.breaking)
    previous = model.read_optional(model.gate(config.name))
    if reusable(previous, key, REUSE, fresh=fresh):
        reporter.note(f"{previous['note']}; reused the verdict of the same candidate, champion and gates")
        result = _result(config, model, previous, reused=True)
        reporter.verdict("gate", result)
        return result

    task = model.read_card().task
    problems = gate_metric_problems(config, task)
    if problems:
        where = f"environments/{config.name}.yaml (or a file it extends)"
        raise StageError("; ".join(f"{where}: {problem}" for _, problem in problems))
    evaluation = model.read_evaluation()
    labels = np.asarray(evaluation["labels"])
    candidate = evaluate_model_dir(model, evaluation["rows"], labels)
    champion_metrics, note, compatibility = _champion_metrics(
        config, mlflow, champion, model, evaluation, task=task
    )
    reporter.note(note)
    checks = checks_for(config, candidate, champion_metrics)
    status = checked_status(checks, warn_only=config.gates.mode == "warn")
    if compatibility is not None:
        check = compatibility_check(config, compatibility)
        checks.append(check)
        status = "fail" if check.failed else status  # `refuse` is no metric a warn mode lets through
        say_compatibility(config, compatibility, reporter)
    record = {
        "environment": config.name,
        "version": model.version,
        "status": status,
        "checks": [asdict(check) for check in checks],
        "candidate": candidate,
        "champion": champion_metrics,
        "champion_version": None if champion is None else str(champion.version),
        "note": note,
        "mode": config.gates.mode,
        "compatibility": None if compatibility is None else compatibility.to_json(),
        "inputs": key,
    }
    write_json(model.gate(config.name), record)
    result = _result(config, model, record, reused=False)
    reporter.verdict("gate", result)
    if status == "warn":
        failed = len(result.failures)
        reporter.warn(f"gate mode is 'warn' for {config.name}: {failed} failed check(s) let through")
    return result


def _result(config: Config, model: ModelDir, record: Mapping[str, Any], *, reused: bool) -> GateResult:
    checks = [Check(**check) for check in record["checks"]]
    champion_version = record["champion_version"]
    versus = f" vs champion v{champion_version}" if champion_version else " (first deploy)"
    return GateResult(
        status=record["status"],
        headline=f"{result_line(record['status'], checks)}{versus}",
        reused=reused,
        artifacts={"gate": model.gate(config.name)},
        checks=checks,
        environment=config.name,
        version=model.version,
        candidate=record["candidate"],
        champion=record["champion"],
        champion_version=champion_version,
        note=record["note"],
        mode=record["mode"],
        compatibility=record.get("compatibility"),
    )


def _champion_metrics(
    config: Config,
    mlflow: MlflowClient,
    champion: ModelVersion | None,
    model: ModelDir,
    evaluation: dict[str, Any],
    *,
    task: str,
) -> tuple[dict[str, float] | None, str, Compatibility | None]:
    """The champion's metrics to compare with, how they were measured, and the candidate's compatibility
    with it. The champion is scored on the candidate's evaluation rows cut to its own features (by name,
    in its order); when some are missing (renamed, removed), its card's metrics on its own evaluation
    rows are what is left; another task leaves only the absolute bounds."""
    if champion is None:
        note = (
            f"first deploy to {config.name}: no version holds alias {config.alias!r}, "
            "so only the absolute thresholds apply"
        )
        return None, note, None
    tags = registry.version_tags(champion)
    label = f"version {champion.version} (artifacts {tags.get('artifact_version', '?')})"
    with tempfile.TemporaryDirectory() as tmp:
        champion_dir = ModelDir(registry.download_version(mlflow, champion, Path(tmp)))
        champion_card = champion_dir.read_card()
        compatibility = compare(
            champion_card,
            model.read_card(),
            against=str(champion.version),
            against_semver=tags.get(SEMVER_TAG),
        )
        rows = projected_rows(evaluation, champion_card.feature_names)
        if champion_card.task != task:
            note = (
                f"champion {label} serving {config.name} is a {champion_card.task} model and the candidate a "
                f"{task} one: their metrics cannot be compared, only the absolute thresholds apply"
            )
            return None, note, compatibility
        if rows is None:
            missing = [name for name in champion_card.feature_names if name not in evaluation["features"]]
            note = (
                f"champion: {label}, alias {config.alias!r}; it takes {missing[:3]}, which the candidate's "
                "evaluation rows lack, so it is compared by its card's metrics on its own evaluation rows "
                "(other rows than the candidate's)"
            )
            return dict(champion_card.metrics), note, compatibility
        metrics = evaluate_model_dir(champion_dir, rows, np.asarray(evaluation["labels"]))
    same = " (the candidate is this same model)" if tags.get("artifact_version") == model.version else ""
    projected = "" if compatibility.level == "same" else ", on the same rows cut to its own features"
    return metrics, f"champion: {label}, alias {config.alias!r}{same}{projected}", compatibility


def run(ctx: StageContext) -> GateResult:
    return gate(ctx.config, ctx.workspace, ctx.reporter, model=ctx.model, fresh=ctx.args.fresh)
