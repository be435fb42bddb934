"""A file of labels for `pipeline feedback`: CSV (header `request_id,label`) or Parquet (columns
`request_id` and `label`), every row checked before any is stored, so a malformed file stores nothing."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from model_service.contract.capture import Label, card_label, valid_key
from model_service.contract.card import ModelCard
from pipeline.errors import StageError

COLUMNS = ("request_id", "label")
FIX = "fix or remove that row and import the file again; nothing was stored"


@dataclass(frozen=True)
class LabelRow:
    request_id: str
    label: Label
    """As the card types its classes (an integer class stays an integer whatever the file held), or a
    float target: the same label posted by `POST /v1/feedback` is then a duplicate, not a conflict."""


def _cells(path: Path) -> list[tuple[str, object, object]]:
    """(where, request id, label) of each row, as the file holds them."""
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa  # noqa: PLC0415  (only for Parquet)
        import pyarrow.parquet as pq  # noqa: PLC0415

        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise StageError(f"--labels {path}: not a readable Parquet file ({exc})") from None
        missing = [name for name in COLUMNS if name not in table.column_names]
        if missing:
            msg = f"--labels {path}: no column {missing[0]!r}; expected columns {', '.join(COLUMNS)}"
            raise StageError(msg)
        ids, labels = (table.column(name).to_pylist() for name in COLUMNS)
        return [
            (f"{path}: row {i}", rid, lab) for i, (rid, lab) in enumerate(zip(ids, labels, strict=True), 1)
        ]
    if path.suffix.lower() != ".csv":
        raise StageError(f"--labels {path}: expected a .csv or .parquet file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StageError(f"--labels {path}: cannot read: {exc}") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None) or []
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise StageError(
            f"--labels {path}: line 1: no column {missing[0]!r}; expected a header row `{','.join(COLUMNS)}`"
        )
    at = [header.index(name) for name in COLUMNS]
    rows: list[tuple[str, object, object]] = []
    for line_no, cells in enumerate(reader, start=2):
        if not cells:
            continue
        if len(cells) != len(header):
            raise StageError(
                f"--labels {path}: line {line_no}: {len(cells)} cells, the header has {len(header)}; {FIX}"
            )
        rows.append((f"{path}: line {line_no}", cells[at[0]], cells[at[1]]))
    return rows


def _number(cell: object) -> object:
    """A CSV cell holding a number as that number; anything else as it is (`card_label` judges it)."""
    if isinstance(cell, str):
        try:
            return float(cell)
        except ValueError:
            return cell
    return cell


def read_labels(path: Path, card: ModelCard) -> list[LabelRow]:
    """Every row of `path`, checked against `card`'s classes (or as a number, for a regression); the
    first bad row is a StageError naming the file, the row and the fix."""
    if not path.is_file():
        raise StageError(f"--labels {path}: no such file")
    rows = []
    for where, request_id, raw in _cells(path):
        if not valid_key(request_id):
            raise StageError(
                f"{where}: request_id {request_id!r} is not a request id (1-200 printable characters); {FIX}"
            )
        assert isinstance(request_id, str)
        if card.task == "regression":
            label = card_label(_number(raw), card.classes)
            expected = "a finite number"
        else:
            label = card_label(raw, card.classes)
            expected = (
                f"one of the classes of {card.name} {card.version}: {', '.join(map(str, card.classes))}"
            )
        if label is None:
            raise StageError(f"{where}: label {raw!r} for {request_id!r}: expected {expected}; {FIX}")
        rows.append(LabelRow(request_id, label))
    if not rows:
        raise StageError(f"--labels {path}: no rows after the header; nothing was stored")
    return rows
