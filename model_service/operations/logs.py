"""Structured logs: one orjson line per event on stderr, buffered and flushed by a timer (cheap per request)."""

import contextlib
import os
import sys
import time
from typing import Any

import orjson

_FLUSH_BYTES = 64 * 1024


class JsonLog:
    def __init__(self, fd: int | None = None) -> None:
        self._fd = sys.stderr.fileno() if fd is None else fd
        self._buffer = bytearray()

    def request(
        self,
        *,
        request_id: str,
        method: str,
        route: str,
        status: int,
        latency_ms: float,
        version: str,
        trace_id: str | None = None,
    ) -> None:
        """One line per request; `trace_id` (W3C trace context, model_service/operations/tracing.py) when traced."""
        line = {
            "ts": time.time(),
            "level": "INFO",
            "event": "request",
            "request_id": request_id,
            "method": method,
            "route": route,
            "status": status,
            "latency_ms": round(latency_ms, 3),
            "model_version": version,
        }
        if trace_id is not None:
            line["trace_id"] = trace_id
        self._buffer += orjson.dumps(line)
        self._buffer += b"\n"
        if len(self._buffer) >= _FLUSH_BYTES:
            self.flush()

    def event(self, level: str, event: str, **fields: Any) -> None:
        """A rare event (start, stop, warnings, errors): written at once."""
        self._buffer += orjson.dumps({"ts": time.time(), "level": level, "event": event, **fields}) + b"\n"
        self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        data, self._buffer = bytes(self._buffer), bytearray()
        with contextlib.suppress(OSError):  # stderr closed: losing log lines must not fail requests
            os.write(self._fd, data)
