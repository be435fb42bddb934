"""Captured rows fed back to the checks that otherwise read the training split (`--from-capture` on
`loadtest`, `export` and `drift`): production's rows, as the service received them, redacted.

A feature the capture hashed or dropped (`drift.log_inputs.sensitive`) has no value to replay: a pseudonym
is no input. It takes the card's default for the feature (`model.feature_defaults`, what the service itself
fills in when a request leaves it out); a row needing a feature that has no default is refused, and the
refused rows are counted and reported, never sent with a made-up value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_service.contract.capture import CaptureError, read_capture
from model_service.contract.card import ModelCard
from pipeline.errors import StageError


@dataclass(frozen=True)
class Replay:
    """The captured rows of one model, in the card's feature order, and what it took to get them."""

    rows: list[list[Any]]
    captured: int
    filled: dict[str, int] = field(default_factory=dict)
    """Rows whose hashed or dropped feature took the card's default, by feature."""
    refused: dict[str, int] = field(default_factory=dict)
    """Rows left out, by the reason (a feature they lack and the card has no default for, a bad value)."""

    def summary(self, directory: Path) -> str:
        text = f"{len(self.rows)} of {self.captured} captured rows from {directory}"
        if self.filled:
            text += "; the card's default filled in for " + ", ".join(
                f"{n} ({c} rows)" for n, c in self.filled.items()
            )
        if self.refused:
            text += "; refused: " + ", ".join(f"{c} rows {why}" for why, c in self.refused.items())
        return text


def captured_rows(
    directory: Path, card: ModelCard, sensitive: Mapping[str, str], *, limit: int | None = None
) -> Replay:
    """The rows of `card`'s model (any version: the inputs are the features') captured in `directory`,
    newest `limit` of them (all when None); StageError when there are none to replay."""
    if not directory.is_dir():
        raise StageError(
            f"--from-capture: {directory} does not exist; serve with capture on (capture.enabled) and send "
            "traffic first"
        )
    try:
        records = [record for record in read_capture(directory) if record.model == card.name]
    except CaptureError as exc:
        raise StageError(f"--from-capture: {exc}; move the file aside or delete the line") from None
    if limit is not None:
        records = records[-limit:]
    rows: list[list[Any]] = []
    filled: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for record in records:
        row: list[Any] = []
        used: list[str] = []
        for feature in card.features:
            redacted = sensitive.get(feature.name) in {"hash", "drop"}
            if feature.name in record.inputs and not redacted:
                value = record.inputs[feature.name]
                if not feature.accepts(value):
                    refused[f"with a value of {feature.name} the card refuses"] += 1
                    break
            elif feature.default is not None:
                value = feature.default
                used.append(feature.name)
            else:
                why = "hashed or dropped" if redacted else "missing"
                refused[f"lacking {feature.name} ({why}; the card has no default for it)"] += 1
                break
            row.append(value)
        else:
            rows.append(row)
            filled.update(used)
    replay = Replay(rows, len(records), dict(filled), dict(refused))
    if not rows:
        raise StageError(f"--from-capture: no row to replay: {replay.summary(directory)}")
    return replay
