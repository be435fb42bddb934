"""`python -m pipeline drift`: compare a sample of inputs (a file, or a live service's counters) with the
reference profile in the model card: PSI per feature with KS (numeric) or a chi-square statistic (categorical,
reported beside PSI), PSI of the predicted scores (classification: the score; regression: the predicted value).

Bounds come from the environment's `drift:` section; each check prints value, bounds and PASS/WARN/FAIL
(E15), and any FAIL fails the stage. Reports: reports/<env>/<run-id>/drift/ (drift.json, drift.png).
"""

from __future__ import annotations

import csv
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from model_service.monitoring import (
    BIN_LABEL,
    FEATURE_BIN_TOTAL,
    FEATURE_LABEL,
    SCORE_BIN_TOTAL,
    pseudonym,
    psi,
)
from pipeline.adapters.service_process import loopback_url
from pipeline.artifacts import ModelDir
from pipeline.config import Config, ConfigError, DriftLevels
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.ml.card_reader import Feature, card_features
from pipeline.ml.onnx_model import predicted_scores
from pipeline.ml.profile import (
    bin_counts,
    binned_ks,
    chi_square,
    is_categorical,
    profile_counts,
    shares,
    value_bins,
)
from pipeline.stage import StageContext, StageResult
from pipeline.workspace import Workspace, write_json

REPORT_FILE = "drift.json"
CHART_FILE = "drift.png"
CHART_FEATURES = 6
SCORE = "(score)"
"""Name of the predicted-score row in the table."""

Verdict = Literal["PASS", "WARN", "FAIL", "INFO"]


@dataclass(frozen=True)
class Check:
    feature: str
    statistic: str
    """`psi`; `ks` (scipy's two-sample test against the training rows) or `ks_binned` (at the bin edges)
    for numeric features; `chi2` (Pearson's, against the reference shares) for categorical ones."""
    value: float
    warn: float | None
    """None: reported beside the gated statistics, not gated itself (chi2)."""
    fail: float | None
    detail: str = ""
    """What the value alone does not say (chi2: its p-value and degrees of freedom)."""

    @property
    def verdict(self) -> Verdict:
        if self.warn is None or self.fail is None:
            return "INFO"
        if self.value > self.fail:
            return "FAIL"
        return "WARN" if self.value >= self.warn else "PASS"


@dataclass(frozen=True, kw_only=True)
class DriftResult(StageResult):
    environment: str
    source: str
    rows: int
    checks: list[Check]
    report_dir: Path

    @property
    def flagged(self) -> list[str]:
        """Features (and `(score)`) with at least one FAIL, in card order."""
        return list(dict.fromkeys(c.feature for c in self.checks if c.verdict == "FAIL"))


def drift_result(environment: str, sample: Sample, checks: list[Check], report_dir: Path) -> DriftResult:
    failed = [c for c in checks if c.verdict == "FAIL"]
    flagged = list(dict.fromkeys(c.feature for c in failed))
    return DriftResult(
        status="fail" if failed else "pass",
        headline=f"{sample.rows} rows from {sample.source}: flagged {', '.join(flagged) or 'none'}",
        failures=[f"{c.feature} {c.statistic} {c.value:.3g} > fail {c.fail:g}" for c in failed],
        artifacts={"report": report_dir / REPORT_FILE, "chart": report_dir / CHART_FILE},
        environment=environment,
        source=sample.source,
        rows=sample.rows,
        checks=checks,
        report_dir=report_dir,
    )


Row = list[Any]
"""One row of JSON values (numbers, strings, true/false, None for missing) in the card's feature order."""


@dataclass(frozen=True)
class Sample:
    """What is compared: counts per reference bin (card order), plus the rows when they are known (files)."""

    source: str
    rows: int
    feature_counts: Sequence[NDArray[np.int64] | None]
    """Per feature in card order; None for a feature the service does not export (sensitive: drop)."""
    score_counts: NDArray[np.int64] | None
    raw: list[Row] | None = None


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


def read_rows(path: Path, features: list[Feature]) -> list[Row]:
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


