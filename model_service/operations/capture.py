"""The capture writer: a sample of what a worker served, written off the hot path (model_service/contract/capture.py
says what is written where).

Per request the hot path pays for a random draw and, for a sampled request, a dict entry (`hold`, when the
answer is computed) and a deque append (`release`, once it is sent, with its status and latency: no lock,
no thread woken). A writer thread per worker takes what gathered every `GATHER_S`, turns each answer into
one line per row (the values typed as the card types them, sensitive features redacted), indexes their
label keys in `labels.sqlite` in one transaction, then appends the lines to this worker's own file (its pid
in the name: no two processes share a file, so no line interleaves with another's). When the queue is full
(a slow disk, a locked index), the index cannot be written or the file cannot (a full disk), the sample is
dropped and counted in `model_service_capture_dropped_total{reason}`: never a request. A failed write
closes the file, so a torn line stays the last of its file, where `read_capture` skips it.

Bounds, over the whole directory (every worker's files): a file is closed at `capture_max_file_bytes`; at
each rotation and every `MAINTENANCE_INTERVAL_S`, the oldest files beyond `capture_max_files` and files
untouched for `capture_retention_days` are removed, and index rows older than the retention forgotten. A
worker whose file another removed opens a new one.
"""

import contextlib
import math
import os
import random
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from prometheus_client import CollectorRegistry, Counter

from model_service.contract.capture import (
    CAPTURE_SCHEMA_VERSION,
    LABELS_FILE,
    OUTCOME_MEANING,
    LabelOutcome,
    LabelStore,
    capture_file_name,
    capture_files,
    card_label,
    label_key,
    redacted_value,
)
from model_service.contract.card import ModelCard
from model_service.contract.monitoring import CAPTURE_DROPPED, CAPTURE_ROWS, DROP_REASON_LABEL
from model_service.protocol.errors import InvalidInput

DROP_REASONS = ("queue_full", "index_error", "write_error")
"""Why a sampled answer was not captured: the writer was behind (`queue_full`), `labels.sqlite` could not
be written (`index_error`: locked past its timeout, full disk) or the capture file could not (`write_error`)."""
MAINTENANCE_INTERVAL_S = 60.0
"""How often an idle writer applies retention."""
GATHER_S = 0.05
"""How often the writer takes the answers gathered since its last pass: one index transaction and one write."""
INDEX_TIMEOUT_S = 2.0
"""Longest the writer waits for a lock on `labels.sqlite` before dropping its batch (`index_error`)."""


class Held(NamedTuple):
    """A sampled answer, kept as the model computed it until its response is sent (a tuple: built on the
    hot path, where a frozen dataclass's init costs a few µs more)."""

    answer_id: str
    version: str
    rows: Any
    """Rows [N, F] (a numeric-only model's array) or None."""
    columns: Sequence[Sequence[Any]] | None
    """A typed model's values per feature (null as NaN or "") or None."""
    predictions: Any
    scores: Any


