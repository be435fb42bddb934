"""`python -m pipeline evaluate`: live quality. The rows the service captured, joined with the labels that
arrived for them (`pipeline feedback`, `POST /v1/feedback`), scored per model version with the gate's metric
code and judged with the environment's gate rows: absolute bounds, and `vs_champion` against the version's
own offline evaluation. Before enough labels arrive: inconclusive, with the CBPE estimate from the served
probabilities beside it (it warns at most, it never fails a version).

Writes reports/<env>/<run-id>/evaluate/ (quality.json: per version and per day; quality.png) and the
gauges file in the capture directory (`live_quality.prom`: the metrics port appends it to /metrics, the
PrometheusRule alerts on a failing verdict). A failing version fails the stage (exit 1): the scheduled
check acts on that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from model_service.contract.capture import (
    LABELS_FILE,
    LIVE_QUALITY_FILE,
    CaptureError,
    LabelStore,
    read_capture,
)
from model_service.contract.card import ModelCard
from pipeline.adapters import registry
from pipeline.artifacts import ModelDir
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.quality.gauges import write_gauges
from pipeline.quality.join import Served, capture_directory, group, scored
from pipeline.quality.report import Day, chart, day_checks, days_of
from pipeline.quality.verdict import Judged, judge
from pipeline.stage import Check, StageContext, StageResult, Status
from pipeline.workspace import Workspace, write_json

REPORT_FILE = "quality.json"
CHART_FILE = "quality.png"


@dataclass(frozen=True, kw_only=True)
class EvaluateResult(StageResult):
    environment: str
    verdicts: Mapping[str, str]
    """Each captured version's verdict: pass, warn, fail or inconclusive."""
    gauges: Path


def _version_folder(config: Config, workspace: Workspace, version: str) -> ModelDir | None:
    """The exported folder of artifact version `version`: the workspace's, else downloaded from the
    registry; None when neither holds it."""
    model = workspace.model_dir(config, version)
    if model.exported():
        return model
    mlflow = registry.client(config, workspace)
    found = registry.find_version(mlflow, config.model.name, version)
    return None if found is None else registry.version_model_dir(mlflow, config, workspace, found)


def offline_metrics(config: Config, model: ModelDir, card: ModelCard) -> tuple[dict[str, float] | None, str]:
    """The version's offline evaluation and where it comes from: the gate's figures for this environment
    (its ONNX file on the evaluation rows), else its card's (the training run's, on the same rows)."""
    record = model.read_optional(model.gate(config.name))
    if record is not None and record.get("candidate"):
        return dict(record["candidate"]), f"the gate's evaluation of {card.version} for {config.name}"
    if card.metrics:
        return dict(card.metrics), f"the card of {card.version} (the training run's evaluation rows)"
    return None, f"no offline metrics for {card.version} (neither a gate record nor card metrics)"


def _unscorable(served: Served, why: str) -> Judged:
    check = Check(
        scope=served.version, metric="labelled rows", value=served.labelled, result="inconclusive", note=why
    )
    return Judged(
        model=served.model,
        version=served.version,
        rows=served.rows,
        labelled=served.labelled,
        unusable=0,
        live={},
        estimate=None,
        offline=None,
        offline_source="",
        checks=[check],
    )


