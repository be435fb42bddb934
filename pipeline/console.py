"""The one place the pipeline prints: stage lines, check tables and notes, to stdout."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from pipeline.errors import StageSkipped
from pipeline.stage import CHECK_COLUMNS, Check, StageResult


class Reporter:
    """Progress to `stream` (stdout), errors to `errors` (stderr), so a caller can capture either."""

    def __init__(self, stream: TextIO | None = None, errors: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.errors = errors or sys.stderr

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        self.line(f"  {text}")

    def error(self, text: str) -> None:
        print(f"error: {text}", file=self.errors, flush=True)

    def warn(self, text: str) -> None:
        self.line(f"  WARNING: {text}")

    @contextmanager
    def stage(self, name: str, env: str) -> Iterator[None]:
        """Frame a stage with a start line and a closing line carrying its status and duration."""
        self.line(f"==> {name} [{env}]")
        started = time.perf_counter()
        status = "FAILED"
        try:
            yield
            status = "done"
        except StageSkipped:
            status = "SKIPPED"
            raise
        finally:
            self.line(f"<== {name} [{env}] {status} in {time.perf_counter() - started:.1f}s")

    def checks(self, checks: Sequence[Check]) -> None:
        """Checks in the columns the report shows them in."""
        self.table(CHECK_COLUMNS, [check.row() for check in checks])

    def verdict(self, stage: str, result: StageResult) -> None:
        """A stage's checks and its result line, e.g. `gate PASS 7/7 checks`."""
        self.checks(result.checks)
        self.note(f"{stage} {result.result_line}")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        cells = [[str(c) for c in headers], *[[_cell(c) for c in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for n, row in enumerate(cells):
            self.note("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
            if n == 0:
                self.note("  ".join("-" * width for width in widths))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)
