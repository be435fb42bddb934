"""The Spark engine: the embedded engine's scoring (`Scorer.score`) as an Arrow UDF (`mapInArrow`) over a
Spark DataFrame, on `local[*]` by default or on a cluster through `--master`.

Each Python worker builds one scorer for the job (one onnxruntime session, the service's parser and bins)
from the release's files, shipped once as a broadcast and checked against the card's sha256 there as the
service checks them at start-up; later tasks of that worker reuse it. Every partition's output carries
its scores, its rejects and one row of totals; the scored frame is persisted, written twice (scores,
rejects) and its totals collected, so nothing is scored twice and the counts are exact (no accumulators).

The row key is the part's file name and the row's index in it: Parquet gives it (`_metadata.row_index`);
a CSV part is read whole by one task (no split), which counts its rows in order.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from model_service.contract.card import CARD_FILE
from pipeline.batch.embedded import REJECTS_DIR, SCORES_DIR
from pipeline.batch.scoring import Scorer, Totals
from pipeline.batch.source import Source
from pipeline.config.models import SparkSpec
from pipeline.console import Reporter
from pipeline.errors import StageError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

FILE_COLUMN = "_batch_file"
ROW_COLUMN = "_batch_row"
KIND = "_batch_kind"
"""Which output a row of the scored frame belongs to: scores, rejects or the partition's totals."""
SCORE, REJECT, TOTALS = "score", "reject", "totals"
TOTALS_FIELDS = [
    pa.field("_rows", pa.int64()),
    pa.field("_rejected", pa.int64()),
    pa.field("_score_min", pa.float64()),
    pa.field("_score_max", pa.float64()),
    pa.field("_counts", pa.list_(pa.int64())),
]
WHOLE_FILE_BYTES = str(1 << 60)
"""Split size and open cost for CSV: no part is split, so one task sees all of a part's rows in order."""


@dataclass(frozen=True)
class Job:
    """What every task needs, small enough to ship with the function: the model's files travel apart, in
    a broadcast (`files`: its handle)."""

    files: Any
    sha256: str
    registry_version: str
    key_schema: pa.Schema
    text_input: bool
    absent: tuple[str, ...]
    row_index: bool
    """True: the rows carry their index (Parquet); False: count them per part (a CSV part is never split)."""


def java_missing() -> str | None:
    """Why Spark cannot start here (no Java), or None."""
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") or (java_home and (Path(java_home) / "bin" / "java").is_file()):
        return None
    return "the spark engine needs Java 17 (apt-get install openjdk-17-jre-headless, or set JAVA_HOME)"


def start_session(master: str, spec: SparkSpec, chunk_rows: int, *, name: str, csv: bool) -> SparkSession:
    """A Spark session on `master` with the environment's resources; Arrow batches of `chunk_rows`."""
    problem = java_missing()
    if problem:
        raise StageError(problem)
    try:
        from pyspark.sql import SparkSession  # noqa: PLC0415
    except ImportError:
        raise StageError(
            "the spark engine needs pyspark: `nox -s batch` installs it (dependency group batch-spark)"
        ) from None
    conf = {
        "spark.app.name": name,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(chunk_rows),
        "spark.driver.cores": str(spec.driver.cores),
        "spark.driver.memory": spec.driver.memory,
        "spark.executor.cores": str(spec.executor.cores),
        "spark.executor.memory": spec.executor.memory,
        "spark.executor.memoryOverhead": spec.executor.memory_overhead,
        "spark.executor.instances": str(spec.executor_instances),
    }
    if master.startswith("local"):  # nothing listens beyond loopback
        # Local workers run this interpreter (its packages: onnxruntime, the service's code); a cluster's
        # executors run their image's.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        conf |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    if csv:
        conf |= {
            "spark.sql.files.maxPartitionBytes": WHOLE_FILE_BYTES,
            "spark.sql.files.openCostInBytes": WHOLE_FILE_BYTES,
        }
    builder = SparkSession.builder.master(master)
    for key, value in {**conf, **spec.conf}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def run_spark(
    source: Source,
    model_dir: Path,
    scorer: Scorer,
    out: Path,
    *,
    master: str,
    spec: SparkSpec,
    chunk_rows: int,
    reporter: Reporter,
) -> Totals:
    """Score `source` on Spark into `out`/scores and `out`/rejects (the input's format); the totals."""
    with warnings.catch_warnings():
        # mapInArrow hands Arrow batches over and never touches pandas; pyspark checks its version anyway.
        warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
        session = start_session(
            master, spec, chunk_rows, name=f"batch-{scorer.card.name}", csv=source.format == "csv"
        )
        try:
            collected = _score_frame(session, source, model_dir, scorer, out=out, reporter=reporter)
        finally:
            session.stop()
    totals = Totals()
    for row in collected:
        counts = None if row["_counts"] is None else np.asarray(row["_counts"], dtype=np.int64)
        totals.add(Totals(row["_rows"], row["_rejected"], row["_score_min"], row["_score_max"], counts))
    return totals


