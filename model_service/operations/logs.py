"""Structured logs: one orjson line per event on stderr, buffered and flushed by a timer (cheap per request).

uvicorn's and asyncio's own loggers (a malformed request, an error in the accept loop, a request cancelled
at shutdown) write through `JsonLogHandler` too (`LOG_CONFIG`, given to uvicorn), so every line of the
service's stderr is one JSON object; a traceback is a field of its line, never lines of its own.
"""

import contextlib
import logging
import os
import sys
import time
import traceback
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


def exception_fields(exc: BaseException) -> dict[str, str]:
    """`error` (type: message) and `traceback` (formatted, chained causes included) for a log line."""
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": "".join(traceback.format_exception(exc))}


class JsonLogHandler(logging.Handler):
    """A `logging` handler writing each record as a `JsonLog` event: `event` "log", the logger's name, its
    message and, with `exc_info`, the exception's fields."""

    def __init__(self, fd: int | None = None) -> None:
        super().__init__()
        self._log = JsonLog(fd)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name, "message": record.getMessage()}
            if record.exc_info and record.exc_info[1] is not None:
                fields.update(exception_fields(record.exc_info[1]))
            self._log.event(record.levelname, "log", **fields)
        except Exception:  # noqa: BLE001 - logging's contract: a failing handler reports, never raises
            self.handleError(record)


LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"json": {"()": JsonLogHandler}},
    "loggers": {
        "uvicorn": {"handlers": ["json"], "level": "WARNING", "propagate": False},
        "asyncio": {"handlers": ["json"], "level": "WARNING", "propagate": False},
    },
}
"""uvicorn's `log_config`: its loggers (`uvicorn.error` and the rest propagate to `uvicorn`) and asyncio's
through `JsonLogHandler`; the access log is off (the middleware writes one line per request)."""
