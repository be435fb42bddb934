"""`python -m pipeline drift`: compare a sample of inputs (a file, the captured rows, or a live
service's counters) with the reference profile in the model card: PSI per feature with KS (numeric) or a
chi-square statistic (categorical, reported beside PSI), PSI of the predicted scores (classification: the
score; regression: the predicted value).

Bounds come from the environment's `drift:` section; each check prints value, bound and PASS/WARN/FAIL
(a `warn` level below the `fail` bound), and any FAIL fails the stage. Reports: reports/<env>/<run-id>/drift/ (drift.json, drift.png).
"""

from __future__ import annotations

import csv
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_service.contract.capture import pseudonym
from model_service.contract.card import Feature, ModelCard
from model_service.contract.monitoring import (
    BIN_LABEL,
    FEATURE_BIN_TOTAL,
    FEATURE_LABEL,
    SCORE_BIN_TOTAL,
)
from pipeline.adapters.service_process import loopback_url
from pipeline.artifacts import ModelDir
from pipeline.config import Config, ConfigError
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.ml.drift_checks import SCORE, Row, Sample, compare, reference_of
from pipeline.ml.onnx_model import predicted_scores
from pipeline.ml.profile import bin_counts, profile_counts, shares
from pipeline.quality.join import capture_directory
from pipeline.quality.replay import captured_rows
from pipeline.stage import Check, StageContext, StageResult, checked_status
from pipeline.workspace import Workspace, write_json

REPORT_FILE = "drift.json"
CHART_FILE = "drift.png"
CHART_FEATURES = 6


@dataclass(frozen=True, kw_only=True)
class DriftResult(StageResult):
    environment: str
    source: str
    rows: int
    report_dir: Path

    @property
    def flagged(self) -> list[str]:
        """Features (and `(score)`) with at least one FAIL, in card order."""
        return _flagged(self.checks)


def _flagged(checks: Sequence[Check]) -> list[str]:
    return list(dict.fromkeys(check.scope for check in checks if check.failed))


def drift_result(environment: str, sample: Sample, checks: list[Check], report_dir: Path) -> DriftResult:
    return DriftResult(
        status=checked_status(checks),
        headline=f"{sample.rows} rows from {sample.source}: flagged {', '.join(_flagged(checks)) or 'none'}",
        artifacts={"report": report_dir / REPORT_FILE, "chart": report_dir / CHART_FILE},
        checks=checks,
        environment=environment,
        source=sample.source,
        rows=sample.rows,
        report_dir=report_dir,
    )


# --- reading a sample ----------------------------------------------------------------------------