def _reference_order(card: dict[str, Any]) -> list[int]:
    """For each reference profile, the position of its feature in the card's feature list."""
    position = {f.name: j for j, f in enumerate(card_features(card))}
    return [position[profile["name"]] for profile in card["reference"]["features"]]


def scrape_counts(metrics_url: str, card: dict[str, Any], sensitive: Mapping[str, str]) -> Sample:
    """The service's cumulative bin counters (every row since it started) in the card's bin order, read
    from its metrics port. A feature marked `hash` has its bins labelled by their pseudonym; one marked
    `drop` is not exported (None)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise StageError(f"--url {metrics_url}: /metrics did not answer: {exc}") from None
    reference = card["reference"]
    features = {
        f["name"]: np.zeros(len(f["frequencies"]), dtype=np.int64)
        for f in reference["features"]
        if sensitive.get(f["name"]) != "drop"
    }
    labels = {
        name: {
            (pseudonym(str(b)) if sensitive.get(name) == "hash" else str(b)): b for b in range(len(counts))
        }
        for name, counts in features.items()
    }
    score = np.zeros(len(reference["score"]["frequencies"]), dtype=np.int64)
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
    counts = [features.get(f["name"]) for f in reference["features"]]
    return Sample(f"live counters of {metrics_url}", int(score.sum()), counts, score)


def file_sample(path: Path, card: dict[str, Any], model: ModelDir) -> Sample:
    rows = read_rows(path, card_features(card))
    reference = card["reference"]
    counts = [
        profile_counts(profile, [row[j] for row in rows])
        for profile, j in zip(reference["features"], _reference_order(card), strict=True)
    ]
    predicted = predicted_scores(model.onnx, card, rows) if rows else np.zeros(0)
    return Sample(str(path), len(rows), counts, bin_counts(reference["score"]["edges"], predicted), rows)


# --- comparing -----------------------------------------------------------------------------------


def compare(
    config: Config, card: dict[str, Any], sample: Sample, train_columns: dict[str, NDArray[np.float64]] | None
) -> list[Check]:
    """Checks per feature (PSI; numeric: KS; categorical: chi-square, reported) and for the score (PSI),
    each with its bounds. `train_columns`: the training values of numeric features (missing dropped)."""
    from scipy.stats import ks_2samp  # noqa: PLC0415

    drift = config.drift
    checks = []
    for profile, j, counts in zip(
        card["reference"]["features"], _reference_order(card), sample.feature_counts, strict=True
    ):
        name = profile["name"]
        if counts is None:  # not exported by the service (drift.log_inputs.sensitive: drop)
            continue
        observed = shares(counts)
        checks.append(_check(name, "psi", psi(profile["frequencies"], observed), drift.bounds(name, "psi")))
        if is_categorical(profile):
            statistic, p_value = chi_square(profile["frequencies"], counts)
            dof = len(counts) - 1
            checks.append(Check(name, "chi2", statistic, None, None, f"p {p_value:.3g}, dof {dof}"))
            continue
        if sample.raw is not None and train_columns is not None and name in train_columns:
            values = np.asarray([row[j] for row in sample.raw if row[j] is not None], dtype=np.float64)
            ks = float(ks_2samp(train_columns[name], values).statistic) if len(values) else 1.0
            checks.append(_check(name, "ks", ks, drift.bounds(name, "ks")))
        else:
            # KS compares value distributions: the missing bin is PSI's to judge.
            bins = value_bins(profile)
            ks = binned_ks(shares(np.asarray(profile["frequencies"][:bins])), shares(counts[:bins]))
            checks.append(_check(name, "ks_binned", ks, drift.bounds(name, "ks")))
    if sample.score_counts is not None and sample.score_counts.sum() > 0:
        score_psi = psi(card["reference"]["score"]["frequencies"], shares(sample.score_counts))
        checks.append(_check(SCORE, "psi", score_psi, drift.score_psi))
    return checks


def _check(feature: str, statistic: str, value: float, levels: DriftLevels) -> Check:
    return Check(feature, statistic, value, levels.warn, levels.fail)


def training_columns(
    features: list[str], x_train: Any, card: dict[str, Any]
) -> dict[str, NDArray[np.float64]]:
    """The training values of the card's numeric features (a frame's columns by name, an array's by
    position in `features`), missing values dropped: what scipy's KS compares a sample with."""
    numeric = {f.name for f in card_features(card) if f.type != "string"}
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
    config: Config, workspace: Workspace, card: dict[str, Any], reporter: Reporter
) -> dict[str, NDArray[np.float64]] | None:
    """The training rows behind the card, when the configured data is the card's (scipy's KS needs them)."""
    from pipeline.ml.data import load_dataset  # noqa: PLC0415

    data = load_dataset(config.data, workspace.root, config.model.task)
    if data.sha256 != card.get("lineage", {}).get("data_sha256"):
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
) -> DriftResult:
    """Compare a sample (`input_path`, the counters on a service's metrics port at `url`, else the model's
    own evaluation rows) with the reference profile in `model`'s card."""
    if input_path is not None and url is not None:
        raise ConfigError("drift: give --input FILE or --url URL, not both")
    card = model.read_card()
    if "reference" not in card:
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
        if input_path is None:
            input_path = _eval_as_jsonl(model, workspace.run_dir(config) / "drift")
            reporter.note(f"no --input or --url: checking the model's own evaluation rows ({input_path})")
        sample = file_sample(input_path, card, model)
        train_columns = _training_columns(config, workspace, card, reporter)
    if sample.rows < config.drift.min_rows:
        raise StageError(
            f"{sample.source}: {sample.rows} rows < drift.min_rows {config.drift.min_rows}: "
            "too few to tell drift from noise"
        )
    report_dir = workspace.run_dir(config) / "drift"
    result = drift_result(config.name, sample, compare(config, card, sample, train_columns), report_dir)
    reporter.note(f"{sample.rows} rows from {sample.source} vs the reference of version {card['version']}")
    reporter.table(
        ["feature", "statistic", "value", "warn at", "fail above", "result", "detail"],
        [
            (c.feature, c.statistic, round(c.value, 4), c.warn, c.fail, c.verdict, c.detail)
            for c in result.checks
        ],
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        report_dir / REPORT_FILE,
        {
            "environment": config.name,
            "model_version": card["version"],
            "source": sample.source,
            "rows": sample.rows,
            "status": result.status,
            "flagged": result.flagged,
            "checks": [{**asdict(c), "verdict": c.verdict} for c in result.checks],
        },
    )
    chart(card, sample, result, report_dir / CHART_FILE)
    flagged = ", ".join(result.flagged) or "none"
    reporter.note(f"flagged: {flagged}; report {report_dir / REPORT_FILE} (chart {CHART_FILE})")
    return result


