"""`python -m pipeline drift`: compare a sample of inputs (a file, or a live service's counters) with the
reference profile in the model card: PSI and KS per feature, PSI of the predicted scores.

Bounds come from the environment's `drift:` section; each check prints value, bounds and PASS/WARN/FAIL
(E15), and any FAIL fails the stage. Reports: reports/<env>/<run-id>/drift/ (drift.json, drift.png).
"""

from __future__ import annotations

import csv
import json
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
    scores,
)
from pipeline.adapters.service_process import loopback_url
from pipeline.artifacts import ModelDir
from pipeline.config import Config, ConfigError, DriftLevels
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.ml.profile import bin_counts, binned_ks, shares
from pipeline.stage import StageResult
from pipeline.workspace import Workspace, write_json

REPORT_FILE = "drift.json"
CHART_FILE = "drift.png"
CHART_FEATURES = 6
SCORE = "(score)"
"""Name of the predicted-score row in the table."""

Verdict = Literal["PASS", "WARN", "FAIL"]


@dataclass(frozen=True)
class Check:
    feature: str
    statistic: str
    """`psi`, `ks` (scipy's two-sample test against the training rows) or `ks_binned` (at the bin edges)."""
    value: float
    warn: float
    fail: float

    @property
    def verdict(self) -> Verdict:
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


@dataclass(frozen=True)
class Sample:
    """What is compared: shares per reference bin, plus raw rows when they are known (files)."""

    source: str
    rows: int
    feature_counts: Sequence[NDArray[np.int64] | None]
    """Per feature in card order; None for a feature the service does not export (sensitive: drop)."""
    score_counts: NDArray[np.int64] | None
    raw: NDArray[np.float64] | None = None


# --- reading a sample ----------------------------------------------------------------------------


def read_rows(path: Path, features: list[str]) -> NDArray[np.float64]:
    """Rows of a CSV (header with the feature names; other columns ignored) or JSONL (objects keyed by
    feature name, or lists in the card's feature order), in the card's feature order."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StageError(f"--input {path}: cannot read: {exc.strerror}") from None
    if path.suffix in {".jsonl", ".ndjson"}:
        rows = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if isinstance(record, dict):
                missing = [name for name in features if name not in record]
                if missing:
                    raise StageError(f"{path}:{line_no}: missing feature {missing[0]!r}")
                record = [record[name] for name in features]
            if not isinstance(record, list) or len(record) != len(features):
                raise StageError(f"{path}:{line_no}: expected an object or a list of {len(features)} numbers")
            rows.append([float(value) for value in record])
        return np.asarray(rows, dtype=np.float64).reshape(-1, len(features))
    reader = csv.reader(text.splitlines())
    header = next(reader, None) or []
    missing = [name for name in features if name not in header]
    if missing:
        raise StageError(f"{path}: no column {missing[0]!r} (expected a header row with the feature names)")
    columns = [header.index(name) for name in features]
    try:
        values = [[float(row[i]) for i in columns] for row in reader if row]
    except ValueError as exc:
        raise StageError(f"{path}: {exc}") from None
    return np.asarray(values, dtype=np.float64).reshape(-1, len(features))


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
        f["name"]: np.zeros(len(f["edges"]) - 1, dtype=np.int64)
        for f in reference["features"]
        if sensitive.get(f["name"]) != "drop"
    }
    labels = {
        name: {
            (pseudonym(str(b)) if sensitive.get(name) == "hash" else str(b)): b for b in range(len(counts))
        }
        for name, counts in features.items()
    }
    score = np.zeros(len(reference["score"]["edges"]) - 1, dtype=np.int64)
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
    from pipeline.stages.export import predict_onnx  # noqa: PLC0415  (onnxruntime: slow import)

    features = [f["name"] for f in card["features"]]
    rows = read_rows(path, features)
    if not np.all(np.isfinite(rows)):
        raise StageError(f"{path}: rows hold non-finite values")
    reference = card["reference"]
    counts = [bin_counts(f["edges"], rows[:, j]) for j, f in enumerate(reference["features"])]
    predicted = scores(predict_onnx(model.onnx, rows)) if len(rows) else np.zeros(0)
    return Sample(str(path), len(rows), counts, bin_counts(reference["score"]["edges"], predicted), rows)


# --- comparing -----------------------------------------------------------------------------------


def compare(
    config: Config, card: dict[str, Any], sample: Sample, train_rows: NDArray[np.float64] | None
) -> list[Check]:
    """Checks per feature (PSI, KS) and for the score (PSI), each with its bounds."""
    from scipy.stats import ks_2samp  # noqa: PLC0415

    drift = config.drift
    checks = []
    for j, profile in enumerate(card["reference"]["features"]):
        name = profile["name"]
        counts = sample.feature_counts[j]
        if counts is None:
            continue
        observed = shares(counts)
        checks.append(_check(name, "psi", psi(profile["frequencies"], observed), drift.bounds(name, "psi")))
        if sample.raw is not None and train_rows is not None:
            ks = float(ks_2samp(train_rows[:, j], sample.raw[:, j]).statistic)
            checks.append(_check(name, "ks", ks, drift.bounds(name, "ks")))
        else:
            ks = binned_ks(profile["frequencies"], observed)
            checks.append(_check(name, "ks_binned", ks, drift.bounds(name, "ks")))
    if sample.score_counts is not None and sample.score_counts.sum() > 0:
        score_psi = psi(card["reference"]["score"]["frequencies"], shares(sample.score_counts))
        checks.append(_check(SCORE, "psi", score_psi, drift.score_psi))
    return checks


def _check(feature: str, statistic: str, value: float, levels: DriftLevels) -> Check:
    return Check(feature, statistic, value, levels.warn, levels.fail)


def _training_rows(config: Config, workspace: Workspace, card: dict[str, Any], reporter: Reporter) -> Any:
    """The training rows behind the card, when the configured data is the card's (scipy's KS needs them)."""
    from pipeline.ml.data import load_dataset  # noqa: PLC0415

    data = load_dataset(config.data, workspace.root)
    if data.sha256 != card.get("lineage", {}).get("data_sha256"):
        reporter.warn("the configured data is not the model's training data: KS is computed at the bin edges")
        return None
    return data.x_train


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
        train_rows = None
        dropped = [name for name, action in sensitive.items() if action == "drop"]
        if dropped:
            reporter.note(
                f"not exported by the service (drift.log_inputs.sensitive: drop): {', '.join(dropped)}"
            )
    else:
        if input_path is None:
            input_path = _eval_as_csv(model, workspace.run_dir(config) / "drift")
            reporter.note(f"no --input or --url: checking the model's own evaluation rows ({input_path})")
        sample = file_sample(input_path, card, model)
        train_rows = _training_rows(config, workspace, card, reporter)
    if sample.rows < config.drift.min_rows:
        raise StageError(
            f"{sample.source}: {sample.rows} rows < drift.min_rows {config.drift.min_rows}: "
            "too few to tell drift from noise"
        )
    report_dir = workspace.run_dir(config) / "drift"
    result = drift_result(config.name, sample, compare(config, card, sample, train_rows), report_dir)
    reporter.note(f"{sample.rows} rows from {sample.source} vs the reference of version {card['version']}")
    reporter.table(
        ["feature", "statistic", "value", "warn at", "fail above", "result"],
        [(c.feature, c.statistic, round(c.value, 4), c.warn, c.fail, c.verdict) for c in result.checks],
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


def _eval_as_csv(model: ModelDir, out_dir: Path) -> Path:
    evaluation = model.read_evaluation()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "eval-rows.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(evaluation["features"])
        writer.writerows(evaluation["rows"])
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