def _score_frame(
    session: SparkSession, source: Source, model_dir: Path, scorer: Scorer, *, out: Path, reporter: Reporter
) -> list[Any]:
    """Map the scorer over the input, write scores and rejects, collect every partition's totals."""
    from pyspark import StorageLevel  # noqa: PLC0415
    from pyspark.sql import functions as sql  # noqa: PLC0415
    from pyspark.sql.pandas.types import from_arrow_schema  # noqa: PLC0415

    card_bytes = (model_dir / CARD_FILE).read_bytes()
    onnx_bytes = scorer.card.onnx_path.read_bytes()
    job = Job(
        files=session.sparkContext.broadcast((card_bytes, scorer.card.onnx_file, onnx_bytes)),
        sha256=scorer.card.sha256,
        registry_version=scorer.registry_version,
        key_schema=scorer.key_schema,
        text_input=scorer.text_input,
        absent=scorer.absent,
        row_index=source.format == "parquet",
    )
    frame = _read(session, source, scorer.columns)
    reporter.note(
        f"spark {session.version} on {session.sparkContext.master}: {frame.rdd.getNumPartitions()} partitions"
    )
    scored = frame.mapInArrow(partial(score_partition, job=job), from_arrow_schema(frame_schema(scorer)))
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    for kind, folder, fields in (
        (SCORE, SCORES_DIR, scorer.score_schema.names),
        (REJECT, REJECTS_DIR, scorer.reject_schema.names),
    ):
        selected = scored.where(sql.col(KIND) == kind).select(*[sql.col(f"`{name}`") for name in fields])
        _write(selected, source.format, out / folder)
        reporter.note(f"spark wrote {out / folder}")
    names = [item.name for item in TOTALS_FIELDS]
    collected = scored.where(sql.col(KIND) == TOTALS).select(*names).collect()
    scored.unpersist()
    return collected


def _read(session: SparkSession, source: Source, columns: list[str]) -> DataFrame:
    from pyspark.sql import functions as sql  # noqa: PLC0415

    paths = [str(part) for part in source.parts]
    picked = [sql.col(f"`{name}`") for name in columns]
    if source.format == "parquet":
        frame = session.read.parquet(*paths)
        return frame.select(
            *picked,
            sql.col("_metadata.file_name").alias(FILE_COLUMN),
            sql.col("_metadata.row_index").alias(ROW_COLUMN),
        )
    # No schema inference: every column is text, typed per the card in the UDF as the embedded engine does.
    frame = session.read.options(header=True, inferSchema=False, mode="FAILFAST").csv(paths)
    return frame.select(*picked, sql.col("_metadata.file_name").alias(FILE_COLUMN))


def _write(frame: DataFrame, fmt: str, folder: Path) -> None:
    writer = frame.write.mode("errorifexists")
    if fmt == "csv":
        writer.options(header=True, escape='"').csv(
            str(folder)
        )  # quotes doubled (RFC 4180), as pyarrow writes
    else:
        writer.parquet(str(folder))