def _eval_as_jsonl(model: ModelDir, out_dir: Path) -> Path:
    """The evaluation rows as JSONL objects: strings, booleans and nulls kept as a client sends them."""
    evaluation = model.read_evaluation()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "eval-rows.jsonl"
    lines = [json.dumps(dict(zip(evaluation["features"], row, strict=True))) for row in evaluation["rows"]]
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def chart(card: dict[str, Any], sample: Sample, result: DriftResult, path: Path) -> None:
    """Reference vs sample shares per bin for the features with the largest PSI."""
    import matplotlib as mpl  # noqa: PLC0415  (slow import, only here)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    psis = {c.feature: c.value for c in result.checks if c.statistic == "psi" and c.feature != SCORE}
    top = sorted(psis, key=lambda name: -psis[name])[:CHART_FEATURES]
    index = {f["name"]: j for j, f in enumerate(card["reference"]["features"])}
    figure, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for axis, name in zip(axes.ravel(), top, strict=False):
        profile = card["reference"]["features"][index[name]]
        bins = np.arange(len(profile["frequencies"]))
        axis.bar(bins - 0.2, profile["frequencies"], width=0.4, label="reference", color="tab:blue")
        axis.bar(
            bins + 0.2,
            shares(np.asarray(sample.feature_counts[index[name]])),
            width=0.4,
            label="sample",
            color="tab:orange",
        )
        verdict = next(c.verdict for c in result.checks if c.feature == name and c.statistic == "psi")
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
    return drift(c, w, r, model=model, input_path=args.input, url=url, allow_remote=args.allow_remote)