def _value(feature: Feature, value: Any, *, from_text: bool, where: str) -> Any:
    """One value as a client would send it, checked against the card's feature; StageError naming it."""
    if from_text:
        value = _parse_text(feature, value, where)
    if value is None:
        if not feature.nullable:
            raise StageError(
                f"{where}: feature {feature.name!r} is missing, and the card says it is not nullable"
            )
        return None
    if feature.type == "string":
        if not isinstance(value, str):
            raise StageError(f"{where}: feature {feature.name!r}: expected a string, got {value!r}")
        return value
    if feature.type == "bool":
        if not isinstance(value, bool):
            raise StageError(f"{where}: feature {feature.name!r}: expected true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StageError(f"{where}: feature {feature.name!r}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise StageError(f"{where}: feature {feature.name!r}: non-finite value {value!r} (missing is null)")
    return value


def _parse_text(feature: Feature, text: str, where: str) -> Any:
    """A CSV cell: empty is missing; numbers and booleans parsed by the feature's type."""
    if text == "":
        return None
    if feature.type == "string":
        return text
    if feature.type == "bool":
        lowered = text.strip().lower()
        if lowered in {"true", "1"}:
            return True
        if lowered in {"false", "0"}:
            return False
        raise StageError(f"{where}: feature {feature.name!r}: expected true/false, got {text!r}")
    try:
        return float(text)
    except ValueError:
        raise StageError(f"{where}: feature {feature.name!r}: expected a number, got {text!r}") from None


def read_rows(path: Path, features: Sequence[Feature]) -> list[Row]:
    """Rows of a CSV (header with the feature names; other columns ignored; an empty cell is missing) or
    JSONL (objects keyed by feature name, or lists in the card's feature order), in the card's feature
    order, each value checked against the card (type, nullable)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StageError(f"--input {path}: cannot read: {exc.strerror}") from None
    names = [f.name for f in features]
    rows: list[Row] = []
    if path.suffix in {".jsonl", ".ndjson"}:
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise StageError(f"{where}: not JSON ({exc})") from None
            if isinstance(record, dict):
                missing = [name for name in names if name not in record]
                if missing:
                    raise StageError(f"{where}: missing feature {missing[0]!r}")
                record = [record[name] for name in names]
            if not isinstance(record, list) or len(record) != len(names):
                raise StageError(f"{where}: expected an object or a list of {len(names)} values")
            rows.append(
                [_value(f, v, from_text=False, where=where) for f, v in zip(features, record, strict=True)]
            )
        return rows
    reader = csv.reader(text.splitlines())
    header = next(reader, None) or []
    missing = [name for name in names if name not in header]
    if missing:
        raise StageError(f"{path}: no column {missing[0]!r} (expected a header row with the feature names)")
    columns = [header.index(name) for name in names]
    for line_no, cells in enumerate(reader, start=2):
        if not cells:
            continue
        where = f"{path}:{line_no}"
        if len(cells) != len(header):
            raise StageError(f"{where}: expected {len(header)} columns, got {len(cells)}")
        rows.append(
            [_value(f, cells[i], from_text=True, where=where) for f, i in zip(features, columns, strict=True)]
        )
    return rows


def scrape_counts(metrics_url: str, card: ModelCard, sensitive: Mapping[str, str]) -> Sample:
    """The service's cumulative bin counters (every row since it started) in the card's bin order, read
    from its metrics port. A feature marked `hash` has its bins labelled by their pseudonym; one marked
    `drop` is not exported (None)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise StageError(f"--url {metrics_url}: /metrics did not answer: {exc}") from None
    reference = reference_of(card)
    features = {
        f.name: np.zeros(len(f.frequencies), dtype=np.int64)
        for f in reference.features
        if sensitive.get(f.name) != "drop"
    }
    labels = {
        name: {
            (pseudonym(str(b)) if sensitive.get(name) == "hash" else str(b)): b for b in range(len(counts))
        }
        for name, counts in features.items()
    }
    score = np.zeros(len(reference.score.frequencies), dtype=np.int64)
    found = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == FEATURE_BIN_TOTAL and sample.labels[FEATURE_LABEL] in features:
                name = sample.labels[FEATURE_LABEL]
                features[name][labels[name][sample.labels[BIN_LABEL]]] += int(sample.value)
                found = True
            elif sample.name == SCORE_BIN_TOTAL:
                score[int(sample.labels[BIN_LABEL])] += int(sample.value)
    if not found and features:
        raise StageError(
            f"--url {metrics_url}: no {FEATURE_BIN_TOTAL} in /metrics (a model card without a reference?)"
        )
    counts = [features.get(f.name) for f in reference.features]
    return Sample(f"live counters of {metrics_url}", int(score.sum()), counts, score)


def file_sample(path: Path, card: ModelCard, model: ModelDir) -> Sample:
    rows = read_rows(path, card.features)
    reference = reference_of(card)
    counts = [
        profile_counts(profile, [row[j] for row in rows]) for j, profile in enumerate(reference.features)
    ]
    predicted = predicted_scores(model.onnx, card, rows) if rows else np.zeros(0)
    return Sample(str(path), len(rows), counts, bin_counts(reference.score.edges, predicted), rows)


# --- comparing -----------------------------------------------------------------------------------


def training_columns(features: list[str], x_train: Any, card: ModelCard) -> dict[str, NDArray[np.float64]]:
    """The training values of the card's numeric features (a frame's columns by name, an array's by
    position in `features`), missing values dropped: what scipy's KS compares a sample with."""
    numeric = {f.name for f in card.features if f.numeric}
    by_name = hasattr(x_train, "columns")
    out = {}
    for j, name in enumerate(features):
        if name not in numeric:
            continue
        column = x_train[name] if by_name else x_train[:, j]
        values = np.asarray([np.nan if v is None else float(v) for v in column], dtype=np.float64)
        out[name] = values[~np.isnan(values)]
    return out


def _training_columns(
    config: Config, workspace: Workspace, card: ModelCard, reporter: Reporter
) -> dict[str, NDArray[np.float64]] | None:
    """The training rows behind the card, when the configured data is the card's (scipy's KS needs them)."""
    from pipeline.ml.data import load_dataset  # noqa: PLC0415

    data = load_dataset(config.data, workspace.root, config.model.task)
    if card.lineage is None or data.sha256 != card.lineage.data_sha256:
        reporter.warn("the configured data is not the model's training data: KS is computed at the bin edges")
        return None
    return training_columns(list(data.features), data.train, card)


# --- the stage -----------------------------------------------------------------------------------


def drift(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    model: ModelDir,
    input_path: Path | None = None,
    url: str | None = None,
    allow_remote: bool = False,
    capture_dir: Path | None = None,
) -> DriftResult:
    """Compare a sample (`input_path`, the counters on a service's metrics port at `url`, the rows captured
    in `capture_dir`, else the model's own evaluation rows) with the reference profile in `model`'s card.
    A feature the capture hashed or dropped is not checked (its replayed value is the card's default)."""
    if input_path is not None and url is not None:
        raise ConfigError("drift: give --input FILE or --url URL, not both")
    card = model.read_card()
    if card.reference is None:
        raise StageError(
            f"{model.card} has no reference profile (exported before drift monitoring); "
            f"re-export it with `python -m pipeline export --env {config.name} --fresh`"
        )
    if url is not None:
        sensitive = config.drift.log_inputs.sensitive
        sample = scrape_counts(loopback_url(url, option="--url", allow_remote=allow_remote), card, sensitive)
        train_columns = None
        dropped = [name for name, action in sensitive.items() if action == "drop"]
        if dropped:
            reporter.note(
                f"not exported by the service (drift.log_inputs.sensitive: drop): {', '.join(dropped)}"
            )
    else:
        if capture_dir is not None:
            replay = captured_rows(capture_dir, card, config.drift.log_inputs.sensitive)
            input_path = workspace.run_dir(config) / "drift" / "captured-rows.jsonl"
            _as_jsonl(card.feature_names, replay.rows, input_path)
            reporter.note(replay.summary(capture_dir))
        elif input_path is None:
            input_path = _eval_as_jsonl(model, workspace.run_dir(config) / "drift")
            reporter.note(f"no --input or --url: checking the model's own evaluation rows ({input_path})")
        sample = file_sample(input_path, card, model)
        if capture_dir is not None:
            redacted = config.drift.log_inputs.sensitive
            counts = [
                None if f.name in redacted else c
                for f, c in zip(card.features, sample.feature_counts, strict=True)
            ]
            sample = replace(sample, source=f"captured rows of {capture_dir}", feature_counts=counts)
        train_columns = _training_columns(config, workspace, card, reporter)
    if sample.rows < config.drift.min_rows:
        raise StageError(
            f"{sample.source}: {sample.rows} rows < drift.min_rows {config.drift.min_rows}: "
            "too few to tell drift from noise"
        )
    report_dir = workspace.run_dir(config) / "drift"
    result = drift_result(config.name, sample, compare(config, card, sample, train_columns), report_dir)
    reporter.note(f"{sample.rows} rows from {sample.source} vs the reference of version {card.version}")
    reporter.verdict("drift", result)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        report_dir / REPORT_FILE,
        {
            "environment": config.name,
            "model_version": card.version,
            "source": sample.source,
            "rows": sample.rows,
            "status": result.status,
            "flagged": result.flagged,
            "checks": [asdict(check) for check in result.checks],
        },
    )
    chart(card, sample, result, report_dir / CHART_FILE)
    flagged = ", ".join(result.flagged) or "none"
    reporter.note(f"flagged: {flagged}; report {report_dir / REPORT_FILE} (chart {CHART_FILE})")
    return result


