"""gate: the candidate's metrics against absolute bounds and against the version serving the environment.

Both models are scored by their ONNX files on the same evaluation rows, so the comparison is fair
and measures what will actually be served.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.adapters import registry
from pipeline.artifacts import ModelDir, inputs_key
from pipeline.config import Config, gate_metric_problems
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.ml.card_reader import card_task
from pipeline.ml.onnx_model import predict
from pipeline.ml.scoring import better_delta, evaluate, evaluate_values
from pipeline.stage import StageContext, StageResult, Status
from pipeline.workspace import Workspace, write_json

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


@dataclass(frozen=True)
class Check:
    metric: str
    kind: str
    value: float | None
    comparator: str
    bound: float
    passed: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"


@dataclass(frozen=True, kw_only=True)
class GateResult(StageResult):
    environment: str
    version: str
    checks: list[Check]
    candidate: dict[str, float]
    champion: dict[str, float] | None = None
    champion_version: str | None = None
    note: str = ""
    mode: str = "enforce"


def evaluate_model_dir(model: ModelDir, rows: list[list[Any]], labels: np.ndarray) -> dict[str, float]:
    """The task's metrics of the ONNX model in `model` on rows of JSON values (eval.json's)."""
    card = model.read_card()
    outputs = predict(model.onnx, card, rows)
    if outputs.values is not None:
        return evaluate_values(outputs.values, labels)
    assert outputs.probabilities is not None
    return evaluate(outputs.probabilities, labels, card["classes"])


def checks_for(config: Config, candidate: dict[str, float], champion: dict[str, float] | None) -> list[Check]:
    """Every configured check, in config order; a missing value fails (never a silent pass)."""
    checks: list[Check] = []
    for metric, bounds in config.gates.metrics.items():
        value = candidate.get(metric)
        if bounds.min is not None:
            checks.append(
                Check(metric, "min", value, ">=", bounds.min, value is not None and value >= bounds.min)
            )
        if bounds.max is not None:
            checks.append(
                Check(metric, "max", value, "<=", bounds.max, value is not None and value <= bounds.max)
            )
        if bounds.vs_champion is None or champion is None:
            continue
        old = champion.get(metric)
        delta = better_delta(metric, value, old) if value is not None and old is not None else None
        if bounds.vs_champion.min_delta is not None:
            limit = bounds.vs_champion.min_delta
            checks.append(
                Check(metric, "delta vs champion", delta, ">=", limit, delta is not None and delta >= limit)
            )
        if bounds.vs_champion.min_relative_delta is not None:
            limit = bounds.vs_champion.min_relative_delta
            relative = delta / abs(old) if delta is not None and old else None
            checks.append(
                Check(
                    metric,
                    "relative delta vs champion",
                    relative,
                    ">=",
                    limit,
                    relative is not None and relative >= limit,
                )
            )
    return checks


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
    key = inputs_key(config, ("gates",), model.version, champion_id)
    previous = model.read_optional(model.gate(config.name))
    if previous is not None and previous.get("inputs") == key and not fresh:
        reporter.note(f"{previous['note']}; reused the verdict of the same candidate, champion and gates")
        result = _result(config, model, previous, reused=True)
        _print_checks(result.checks, reporter)
        return result

    task = card_task(model.read_card())
    problems = gate_metric_problems(config, task)
    if problems:
        where = f"environments/{config.name}.yaml (or a file it extends)"
        raise StageError("; ".join(f"{where}: {problem}" for _, problem in problems))
    evaluation = model.read_evaluation()
    labels = np.asarray(evaluation["labels"])
    candidate = evaluate_model_dir(model, evaluation["rows"], labels)
    champion_metrics, note = _champion_metrics(config, mlflow, champion, model.version, evaluation, task=task)
    reporter.note(note)
    checks = checks_for(config, candidate, champion_metrics)
    failures = [
        f"{c.metric} {c.kind}: {_fmt(c.value)} {'<' if c.comparator == '>=' else '>'} bound {c.bound:g}"
        for c in checks
        if not c.passed
    ]
    status: Status = "pass" if not failures else ("warn" if config.gates.mode == "warn" else "fail")
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
        "failures": failures,
        "inputs": key,
    }
    write_json(model.gate(config.name), record)
    result = _result(config, model, record, reused=False)
    _print_checks(checks, reporter)
    if status == "warn":
        reporter.warn(f"gate mode is 'warn' for {config.name}: {len(failures)} failed check(s) let through")
    reporter.note(f"gate {status.upper()}: {len(checks) - len(failures)}/{len(checks)} checks passed")
    return result


def _print_checks(checks: list[Check], reporter: Reporter) -> None:
    reporter.table(
        ["metric", "check", "value", "comparator", "bound", "result"],
        [(c.metric, c.kind, c.value, c.comparator, c.bound, c.verdict) for c in checks],
    )


def _result(config: Config, model: ModelDir, record: dict[str, Any], *, reused: bool) -> GateResult:
    checks = [Check(**check) for check in record["checks"]]
    passed = sum(check.passed for check in checks)
    champion_version = record["champion_version"]
    versus = f" vs champion v{champion_version}" if champion_version else " (first deploy)"
    return GateResult(
        status=record["status"],
        headline=f"{record['status'].upper()} {passed}/{len(checks)} checks{versus}",
        failures=list(record["failures"]),
        reused=reused,
        artifacts={"gate": model.gate(config.name)},
        environment=config.name,
        version=model.version,
        checks=checks,
        candidate=record["candidate"],
        champion=record["champion"],
        champion_version=champion_version,
        note=record["note"],
        mode=record["mode"],
    )


def _champion_metrics(
    config: Config,
    mlflow: MlflowClient,
    champion: ModelVersion | None,
    version: str,
    evaluation: dict[str, Any],
    *,
    task: str,
) -> tuple[dict[str, float] | None, str]:
    if champion is None:
        note = (
            f"first deploy to {config.name}: no version holds alias {config.alias!r}, "
            "so only the absolute thresholds apply"
        )
        return None, note
    tags = registry.version_tags(champion)
    label = f"version {champion.version} (artifacts {tags.get('artifact_version', '?')})"
    with tempfile.TemporaryDirectory() as tmp:
        champion_dir = ModelDir(registry.download_version(mlflow, champion, Path(tmp)))
        champion_card = champion_dir.read_card()
        features = [f["name"] for f in champion_card["features"]]
        if features != evaluation["features"]:
            msg = (
                f"champion {label} serving {config.name} takes other features than the candidate; "
                "the two cannot be compared on the same rows"
            )
            raise StageError(msg)
        if card_task(champion_card) != task:
            msg = (
                f"champion {label} serving {config.name} is a {card_task(champion_card)} model and the "
                f"candidate a {task} one; their metrics cannot be compared"
            )
            raise StageError(msg)
        metrics = evaluate_model_dir(champion_dir, evaluation["rows"], np.asarray(evaluation["labels"]))
    same = " (the candidate is this same model)" if tags.get("artifact_version") == version else ""
    return metrics, f"champion: {label}, alias {config.alias!r}{same}"


def _fmt(value: float | None) -> str:
    return "no value" if value is None else f"{value:.4g}"


def run(ctx: StageContext) -> GateResult:
    return gate(ctx.config, ctx.workspace, ctx.reporter, model=ctx.model, fresh=ctx.args.fresh)
