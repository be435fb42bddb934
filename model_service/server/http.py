"""uvicorn's httptools protocol with the limits it lacks, answering each refusal in the JSON error format.

uvicorn offers a request-head size limit only for h11 (`h11_max_incomplete_event_size`); its httptools
protocol, which the service runs (faster, and what `uvicorn[standard]` picks), buffers a head without
bound and waits for it and for a body without a deadline. This subclass adds, per connection:

- a head size limit (431) and a header count limit (431);
- a head deadline from the first byte of a request (or from the connection's opening) to its last
  header (408), so slowloris connections are dropped;
- a body deadline from the end of the head to the end of the body (408), so a trickling body cannot
  hold a request forever; the middleware learns of it through `BODY_TIMED_OUT` in the scope;
- JSON bodies for uvicorn's own 400 (an unparsable request).

Timers are armed only while a head or a body is incomplete: a request that arrives whole in one read
(the common case) costs no timer.
"""

import asyncio
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from model_service.protocol.errors import error_json

ARRIVED = "model_service.arrived"
"""Scope key: `time.perf_counter()` when the request's head was parsed, then when its body was complete;
the middleware sheds a request that waited for the event loop longer than MODEL_SERVICE_MAX_QUEUE_DELAY_MS
from either moment to its handler running (before it starts, and again once its body is read)."""
BODY_TIMED_OUT = "model_service.body_timed_out"
"""Scope key set when the body deadline passed; the 408 has been sent and the connection closed."""


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    """Largest request head (request line and headers) in bytes."""
    max_headers: int
    """Most header fields in one request."""
    header_timeout_s: float
    """Longest time from a request's first byte (or the connection's opening) to its last header."""
    body_timeout_s: float
    """Longest time from the end of the head to the end of the body."""


_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _error_response(status: int, code: str, message: str, request_id: str, path: str = "") -> bytes:
    body = error_json(code, message, request_id, path)
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-request-id: %s\r\n" % request_id.encode(),
            b"connection: close\r\n\r\n",
            body,
        )
    )


class _TooManyHeaders(Exception):
    """Raised from the parser's header callback to stop parsing (httptools wraps it in a parser error)."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        limits: HttpLimits,
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._reading_head = True
        self._head_begun = False
        self._head_bytes = 0
        self._header_count = 0
        self._refusal: tuple[int, str, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # asyncio sets TCP_NODELAY only on sockets whose `proto` is TCP; with several workers the listening
        # socket (uvicorn's, rebuilt from a file descriptor, or the worker's own from event_loop.py) has
        # proto 0, so its connections would wait ~40 ms on delayed ACKs (2 workers: 710 requests/s, not 16,000).
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._reading_head:
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(
                    431,
                    "header_too_large",
                    f"request head exceeds {self.limits.max_header_bytes} bytes; send smaller headers "
                    "(the service reads at most MODEL_SERVICE_MAX_HEADER_BYTES)",
                )
            elif self._head_begun and self._head_timer is None:
                # A request has begun and its head is not complete yet: the head deadline starts.
                self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)
        elif self._body_timer is None and self.cycle is not None:
            # The head is in and the body is not complete yet: the body deadline starts.
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)

    def on_message_begin(self) -> None:
        self._head_begun = True
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = (
                431,
                "too_many_headers",
                f"more than {self.limits.max_headers} header fields (MODEL_SERVICE_MAX_HEADERS)",
            )
            raise _TooManyHeaders
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_begun = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.scope[ARRIVED] = time.perf_counter()  # type: ignore[literal-required]
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self.scope is not None:  # the body is in: the request's wait for the event loop starts again
            self.scope[ARRIVED] = time.perf_counter()  # type: ignore[literal-required]
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._reading_head = True  # whatever comes next on this connection is a new request's head
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to an unparsable request, and the refusals raised from parser callbacks."""
        status, code, message = self._refusal or (
            400,
            "malformed_request",
            "the request is not valid HTTP/1.1; check the request line and headers",
        )
        self._refuse(status, code, message)

    def _refuse(self, status: int, code: str, message: str) -> None:
        self.transport.write(_error_response(status, code, message, f"conn-{secrets.token_hex(6)}"))
        self.transport.close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._reading_head:
            return
        if self._head_bytes == 0:
            self.transport.close()  # nothing was asked: close, as for an idle keep-alive connection
            return
        self._refuse(
            408,
            "request_timeout",
            f"request head not complete within {self.limits.header_timeout_s} s "
            "(MODEL_SERVICE_HEADER_TIMEOUT_S)",
        )

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle.response_started:
            return
        self.scope[BODY_TIMED_OUT] = True  # type: ignore[literal-required]
        request_id = str(self.scope.get("request_id", f"conn-{secrets.token_hex(6)}"))
        message = (
            f"request body not complete within {self.limits.body_timeout_s} s of the headers "
            "(MODEL_SERVICE_BODY_TIMEOUT_S); send the whole body at once"
        )
        path = str(self.scope.get("path", ""))
        self.transport.write(_error_response(408, "request_timeout", message, request_id, path))
        self.transport.close()