def _eval_as_jsonl(model: ModelDir, out_dir: Path) -> Path:
    """The evaluation rows as JSONL objects: strings, booleans and nulls kept as a client sends them."""
    evaluation = model.read_evaluation()
    return _as_jsonl(evaluation["features"], evaluation["rows"], out_dir / "eval-rows.jsonl")


def _as_jsonl(features: Sequence[str], rows: Sequence[Sequence[Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(dict(zip(features, row, strict=True))) for row in rows]
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def chart(card: ModelCard, sample: Sample, result: DriftResult, path: Path) -> None:
    """Reference vs sample shares per bin for the features with the largest PSI."""
    import matplotlib as mpl  # noqa: PLC0415  (slow import, only here)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    psis = {
        c.scope: c.value
        for c in result.checks
        if c.metric == "psi" and c.scope != SCORE and c.value is not None
    }
    top = sorted(psis, key=lambda name: -psis[name])[:CHART_FEATURES]
    profiles = reference_of(card).features
    index = {f.name: j for j, f in enumerate(profiles)}
    figure, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for axis, name in zip(axes.ravel(), top, strict=False):
        profile = profiles[index[name]]
        bins = np.arange(len(profile.frequencies))
        axis.bar(bins - 0.2, profile.frequencies, width=0.4, label="reference", color="tab:blue")
        axis.bar(
            bins + 0.2,
            shares(np.asarray(sample.feature_counts[index[name]])),
            width=0.4,
            label="sample",
            color="tab:orange",
        )
        verdict = next(c.result.upper() for c in result.checks if c.scope == name and c.metric == "psi")
        axis.set_title(f"{name}\nPSI {psis[name]:.3f} {verdict}", fontsize=9)
        axis.set_xlabel("reference bin (quantiles of the training rows)", fontsize=8)
    axes.ravel()[0].legend(fontsize=8)
    figure.suptitle(f"{result.environment}: most drifted features ({result.rows} rows, {result.status})")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def run(ctx: StageContext) -> DriftResult:
    args = ctx.args
    # A target off loopback is refused before any work (training included).
    url = None if args.url is None else loopback_url(args.url, option="--url", allow_remote=args.allow_remote)
    model = ctx.served_model()
    c, w, r = ctx.config, ctx.workspace, ctx.reporter
    capture = capture_directory(c.capture.directory, w.root) if args.from_capture else None
    return drift(
        c,
        w,
        r,
        model=model,
        input_path=args.input,
        url=url,
        allow_remote=args.allow_remote,
        capture_dir=capture,
    )