def evaluate(
    config: Config, workspace: Workspace, reporter: Reporter, *, capture_dir: Path
) -> EvaluateResult:
    """Judge every model version the capture in `capture_dir` holds rows of, with their labels."""
    if not capture_dir.is_dir():
        raise StageError(
            f"{capture_dir}: no capture directory; serve {config.name} with capture on "
            f"(environments/{config.name}.yaml: capture) and send traffic first"
        )
    labels_path = capture_dir / LABELS_FILE
    labels: dict[str, object] = {}
    if labels_path.is_file():
        store = LabelStore(labels_path)
        try:
            labels = store.labels()
        finally:
            store.close()
    try:
        served = group(read_capture(capture_dir), labels)  # streamed: one file's lines in memory at a time
    except CaptureError as exc:
        raise StageError(f"{exc}; move the file aside or delete the line, then run evaluate again") from None
    others = sorted({model for model, _ in served if model != config.model.name})
    if others:
        reporter.note(f"left out: rows of other models ({', '.join(others)}) in {capture_dir}")
    judged: list[Judged] = []
    days: list[Day] = []
    for (model, version), rows in served.items():
        if model != config.model.name:
            continue
        folder = _version_folder(config, workspace, version)
        if folder is None:
            why = f"no card of {version} in the workspace or the registry: its rows cannot be scored"
            judged.append(_unscorable(rows, why))
            continue
        card = folder.read_card()
        offline, source = offline_metrics(config, folder, card)
        try:
            part = scored(rows, card)
        except ValueError as exc:
            judged.append(_unscorable(rows, str(exc)))
            continue
        one = judge(config, card, part, model=model, version=version, offline=offline, offline_source=source)
        judged.append(one)
        days += days_of(rows, card)
        reporter.note(
            f"{version}: {one.labelled} labelled of {one.rows} served rows"
            + (f" ({one.unusable} labels name no class of the card: left out)" if one.unusable else "")
            + f"; offline: {source}"
        )
        if one.estimate is not None:
            shown = ", ".join(f"{m} {v:.4g}" for m, v in one.estimate.metrics.items())
            reporter.note(f"{version}: {shown} ({one.estimate.basis}; not a measurement)")
    return _finish(config, workspace, reporter, judged=judged, days=days, capture_dir=capture_dir)


def _finish(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    judged: list[Judged],
    days: list[Day],
    capture_dir: Path,
) -> EvaluateResult:
    metrics = list(config.gates.metrics)
    checks = [check for one in judged for check in one.checks] + day_checks(days, metrics)
    verdicts = {one.version: one.verdict for one in judged}
    status: Status = (
        "fail" if "fail" in verdicts.values() else "warn" if "warn" in verdicts.values() else "pass"
    )
    report_dir = workspace.run_dir(config) / "evaluate"
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        report_dir / REPORT_FILE,
        {
            "environment": config.name,
            "status": status,
            "min_labelled_rows": config.quality.min_labelled_rows,
            "versions": [
                {
                    "model": one.model,
                    "version": one.version,
                    "verdict": one.verdict,
                    "served": one.rows,
                    "labelled": one.labelled,
                    "unusable_labels": one.unusable,
                    "live": one.live,
                    "estimate": None
                    if one.estimate is None
                    else {"metrics": one.estimate.metrics, "basis": one.estimate.basis},
                    "offline": one.offline,
                    "offline_source": one.offline_source,
                    "checks": [asdict(check) for check in one.checks],
                }
                for one in judged
            ],
            "days": [asdict(day) for day in days],
        },
    )
    chart(config, judged, days, report_dir / CHART_FILE)
    gauges = capture_dir / LIVE_QUALITY_FILE
    write_gauges(gauges, judged)
    summary = "; ".join(f"{one.version} {one.verdict} ({one.labelled}/{one.rows} labelled)" for one in judged)
    result = EvaluateResult(
        status=status,
        headline=summary or "no captured rows of this model",
        checks=checks,
        artifacts={"report": report_dir / REPORT_FILE, "chart": report_dir / CHART_FILE, "gauges": gauges},
        environment=config.name,
        verdicts=verdicts,
        gauges=gauges,
    )
    reporter.verdict("evaluate", result)
    reporter.note(f"gauges: {gauges}; report {report_dir / REPORT_FILE} (chart {CHART_FILE})")
    return result


def run(ctx: StageContext) -> EvaluateResult:
    directory = capture_directory(ctx.config.capture.directory, ctx.workspace.root)
    return evaluate(ctx.config, ctx.workspace, ctx.reporter, capture_dir=directory)
