"""`python -m pipeline batch`: score a table (CSV or Parquet, a file or a folder of parts) with the release
serving the environment, and prove the scores are the service's (docs/batch.md).

The model is the registry version holding alias `<env>`, checked as the service checks it; rows are
validated by the service's parser and the invalid ones written to `rejects/` with their reason; every
score row carries the model version and its row key. Then the checks: rows read, rejects share and
score range within `batch.bounds`, drift against the card's reference like `pipeline drift`, and the
service's answers on a sample equal to the batch's within `export.parity`. The output folder appears
whole or not at all; `_SUCCESS` in it says every check passed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from model_service.contract.card import ModelCard
from pipeline.adapters.service_process import loopback_url, running_service
from pipeline.batch import parity
from pipeline.batch.embedded import SCORES_DIR, run_embedded
from pipeline.batch.release import Release, serving_release
from pipeline.batch.scoring import (
    MODEL_VERSION,
    PREDICTION,
    PROBABILITY_PREFIX,
    REASON,
    REGISTRY_VERSION,
    SOURCE_FILE,
    SOURCE_ROW,
    VALUES,
    Scorer,
    Totals,
)
from pipeline.batch.source import Source, open_source
from pipeline.config import Config, ConfigError
from pipeline.console import Reporter
from pipeline.ml.drift_checks import Sample, compare
from pipeline.stage import Check, StageContext, StageResult, checked_status
from pipeline.workspace import Workspace, write_json

SUMMARY_FILE = "batch.json"
SUCCESS_FILE = "_SUCCESS"
RESERVED = (SOURCE_FILE, SOURCE_ROW, MODEL_VERSION, REGISTRY_VERSION, PREDICTION, REASON, VALUES)
API_KEY_VARIABLE = "BATCH_API_KEY"
"""The key the parity check sends to a service given with `--url` when `service.auth` is `api-key`."""


@dataclass(frozen=True, kw_only=True)
class BatchResult(StageResult):
    environment: str
    engine: str
    output: Path
    rows: int
    rejected: int
    registry_version: str


def output_folder(text: Path, today: datetime | None = None) -> Path:
    """`--output` with `{date}` replaced by today's UTC date; ConfigError when it exists and is not empty."""
    date = (today or datetime.now(UTC)).strftime("%Y-%m-%d")
    folder = Path(str(text).replace("{date}", date))
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(
            f"--output {folder}: exists and is not an empty folder; a batch never overwrites one, give a new "
            "path (`{date}` in it becomes today's date)"
        )
    return folder


def key_schema(config: Config, source: Source) -> pa.Schema:
    """The key columns with their types as read: Parquet's own, CSV's text."""
    names = config.batch.key_columns
    clash = sorted(set(names) & {*RESERVED, *_probability_names(names)})
    if clash:
        raise ConfigError(f"batch.key_columns: {clash[0]!r} is a column the batch writes itself; rename it")
    if source.format == "csv":
        return pa.schema([(name, pa.string()) for name in names])
    import pyarrow.parquet as pq  # noqa: PLC0415

    first = pq.read_schema(source.parts[0])
    return pa.schema([first.field(name) for name in names])


def _probability_names(names: list[str]) -> list[str]:
    return [name for name in names if name.startswith(PROBABILITY_PREFIX)]


def bound_checks(config: Config, totals: Totals) -> list[Check]:
    bounds = config.batch.bounds
    share = totals.rejected / totals.rows if totals.rows else 0.0
    checks = [Check.bounded("rows", "read", totals.rows, ">=", bounds.min_rows)]
    if bounds.max_rows is not None:
        checks.append(Check.bounded("rows", "read", totals.rows, "<=", bounds.max_rows))
    note = f"{totals.rejected} of {totals.rows} rows"
    checks.append(Check.bounded("rejects", "share", share, "<=", bounds.max_rejects_share, note=note))
    scored = totals.rows > totals.rejected
    if bounds.min_score is not None:
        low = totals.score_min if scored else None
        checks.append(
            Check.bounded("score", "min", low, ">=", bounds.min_score, note="lowest score of any row")
        )
    if bounds.max_score is not None:
        high = totals.score_max if scored else None
        checks.append(
            Check.bounded("score", "max", high, "<=", bounds.max_score, note="highest score of any row")
        )
    return checks


def drift_sample(card: ModelCard, totals: Totals, source: str) -> Sample | None:
    """The batch's counts in the card's reference bins, split per feature as the drift stage compares them."""
    if card.reference is None or totals.counts is None:
        return None
    sizes = [len(profile.frequencies) for profile in card.reference.features]
    ends = np.cumsum(sizes)
    features = [totals.counts[end - size : end] for size, end in zip(sizes, ends, strict=True)]
    return Sample(source, totals.rows - totals.rejected, features, totals.counts[int(ends[-1]) :])


def drift_checks(config: Config, scorer: Scorer, totals: Totals, reporter: Reporter) -> list[Check]:
    """`pipeline drift`'s checks on the batch's bins; in `warn` mode a failure is a warning."""
    mode = config.batch.drift
    if mode == "off":
        return []
    sample = drift_sample(scorer.card, totals, "the batch")
    if sample is None:
        reporter.note(
            "drift not judged: the card has no reference profile (exported before drift monitoring)"
        )
        return []
    if sample.rows < config.drift.min_rows:
        reporter.note(f"drift not judged: {sample.rows} scored rows < drift.min_rows {config.drift.min_rows}")
        return []
    checks = compare(config, scorer.card, sample, None)
    if mode == "warn":
        return [_warn_only(check) for check in checks]
    return checks


def _warn_only(check: Check) -> Check:
    if not check.failed:
        return check
    from dataclasses import replace  # noqa: PLC0415

    return replace(check, result="warn", note=f"{check.note}; batch.drift: warn")