class CaptureWriter:
    """One worker's capture: `sampled` and `hold` while answering, `release` once answered, `close` at exit."""

    def __init__(
        self,
        directory: Path,
        card: ModelCard,
        registry: CollectorRegistry,
        *,
        sample_ratio: float,
        max_file_bytes: int,
        max_files: int,
        retention_days: float,
        queue_size: int,
        sensitive: Mapping[str, str],
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.sample_ratio = sample_ratio
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.retention_s = retention_days * 86400.0
        self._card = card
        kept = [feature for feature in card.features if sensitive.get(feature.name) != "drop"]
        self._kept = [feature.name for feature in kept]
        self._convert = [
            None
            if sensitive.get(f.name) == "drop"
            else _column(f.type, f.nullable, sensitive.get(f.name) == "hash")
            for f in card.features
        ]
        self._classes = [str(c) for c in card.classes]
        kept_index = [j for j, f in enumerate(card.features) if sensitive.get(f.name) != "drop"]
        self._kept_index = kept_index if len(kept_index) < len(card.features) else None
        self._hashed_index = [k for k, f in enumerate(kept) if sensitive.get(f.name) == "hash"]
        self._random = random.Random().random
        self._held: dict[str, Held] = {}
        self.queue_size = queue_size
        self._pending: deque[tuple[Held, str | None, float, float]] = deque()
        self._stop = threading.Event()
        dropped = Counter(
            CAPTURE_DROPPED, "sampled answers not captured, by reason", [DROP_REASON_LABEL], registry=registry
        )
        self._dropped = {reason: dropped.labels(reason) for reason in DROP_REASONS}
        self._rows = Counter(CAPTURE_ROWS, "rows written to the capture", registry=registry)
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._maintained = 0.0
        self._store: LabelStore | None = None
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    # -- on the event loop ---------------------------------------------------------------------------
    def sampled(self) -> bool:
        return self._random() < self.sample_ratio

    def hold(self, request_id: str, held: Held) -> None:
        """Keep a sampled answer until `release` (the request's id: the response's X-Request-ID)."""
        self._held[request_id] = held

    def release(self, request_id: str, trace_id: str | None, status: int, latency_ms: float) -> None:
        """Hand the held answer, if any, to the writer once sent: only a 200 is captured."""
        held = self._held.pop(request_id, None)
        if held is None or status != 200:
            return
        if len(self._pending) >= self.queue_size:  # one producer (the event loop): no race past the bound
            self._dropped["queue_full"].inc()
            return
        self._pending.append((held, trace_id, time.time(), latency_ms))

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (waiting at most `timeout_s`), then stop the writer."""
        self._stop.set()
        self._thread.join(timeout_s)

    # -- the writer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        # Every GATHER_S the writer takes what gathered: one transaction and one write for many answers.
        # The event loop only appends to a deque (no lock, no wake-up), so it hardly notices the writer.
        pending = self._pending
        try:
            while True:
                stopping = self._stop.wait(GATHER_S)
                batch = [pending.popleft() for _ in range(len(pending))]
                if batch:
                    self._write(batch)
                if stopping:
                    return
                if time.monotonic() - self._maintained > MAINTENANCE_INTERVAL_S:
                    self._maintain()
        finally:
            self._close_file()
            if self._store is not None:
                self._store.close()

    def _write(self, batch: list[tuple[Held, str | None, float, float]]) -> None:
        keys: list[tuple[str, float]] = []
        lines: list[bytes] = []
        for answer in batch:
            for key, line in self._lines(*answer):
                keys.append((key, answer[2]))
                lines.append(line)
        try:
            self._index().record_captured(keys)
        except sqlite3.Error:
            self._dropped["index_error"].inc(len(batch))
            return
        try:
            self._append(lines)
        except OSError:
            self._close_file()  # a torn line stays last in its file; the next write opens a new one
            self._dropped["write_error"].inc(len(batch))
            return
        self._rows.inc(len(lines))

    def _lines(
        self, held: Held, trace_id: str | None, served_at: float, latency_ms: float
    ) -> list[tuple[str, bytes]]:
        """One answer's rows: each one's label key and JSON line (`CaptureRecord`'s fields, written with
        orjson, read back by `CaptureRecord.from_json`). Work per column, not per value, where it can."""
        if held.columns is not None:  # a typed model's values, per feature
            pairs = zip(self._convert, held.columns, strict=True)
            rows: Any = zip(*[convert(values) for convert, values in pairs if convert], strict=True)
            n = len(held.columns[0]) if held.columns else 0
        else:  # a numeric-only model's rows [N, F], non-null floats: one conversion for the whole array
            rows = (held.rows if self._kept_index is None else held.rows[:, self._kept_index]).tolist()
            n = len(rows)
            for j in self._hashed_index:
                for row in rows:
                    row[j] = redacted_value(row[j])
        scores = held.scores.tolist() if hasattr(held.scores, "tolist") else list(held.scores)
        outputs: list[dict[str, object]]
        if self._card.is_regression:
            outputs = [{"value": float(value)} for value in scores]
        else:
            predictions = (
                held.predictions.tolist() if hasattr(held.predictions, "tolist") else held.predictions
            )
            classes = self._classes
            outputs = [
                {"label": label, "probabilities": dict(zip(classes, row, strict=True))}
                for label, row in zip(predictions, scores, strict=True)
            ]
        common: dict[str, object] = {
            "request_id": held.answer_id,
            "trace_id": trace_id,
            "time": datetime.fromtimestamp(served_at, UTC).isoformat(timespec="milliseconds"),
            "model": self._card.name,
            "version": held.version,
            "latency_ms": round(latency_ms, 3),
            "rows": n,
            "v": CAPTURE_SCHEMA_VERSION,
        }
        names = self._kept
        out = []
        for i, values in enumerate(rows):
            record = {
                **common,
                "row": i,
                "inputs": dict(zip(names, values, strict=True)),
                "outputs": outputs[i],
            }
            out.append((label_key(held.answer_id, i, n), orjson.dumps(record) + b"\n"))
        return out

    def _index(self) -> LabelStore:
        if self._store is None:
            self._store = LabelStore(self.directory / LABELS_FILE, timeout_s=INDEX_TIMEOUT_S)
        return self._store

    def _append(self, lines: list[bytes]) -> None:
        """Append the lines to this worker's file, opening a new one where the next line would pass
        `max_file_bytes` (a line longer than that alone gets a file of its own)."""
        if self._fd is None:
            self._rotate()
        chunk = bytearray()
        for line in lines:
            if self._size + len(chunk) + len(line) > self.max_file_bytes and (self._size or chunk):
                if chunk:
                    self._write_all(chunk)
                    chunk = bytearray()
                self._rotate()
            chunk += line
        if chunk:
            self._write_all(chunk)

    def _write_all(self, data: bytearray) -> None:
        assert self._fd is not None
        if os.fstat(self._fd).st_nlink == 0:  # removed by another worker's retention: start a new file
            self._rotate()
            assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._size += written
            view = view[written:]

    def _rotate(self) -> None:
        self._close_file()
        self._maintain(opening=True)
        started = time.time()
        while True:
            path = self.directory / capture_file_name(started, os.getpid())
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
            except FileExistsError:
                started += 1e-6
                continue
            break
        self._path, self._size = path, 0

    def _close_file(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self._path = None, None

    def _maintain(self, *, opening: bool = False) -> None:
        """Retention over the directory: files beyond `max_files` (oldest first; counting this worker's
        open file, or the one it is `opening`) or untouched for the retention, and index rows older than
        it. Another worker may remove the same file first."""
        self._maintained = time.monotonic()
        now = time.time()
        files = [path for path in capture_files(self.directory) if path != self._path]
        keep = self.max_files - (1 if self._path is not None or opening else 0)
        excess = max(0, len(files) - keep)
        for index, path in enumerate(files):
            with contextlib.suppress(FileNotFoundError):
                if index < excess or path.stat().st_mtime < now - self.retention_s:
                    path.unlink()
        with contextlib.suppress(sqlite3.Error):
            self._index().forget_captured_before(now - self.retention_s)


_CONVERT: dict[str, Callable[[Any], object]] = {"int": int, "bool": bool, "string": str, "float": float}


def _column(kind: str, nullable: bool, hashed: bool) -> Callable[[Sequence[Any]], list[object]]:
    """How one feature's values (as the parser kept them: null as NaN, or "" for a nullable string) become
    the card's types, then, for a feature marked `hash`, pseudonyms (`redacted_value`: the input log's)."""
    convert = _CONVERT[kind]

    def typed(value: Any) -> object:
        if isinstance(value, str):
            return None if value == "" and nullable else value
        number = value.item() if hasattr(value, "item") else value
        if number is None or (isinstance(number, float) and math.isnan(number)):
            return None
        return convert(number)

    if hashed:
        return lambda values: [redacted_value(typed(value)) for value in values]
    if kind == "float" and not nullable:  # the usual numeric column: floats already, none missing
        return lambda values: [float(value) for value in values]
    return lambda values: [typed(value) for value in values]


# --- POST /v1/feedback --------------------------------------------------------------------------------
MAX_FEEDBACK_LABELS = 1000
"""Most labels in one `POST /v1/feedback` body; more is a 422 (send several requests, or `pipeline feedback`)."""
_ITEM_KEYS = frozenset({"request_id", "label"})


def parse_feedback(body: object) -> list[object]:
    """The items of a feedback body `{"labels": [{"request_id": ..., "label": ...}, ...]}`; `InvalidInput`
    (422) when the body as a whole is not of that form. An item's own faults are its outcome (`malformed`)."""
    if type(body) is not dict or set(body) != {"labels"}:
        raise InvalidInput('body: expected {"labels": [{"request_id": ..., "label": ...}, ...]}')
    items = body["labels"]
    if type(items) is not list or not items:
        raise InvalidInput("labels: expected a non-empty list of {request_id, label} objects")
    if len(items) > MAX_FEEDBACK_LABELS:
        raise InvalidInput(
            f"labels: {len(items)} items, at most {MAX_FEEDBACK_LABELS} per request; send several requests "
            "or import a file (python -m pipeline feedback --labels FILE)"
        )
    return items


