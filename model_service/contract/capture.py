"""The capture (what the service served) and the labels that arrive later: one contract for the service,
which writes both, and the pipeline (`pipeline feedback`, `pipeline evaluate`), which reads them.

Standard library only, like card.py. A capture directory holds:

- `capture-<UTC start>-<pid>.jsonl`: one JSON line per served row (`CaptureRecord`), written by one worker
  process (its pid in the name, so workers never share a file); a file is closed and a new one opened at
  `max_file_bytes`. File names sort oldest first. A worker killed mid-line leaves a torn last line, which
  `read_capture` skips.
- `labels.sqlite` (WAL): the `captured` table, the id index the writers keep (one row per captured label
  key, with its time), and the `labels` table `LabelStore` fills. One file, so a label's "known id" check is
  one primary-key lookup.
- `live_quality.prom`: the live-quality gauges `pipeline evaluate` writes; the service's metrics port
  appends its samples to /metrics when present.

Label keys: a record's `key` is its `request_id` when its request had one row, `request_id#row` (row
counted from 0) when it had several. A label is posted or imported for that key.

Sensitive features (`redact_row`): `hash` shows `pseudonym(repr(value))` (a number as a float, so the
input log and the capture show the same pseudonym), `drop` leaves the feature out. The input log
(model_service/model/drift.py) redacts through the same function.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

CAPTURE_SCHEMA_VERSION = 1
"""The `v` of every capture line; `CaptureRecord.from_json` refuses another."""
CAPTURE_PREFIX = "capture-"
CAPTURE_SUFFIX = ".jsonl"
CAPTURE_GLOB = f"{CAPTURE_PREFIX}*{CAPTURE_SUFFIX}"
LABELS_FILE = "labels.sqlite"
"""The label store and the captured-id index, beside the capture files."""
LIVE_QUALITY_FILE = "live_quality.prom"
"""Prometheus text the metrics port appends to /metrics (textfile-collector style), written by evaluate."""
TEXTFILE_ERRORS = "model_service_textfile_errors"
"""Counter of the metrics port: times `LIVE_QUALITY_FILE` was left out of /metrics, by `reason`."""
TEXTFILE_ERROR_REASONS = ("too_large", "unreadable", "malformed")
"""`malformed`: not Prometheus text, or naming a family the service exports itself."""
ROW_SEPARATOR = "#"
"""Between a request id and a row index in the label key of a row of a batched request."""
MAX_KEY_CHARS = 200
"""Longest label key accepted (a request id is at most 128 characters, then `#row`)."""
MAX_LABEL_CHARS = 256
"""Longest string label accepted."""
SENSITIVE_ACTIONS = ("hash", "drop")

Label = str | int | float | bool
"""A ground-truth value: a class (as the card names it, string or number) or a regression target."""


class CaptureError(ValueError):
    """A capture line or file that breaks the contract; the message names the file and line."""


# --- redaction: the one mechanism of the input log, the capture and the drift series --------------------


def pseudonym(value: str) -> str:
    """What a feature marked `hash` shows instead of a value (input log, capture) or of a bin label (the
    `model_service_feature_bin` series): the first 16 hex characters of its sha256. A pseudonym, not
    anonymity: a value from a small set (a bin index) is found by hashing the candidates."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def redacted_value(value: object) -> str | None:
    """What a feature marked `hash` shows instead of its value: `pseudonym` of its repr, a number's (or a
    boolean's) as a float, so 3 and 3.0 show alike; a missing value (None) stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return pseudonym(repr(value))
    return pseudonym(repr(float(value)))  # type: ignore[arg-type]  # numbers and bools


def redact_row(row: Mapping[str, object], sensitive: Mapping[str, str]) -> dict[str, object]:
    """One row (feature -> value) with each sensitive feature hashed (`redacted_value`) or dropped."""
    out: dict[str, object] = {}
    for name, value in row.items():
        action = sensitive.get(name)
        if action == "drop":
            continue
        out[name] = redacted_value(value) if action == "hash" else value
    return out


# --- the capture --------------------------------------------------------------------------------------


def label_key(request_id: str, row: int, rows: int) -> str:
    """The key a label names: the request id alone for a one-row request, else `request_id#row`."""
    return request_id if rows == 1 else f"{request_id}{ROW_SEPARATOR}{row}"


def utc_now() -> str:
    """The current time as a capture writes it: ISO-8601, UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def epoch_seconds(iso: str) -> float:
    """An ISO-8601 time (UTC when it names no zone) as epoch seconds; ValueError when it is none."""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True)