def frame_schema(scorer: Scorer) -> pa.Schema:
    """The scored frame: every score column, every reject column, the totals, and the kind of the row."""
    fields = {item.name: item for item in [*scorer.score_schema, *scorer.reject_schema, *TOTALS_FIELDS]}
    return pa.schema([*fields.values(), pa.field(KIND, pa.string())])


# --- in the Python workers --------------------------------------------------------------------------

_scorers: dict[tuple[str, str, bool, tuple[str, ...]], Scorer] = {}
"""This worker's scorer per job (model sha256, key columns, input format, absent features): built by the
job's first task here, reused by the next ones."""


def _worker_scorer(job: Job) -> Scorer:
    key = (job.sha256, job.key_schema.to_string(), job.text_input, job.absent)
    scorer = _scorers.get(key)
    if scorer is not None:
        return scorer
    card_bytes, onnx_file, onnx_bytes = job.files.value
    folder = Path(tempfile.mkdtemp(prefix=f"batch-model-{job.sha256[:12]}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    (folder / CARD_FILE).write_bytes(card_bytes)
    (folder / onnx_file).write_bytes(onnx_bytes)
    # The service's start-up checks, here too: the file must hash to the card's sha256 and fit it.
    scorer = Scorer(
        folder,
        registry_version=job.registry_version,
        key_schema=job.key_schema,
        text_input=job.text_input,
        absent=job.absent,
    )
    if hashlib.sha256(onnx_bytes).hexdigest() != job.sha256:
        raise RuntimeError(f"the model shipped to this worker is not {job.sha256}")
    _scorers[key] = scorer
    return scorer


def score_partition(batches: Iterator[pa.RecordBatch], job: Job) -> Iterator[pa.RecordBatch]:
    """mapInArrow's function: each Arrow batch scored, then one row of this partition's totals."""
    scorer = _worker_scorer(job)
    schema = frame_schema(scorer)
    totals = Totals()
    counted: dict[str, int] = {}
    for batch in batches:
        files = batch.column(FILE_COLUMN)
        if job.row_index:
            rows = np.asarray(batch.column(ROW_COLUMN).to_numpy(zero_copy_only=False), dtype=np.int64)
        else:
            rows = _count_rows(files, counted)
        chunk = scorer.score(batch, files, rows)
        totals.add(chunk.totals)
        yield _widen(chunk.scores, schema, SCORE)
        yield _widen(chunk.rejects, schema, REJECT)
    counts = None if totals.counts is None else totals.counts.tolist()
    row = [totals.rows, totals.rejected, totals.score_min, totals.score_max, counts]
    stats = pa.RecordBatch.from_arrays(
        [pa.array([v], f.type) for v, f in zip(row, TOTALS_FIELDS, strict=True)],
        schema=pa.schema(TOTALS_FIELDS),
    )
    yield _widen(stats, schema, TOTALS)


def _count_rows(files: pa.Array, counted: dict[str, int]) -> np.ndarray:
    """Each row's index in its part, counting on from the rows of that part seen before (in order)."""
    encoded = files.dictionary_encode()
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False))
    rows = np.empty(len(codes), dtype=np.int64)
    for code, name in enumerate(encoded.dictionary.to_pylist()):
        at = np.flatnonzero(codes == code)
        start = counted.get(name, 0)
        rows[at] = np.arange(start, start + len(at), dtype=np.int64)
        counted[name] = start + len(at)
    return rows


def _widen(batch: pa.RecordBatch, schema: pa.Schema, kind: str) -> pa.RecordBatch:
    """`batch` with the scored frame's columns: its own, nulls for the others, and its kind."""
    n = batch.num_rows
    arrays = [
        pa.array([kind] * n, pa.string())
        if item.name == KIND
        else batch.column(item.name)
        if item.name in batch.schema.names
        else pa.nulls(n, item.type)
        for item in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