def store_feedback(
    directory: Path, label_window_days: float, items: list[object], classes: Sequence[int | str]
) -> dict[str, Any]:
    """Store each item in `labels.sqlite` (blocking: run it off the event loop) and answer per item, in
    order: its outcome and what it means. A label is stored as the card types it (`card_label`: `classes`,
    none for a regression), as `pipeline feedback` stores a file's. Nothing but `stored` changes the store."""
    store = LabelStore(directory / LABELS_FILE, label_window_days=label_window_days)
    results: list[dict[str, object]] = []
    counts = dict.fromkeys(LabelOutcome, 0)
    try:
        received = time.time()
        for index, item in enumerate(items):
            message = None
            if type(item) is not dict or set(item) != _ITEM_KEYS:
                outcome = LabelOutcome.MALFORMED
            elif (label := card_label(item["label"], classes)) is None:
                outcome = LabelOutcome.MALFORMED
                expected = (
                    f"one of the classes {', '.join(map(str, classes))}" if classes else "a finite number"
                )
                message = f"label {item['label']!r}: expected {expected}; nothing stored"
            else:
                outcome = store.add(item["request_id"], label, received_at=received, source="api")
            request_id = item.get("request_id") if type(item) is dict else None
            results.append(
                {
                    "index": index,
                    "request_id": request_id if isinstance(request_id, str) else None,
                    "outcome": outcome.value,
                    "message": message or OUTCOME_MEANING[outcome],
                }
            )
            counts[outcome] += 1
    finally:
        store.close()
    return {"results": results, "counts": {outcome.value: n for outcome, n in counts.items()}}