def parity_checks(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    release: Release,
    source: Source,
    scorer: Scorer,
    written: Path,
    url: str | None,
) -> list[Check]:
    """The service's answers vs the batch's on the first `batch.parity_rows` rows it scored."""
    n = config.batch.parity_rows
    if n == 0:
        return []
    rows, scored = parity.sample_rows(source, scorer, written / SCORES_DIR, n)
    if not rows:
        reporter.note("parity not checked: the first rows of the input were all rejected")
        return []
    max_rows = config.service.max_rows
    if url is not None:
        headers = parity.api_key_headers(config, url, API_KEY_VARIABLE)
        answers = parity.ask_service(url, headers, rows, max_rows)
        reporter.note(f"parity: {len(rows)} rows sent to {url}")
    else:
        log = workspace.run_dir(config) / "batch" / "service.log"
        with running_service(config, release.model.path, log) as service:
            answers = parity.ask_service(service.url, service.headers, rows, max_rows)
        reporter.note(
            f"parity: {len(rows)} rows sent to the service started on version {release.registry_version}"
        )
    return parity.parity_checks(config, parity.pairs(scorer, scored, answers), scorer.card.is_regression)


def batch(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    input_path: Path,
    output: Path,
    url: str | None = None,
) -> BatchResult:
    """Score `input_path` into the new folder `output` with the release serving `config`'s environment."""
    spec = config.batch
    release = serving_release(config, workspace, reporter)
    keys = spec.key_columns
    defaulted = list(release.card.defaults)
    required = [name for name in release.card.feature_names if name not in defaulted]
    source = open_source(input_path, [*required, *keys], optional=defaulted)
    folder = output_folder(output)
    scorer = Scorer(
        release.model.path,
        registry_version=release.registry_version,
        key_schema=key_schema(config, source),
        text_input=source.format == "csv",
        absent=source.absent,
    )
    if source.absent:
        reporter.note(f"not in the input, so every row takes the card's default: {', '.join(source.absent)}")
    reporter.note(
        f"{len(source.parts)} {source.format} part(s) from {source.root}, engine {spec.engine}, "
        f"chunks of {spec.chunk_rows} rows"
    )
    partial = folder.parent / f".{folder.name}.partial-{workspace.run_id}"
    try:
        partial.mkdir(parents=True)
        totals = _score(config, source, release, scorer, out=partial, reporter=reporter)
        checks = [
            *bound_checks(config, totals),
            *drift_checks(config, scorer, totals, reporter),
            *parity_checks(
                config,
                workspace,
                reporter,
                release=release,
                source=source,
                scorer=scorer,
                written=partial,
                url=url,
            ),
        ]
        status = checked_status(checks)
        summary = _summary(config, release, source, totals, checks=checks, status=status)
        write_json(partial / SUMMARY_FILE, summary)
        write_json(workspace.run_dir(config) / "batch" / SUMMARY_FILE, {**summary, "output": str(folder)})
        if folder.exists():
            folder.rmdir()  # empty: checked above
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if status == "pass":
        (folder / SUCCESS_FILE).touch()
    share = totals.rejected / totals.rows if totals.rows else 0.0
    return BatchResult(
        status=status,
        headline=(
            f"{totals.rows} rows, {totals.rejected} rejected ({share:.2%}), "
            f"version {release.registry_version}, "
            f"{spec.engine}"
        ),
        artifacts={"output": folder, "summary": folder / SUMMARY_FILE},
        checks=checks,
        environment=config.name,
        engine=spec.engine,
        output=folder,
        rows=totals.rows,
        rejected=totals.rejected,
        registry_version=release.registry_version,
    )


def _score(
    config: Config, source: Source, release: Release, scorer: Scorer, *, out: Path, reporter: Reporter
) -> Totals:
    spec = config.batch
    if spec.engine == "embedded":
        return run_embedded(source, scorer, out, spec.chunk_rows, reporter)
    from pipeline.batch.spark import run_spark  # noqa: PLC0415  (pyspark: only for this engine)

    return run_spark(
        source,
        release.model.path,
        scorer,
        out,
        master=spec.spark.master,
        spec=spec.spark,
        chunk_rows=spec.chunk_rows,
        reporter=reporter,
    )


def _summary(
    config: Config, release: Release, source: Source, totals: Totals, *, checks: list[Check], status: str
) -> dict[str, Any]:
    card = release.card
    return {
        "environment": config.name,
        "model": {
            "name": card.name,
            "version": card.version,
            "registry_version": release.registry_version,
            "onnx_sha256": card.sha256,
        },
        "engine": config.batch.engine,
        "input": {"path": str(source.root), "format": source.format, "parts": list(source.part_names)},
        "rows": totals.rows,
        "rejected": totals.rejected,
        "score_range": [totals.score_min, totals.score_max] if totals.rows > totals.rejected else None,
        "status": status,
        "checks": [
            {
                "check": check.name,
                "value": check.value,
                "comparator": check.comparator,
                "bound": check.bound,
                "result": check.result,
                "note": check.note,
            }
            for check in checks
        ],
    }


def run(ctx: StageContext) -> BatchResult:
    args = ctx.args
    if args.master is not None and ctx.config.batch.engine != "spark":
        raise ConfigError("--master is the Spark master: give it with --engine spark")
    # A service off loopback is refused before any work.
    url = None if args.url is None else loopback_url(args.url, option="--url", allow_remote=args.allow_remote)
    c, w, r = ctx.config, ctx.workspace, ctx.reporter
    result = batch(c, w, r, input_path=args.input, output=args.output, url=url)
    r.verdict("batch", result)
    return result
