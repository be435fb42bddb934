"""Captured rows joined with their labels, per model version and per day (UTC)."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_service.contract.capture import CaptureRecord, card_label
from model_service.contract.card import ModelCard


@dataclass
class Served:
    """The rows one model version served (in the capture), and the labels that arrived for them: compact,
    so a capture of millions of rows fits in memory (8 bytes per probability, 2 per day, a label by row)."""

    model: str
    version: str
    columns: tuple[str, ...] | None = None
    """The output columns every row has: the class names of the probabilities (classifiers) or `value`
    (regressions), from the first row."""
    outputs: array[float] = field(default_factory=lambda: array("d"))
    """Every row's outputs in `columns` order, flat."""
    day_of_row: array[int] = field(default_factory=lambda: array("H"))
    """Each row's day, an index into `days`."""
    days: list[str] = field(default_factory=list)
    """The days (UTC, `YYYY-MM-DD`) rows were served on, in order of first appearance."""
    labels: dict[int, object] = field(default_factory=dict)
    """The stored label of each labelled row, by row index."""
    rows: int = 0
    unfit: str = ""
    """Why a row's outputs did not fit the first row's columns (a capture of another model under this
    version): such a version cannot be scored."""

    @property
    def labelled(self) -> int:
        return len(self.labels)

    def add(self, outputs: Mapping[str, Any], day: str, label: object | None) -> None:
        named = outputs.get("probabilities", outputs)
        if not isinstance(named, Mapping):
            named = {}
        columns = tuple(named) if "probabilities" in outputs else ("value",)
        if self.columns is None:
            self.columns = columns
        try:
            if columns != self.columns:
                raise ValueError(f"outputs {list(columns)}, the first row's {list(self.columns)}")
            self.outputs.extend(float(named[c]) for c in columns)
        except (KeyError, TypeError, ValueError) as exc:
            self.unfit = self.unfit or f"row {self.rows}: {exc}"
            return
        if day not in self.days:
            self.days.append(day)
        self.day_of_row.append(self.days.index(day))
        if label is not None:
            self.labels[self.rows] = label
        self.rows += 1


def group(records: Iterable[CaptureRecord], labels: Mapping[str, object]) -> dict[tuple[str, str], Served]:
    """Captured rows per (model, version), in capture order, each with its label (by `CaptureRecord.key`)."""
    served: dict[tuple[str, str], Served] = {}
    for record in records:
        entry = served.setdefault((record.model, record.version), Served(record.model, record.version))
        entry.add(record.outputs, record.time[:10], labels.get(record.key))
    return served


@dataclass(frozen=True)
class Scored:
    """One slice of a version's rows (all, or one day) as arrays the metric code takes."""

    probabilities: NDArray[np.float64] | None
    """Every row's served probabilities [N, C] in the card's class order (classifiers)."""
    values: NDArray[np.float64] | None
    """Every row's served value [N] (regressions)."""
    labelled: NDArray[np.bool_]
    """Rows whose label names a class of the card (or a number, for a regression)."""
    truth: NDArray[Any]
    """The labels of the `labelled` rows, as the card's classes (or floats)."""
    unusable: int
    """Rows labelled with what names no class of the card: left out, and counted."""


def scored(served: Served, card: ModelCard, rows: NDArray[np.bool_] | None = None) -> Scored:
    """`served`'s rows (all, or those of a mask) as arrays; ValueError naming the version when its outputs
    are not the card's (a capture of another model under the same version)."""
    expected = ("value",) if card.task == "regression" else tuple(str(known) for known in card.classes)
    if served.unfit or served.columns is None or sorted(served.columns) != sorted(expected):
        why = served.unfit or f"outputs {list(served.columns or ())}, the card's {list(expected)}"
        raise ValueError(f"version {served.version}: captured outputs are not its card's ({why})")
    table = np.frombuffer(served.outputs, dtype=np.float64).reshape(served.rows, len(expected))
    table = table[:, [served.columns.index(c) for c in expected]]
    chosen = np.arange(served.rows) if rows is None else np.flatnonzero(rows)
    labels = [served.labels.get(int(i)) for i in chosen]
    targets = [card_label(label, card.classes) for label in labels]  # as the store types them
    if card.task == "regression":
        values, probabilities = table[chosen, 0], None
    else:
        values, probabilities = None, table[chosen]
    labelled = np.asarray([t is not None for t in targets], dtype=bool)
    unusable = sum(label is not None and t is None for label, t in zip(labels, targets, strict=True))
    truth = np.asarray([t for t in targets if t is not None])
    return Scored(probabilities, values, labelled, truth, unusable)


def capture_directory(directory: str | Path, workspace_root: Path) -> Path:
    """The capture directory of `capture.directory`: a relative one lies in the workspace."""
    path = Path(directory)
    return path if path.is_absolute() else workspace_root / path