class CaptureRecord:
    """One served row: who asked (request and trace id), when, which model answered, the row as the card
    types it (sensitive features hashed or dropped), the answer (`label` and `probabilities` by class, or
    `value`) and the request's latency. `row` of `rows`: its place in a batched request."""

    request_id: str
    trace_id: str | None
    time: str
    model: str
    version: str
    inputs: dict[str, object]
    outputs: dict[str, object]
    latency_ms: float
    row: int = 0
    rows: int = 1
    schema: int = field(default=CAPTURE_SCHEMA_VERSION)

    @property
    def key(self) -> str:
        """The label key of this row (`label_key`)."""
        return label_key(self.request_id, self.row, self.rows)

    def to_json(self) -> str:
        """One line (no newline): the fields, `schema` as `v`."""
        raw = asdict(self)
        raw["v"] = raw.pop("schema")
        return json.dumps(raw, separators=(",", ":"), allow_nan=False, default=_plain)

    @classmethod
    def from_json(cls, line: str | bytes) -> CaptureRecord:
        """A capture line, checked; `CaptureError` names the field."""
        try:
            raw = json.loads(line)
        except ValueError as exc:
            raise CaptureError(f"not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise CaptureError("expected a JSON object")
        if raw.get("v") != CAPTURE_SCHEMA_VERSION:
            raise CaptureError(f"v: expected capture schema {CAPTURE_SCHEMA_VERSION}, got {raw.get('v')!r}")
        expected: dict[str, tuple[type, ...]] = {
            "request_id": (str,),
            "trace_id": (str, type(None)),
            "time": (str,),
            "model": (str,),
            "version": (str,),
            "inputs": (dict,),
            "outputs": (dict,),
            "latency_ms": (int, float),
            "row": (int,),
            "rows": (int,),
        }
        for name, types in expected.items():
            if name not in raw:
                raise CaptureError(f"{name}: missing")
            if not isinstance(raw[name], types) or (isinstance(raw[name], bool) and bool not in types):
                raise CaptureError(f"{name}: expected {' or '.join(t.__name__ for t in types)}")
        if not 0 <= raw["row"] < raw["rows"]:
            raise CaptureError(f"row: {raw['row']} is not in 0..{raw['rows'] - 1}")
        return cls(
            request_id=raw["request_id"],
            trace_id=raw["trace_id"],
            time=raw["time"],
            model=raw["model"],
            version=raw["version"],
            inputs=raw["inputs"],
            outputs=raw["outputs"],
            latency_ms=float(raw["latency_ms"]),
            row=raw["row"],
            rows=raw["rows"],
        )


def _plain(value: object) -> object:
    """JSON for numpy scalars (`.item()`) in inputs and outputs, which the service hands over as they are."""
    item = getattr(value, "item", None)
    if item is not None:
        return item()
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def capture_file_name(started: float, pid: int) -> str:
    """The name of a capture file a worker opens at `started` (epoch seconds): sorts oldest first."""
    stamp = datetime.fromtimestamp(started, UTC).strftime("%Y%m%dT%H%M%S%f")
    return f"{CAPTURE_PREFIX}{stamp}-{pid}{CAPTURE_SUFFIX}"


def capture_files(directory: Path) -> list[Path]:
    """The capture files of a directory, oldest first (an absent directory has none)."""
    return sorted(directory.glob(CAPTURE_GLOB)) if directory.is_dir() else []


def read_capture(directory: Path) -> Iterator[CaptureRecord]:
    """Every record of every capture file, oldest file first. A torn last line (a worker stopped or the
    disk filled mid-write) is skipped; a bad line elsewhere raises `CaptureError` naming file and line."""
    for path in capture_files(directory):
        try:
            lines = path.read_bytes().split(b"\n")
        except FileNotFoundError:  # removed by retention while we listed
            continue
        last = len(lines) - 1  # the text after the last newline: empty, or a torn line
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield CaptureRecord.from_json(line)
            except CaptureError as exc:
                if number - 1 == last:
                    continue
                raise CaptureError(f"{path}:{number}: {exc}") from None


# --- labels -------------------------------------------------------------------------------------------


class LabelOutcome(enum.StrEnum):
    """What became of one label, as `POST /v1/feedback` and `pipeline feedback` report it."""

    STORED = "stored"
    """New: kept."""
    DUPLICATE = "duplicate"
    """The same label again for the key: nothing changes (idempotent)."""
    CONFLICT = "conflict"
    """Another label is already stored for the key: refused, the first one stays."""
    UNKNOWN = "unknown"
    """No captured row has that key (not sampled, not served here, or past retention)."""
    LATE = "late"
    """The row was served longer ago than the label window: refused."""
    MALFORMED = "malformed"
    """The key or the label is not of the expected form."""


OUTCOME_MEANING: Mapping[LabelOutcome, str] = {
    LabelOutcome.STORED: "stored",
    LabelOutcome.DUPLICATE: "this label was already stored for this request id; nothing changed",
    LabelOutcome.CONFLICT: "another label is already stored for this request id; the first one stays",
    LabelOutcome.UNKNOWN: "no captured request has this id (not sampled, not served here, or past retention)",
    LabelOutcome.LATE: "the request was served longer ago than the label window; refused",
    LabelOutcome.MALFORMED: "expected a request id (text) and a label (a string, number or boolean)",
}
"""One sentence per outcome, for the per-item answers."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS captured (key TEXT PRIMARY KEY, served_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS captured_served_at ON captured (served_at);
CREATE TABLE IF NOT EXISTS labels (
    key TEXT PRIMARY KEY, label TEXT NOT NULL, received_at TEXT NOT NULL, source TEXT NOT NULL
) WITHOUT ROWID;
"""


def valid_label(label: object) -> bool:
    """A label is a short non-empty string, a finite number or a boolean."""
    if isinstance(label, str):
        return 0 < len(label) <= MAX_LABEL_CHARS
    if isinstance(label, bool | int):
        return True
    return isinstance(label, float) and math.isfinite(label)


def card_label(label: object, classes: Sequence[int | str]) -> Label | None:
    """A label as the card types it, None when it is none of the model's: a classifier's names one of
    `classes` (`1`, `1.0` and `"1"` all name class 1; a boolean names none); a regression's (no classes) is
    a finite number, as a float. So one label stored over HTTP or from a file is the same value."""
    if isinstance(label, bool) or label is None:
        return None
    if not classes:
        if isinstance(label, int | float) and math.isfinite(label):
            return float(label)
        return None
    for known in classes:
        if str(known) == str(label) or (
            isinstance(known, int) and isinstance(label, float) and label == known
        ):
            return known
    return None


def valid_key(key: object) -> bool:
    return isinstance(key, str) and 0 < len(key) <= MAX_KEY_CHARS and key.isprintable() and key.strip() == key


class LabelStore:
    """Ground truth beside the capture (`<capture dir>/labels.sqlite`), and the index of captured keys.

    One connection per instance and thread (sqlite3's rule): the service's writer thread and its feedback
    endpoint each open their own; several worker processes share the file through WAL and a busy timeout.
    """

    def __init__(self, path: Path, *, label_window_days: float = 30.0, timeout_s: float = 5.0) -> None:
        self.path = path
        self.label_window_s = label_window_days * 86400.0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=timeout_s, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- the capture writer's side ---------------------------------------------------------------------
    def record_captured(self, entries: Iterable[tuple[str, float]]) -> None:
        """Index captured label keys with their serving time (epoch seconds), in one transaction."""
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO captured VALUES (?, ?)", entries)

    def forget_captured_before(self, epoch: float) -> int:
        """Drop index rows served before `epoch` (retention); labels stay. The number dropped."""
        with self._transaction():
            return self._db.execute("DELETE FROM captured WHERE served_at < ?", (epoch,)).rowcount

    # -- labels ----------------------------------------------------------------------------------------
    def add(
        self, request_id: object, label: object, *, received_at: float | None = None, source: str
    ) -> LabelOutcome:
        """Store one label for a captured key (`CaptureRecord.key`); anything but `stored` changes nothing.
        `received_at`: epoch seconds (now when None); `source`: where it came from (`api`, a file name)."""
        if not valid_key(request_id) or not valid_label(label):
            return LabelOutcome.MALFORMED
        assert isinstance(request_id, str)
        received = time.time() if received_at is None else received_at
        text = json.dumps(label)
        with self._transaction():
            served = self._db.execute(
                "SELECT served_at FROM captured WHERE key = ?", (request_id,)
            ).fetchone()
            if served is None:
                return LabelOutcome.UNKNOWN
            stored = self._db.execute("SELECT label FROM labels WHERE key = ?", (request_id,)).fetchone()
            if stored is not None:
                return LabelOutcome.DUPLICATE if stored[0] == text else LabelOutcome.CONFLICT
            if received - served[0] > self.label_window_s:
                return LabelOutcome.LATE
            self._db.execute(
                "INSERT INTO labels VALUES (?, ?, ?, ?)",
                (request_id, text, datetime.fromtimestamp(received, UTC).isoformat(), source),
            )
        return LabelOutcome.STORED

    def labels(self) -> dict[str, object]:
        """Every stored label by key."""
        return {key: json.loads(text) for key, text in self._db.execute("SELECT key, label FROM labels")}

    def counts(self) -> dict[str, int]:
        """`captured`: keys indexed; `labelled`: labels stored."""
        captured = self._db.execute("SELECT count(*) FROM captured").fetchone()[0]
        labelled = self._db.execute("SELECT count(*) FROM labels").fetchone()[0]
        return {"captured": int(captured), "labelled": int(labelled)}

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def capture_dir_problem(directory: Path) -> str | None:
    """Why a service could not capture into `directory` (None: it can): the folder made if missing, the
    label store opened, a file created and removed, as the writer will."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        LabelStore(directory / LABELS_FILE).close()
        probe = directory / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except (OSError, sqlite3.Error) as exc:
        return f"{directory}: {getattr(exc, 'strerror', None) or exc}"
    return None


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception): the check and the insert of `add` see one
    state even with several processes adding at once."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if kind is not None else "COMMIT")
