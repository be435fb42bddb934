"""The embedded engine: the input streamed chunk by chunk through one scorer in this process, each chunk's
scores and rejects appended to one part file each. Memory holds one chunk (and its outputs) at a time:
the progress line of every chunk shows the peak resident memory so far, which stays flat."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from pipeline.batch.scoring import Scorer, Totals
from pipeline.batch.source import Format, Source, read_chunks
from pipeline.console import Reporter

SCORES_DIR = "scores"
REJECTS_DIR = "rejects"
PART_NAME = "part-00000"


class _Writer(Protocol):
    def write_batch(self, batch: pa.RecordBatch) -> None: ...


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB: Linux's VmHWM, which starts again at exec
    (`ru_maxrss` keeps the peak of the process that forked this one), else `ru_maxrss` (KiB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def part_writer(folder: Path, fmt: Format, schema: pa.Schema) -> Iterator[_Writer]:
    """One part file of `fmt` in `folder`, written batch by batch (an empty one still has its schema)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer: Any
    if fmt == "parquet":
        import pyarrow.parquet as pq  # noqa: PLC0415

        writer = pq.ParquetWriter(folder / f"{PART_NAME}.parquet", schema)
    else:
        import pyarrow.csv as pcsv  # noqa: PLC0415

        writer = pcsv.CSVWriter(folder / f"{PART_NAME}.csv", schema)
    try:
        yield writer
    finally:
        writer.close()


def run_embedded(source: Source, scorer: Scorer, out: Path, chunk_rows: int, reporter: Reporter) -> Totals:
    """Score every chunk of `source` into `out`/scores and `out`/rejects (the input's format)."""
    totals = Totals()
    started = time.perf_counter()
    with ExitStack() as stack:
        scores = stack.enter_context(part_writer(out / SCORES_DIR, source.format, scorer.score_schema))
        rejects = stack.enter_context(part_writer(out / REJECTS_DIR, source.format, scorer.reject_schema))
        for number, (part, first, batch) in enumerate(read_chunks(source, scorer.columns, chunk_rows), 1):
            n = batch.num_rows
            files = pa.array([part] * n, pa.string())
            chunk = scorer.score(batch, files, np.arange(first, first + n, dtype=np.int64))
            scores.write_batch(chunk.scores)
            rejects.write_batch(chunk.rejects)
            totals.add(chunk.totals)
            elapsed = time.perf_counter() - started
            reporter.note(
                f"chunk {number}: {part} rows {first}-{first + n - 1}, {chunk.totals.rejected} rejected; "
                f"{totals.rows} rows in {elapsed:.1f}s ({totals.rows / max(elapsed, 1e-9):,.0f} rows/s), "
                f"peak RSS {peak_rss_mib():.0f} MiB"
            )
    return totals
