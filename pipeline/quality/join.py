"""Captured rows joined with their labels, per model version and per day (UTC)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_service.contract.capture import CaptureRecord
from model_service.contract.card import ModelCard


def class_of(label: object, classes: Sequence[int | str]) -> int | str | None:
    """The card's class a label names (`1`, `1.0` and `"1"` all name class 1; a string class only by its
    text); None when it names none. Booleans name no class: a card's classes are integers or strings."""
    if isinstance(label, bool):
        return None
    for known in classes:
        if str(known) == str(label):
            return known
        if isinstance(known, int) and isinstance(label, float) and label == known:
            return known
    return None


def target_of(label: object) -> float | None:
    """A regression label as a number; None when it is none (text, a boolean, not finite)."""
    if isinstance(label, bool):
        return None
    try:
        value = float(label)  # type: ignore[arg-type]  # refused below when it is not a number
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


@dataclass
class Served:
    """The rows one model version served (in the capture), and the labelled part of them."""

    model: str
    version: str
    days: list[str] = field(default_factory=list)
    """Each row's day (UTC, `YYYY-MM-DD`)."""
    outputs: list[Mapping[str, Any]] = field(default_factory=list)
    labels: list[object | None] = field(default_factory=list)
    """Each row's label as stored, None when none arrived."""

    @property
    def rows(self) -> int:
        return len(self.outputs)

    @property
    def labelled(self) -> int:
        return sum(label is not None for label in self.labels)


def group(records: Iterable[CaptureRecord], labels: Mapping[str, object]) -> dict[tuple[str, str], Served]:
    """Captured rows per (model, version), in capture order, each with its label (by `CaptureRecord.key`)."""
    served: dict[tuple[str, str], Served] = {}
    for record in records:
        entry = served.setdefault((record.model, record.version), Served(record.model, record.version))
        entry.days.append(record.time[:10])
        entry.outputs.append(record.outputs)
        entry.labels.append(labels.get(record.key))
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


def scored(served: Served, card: ModelCard, rows: slice | NDArray[np.bool_] = slice(None)) -> Scored:
    """`served`'s rows (a slice or mask of them) as arrays; a row whose outputs lack the card's classes is
    a ValueError naming the version (a capture of another model under the same version)."""
    outputs = [served.outputs[i] for i in np.arange(served.rows)[rows]]
    labels = [served.labels[i] for i in np.arange(served.rows)[rows]]
    if card.task == "regression":
        values = np.asarray([float(o["value"]) for o in outputs], dtype=np.float64)
        targets: list[float | int | str | None] = [
            None if label is None else target_of(label) for label in labels
        ]
        probabilities = None
    else:
        columns = [str(known) for known in card.classes]
        try:
            probabilities = np.asarray(
                [[float(o["probabilities"][c]) for c in columns] for o in outputs], dtype=np.float64
            ).reshape(len(outputs), len(columns))
        except (KeyError, TypeError) as exc:
            msg = f"version {served.version}: captured outputs lack the card's class probabilities ({exc})"
            raise ValueError(msg) from None
        targets = [None if label is None else class_of(label, card.classes) for label in labels]
        values = None
    labelled = np.asarray([t is not None for t in targets], dtype=bool)
    unusable = sum(label is not None and t is None for label, t in zip(labels, targets, strict=True))
    truth = np.asarray([t for t in targets if t is not None])
    return Scored(probabilities, values, labelled, truth, unusable)


def capture_directory(directory: str | Path, workspace_root: Path) -> Path:
    """The capture directory of `capture.directory`: a relative one lies in the workspace."""
    path = Path(directory)
    return path if path.is_absolute() else workspace_root / path
