"""uvicorn's httptools protocol with the limits it lacks, answering each refusal in the JSON error format.

uvicorn offers a request-head size limit only for h11 (`h11_max_incomplete_event_size`); its httptools
protocol, which the service runs (faster, and what `uvicorn[standard]` picks), buffers a head without
bound and waits for it and for a body without a deadline. This subclass adds, per connection:

- a head size limit (431) and a header count limit (431);
- a head deadline from the first byte of a request (or from the connection's opening) to its last
  header (408), so slowloris connections are dropped;
- a body deadline from the end of the head to the end of the body (408), so a trickling body cannot
  hold a request forever; the middleware learns of it through `BODY_TIMED_OUT` in the scope;
- JSON bodies for uvicorn's own 400 (an unparsable request), and a 400 for a request without exactly
  one Host header (RFC 9112 section 3.2), answered in turn like any request;
- a cap on the requests waiting on one connection (`max_pipelined`): uvicorn parses every request a
  read holds and resumes reading after each answer, so one connection pipelining 13.6 MB of
  `GET /healthz` queued some 370,000 requests (a worker went from 101 MB to 1,049 MB). Here reads are
  parsed a slice at a time; once the cap is reached the rest of the read is held, reading stops, and
  the held bytes are parsed as answers drain;
- a cap on open connections per worker, below the descriptor limit (`ConnectionTable`): a newcomer
  past it closes the connection idle the longest (as nginx reuses keep-alive connections), or, when
  none is idle, is closed at once, so a flood of idle connections cannot use up the descriptors and a
  probe on a new connection is still served.

Timers are armed only while a head or a body is incomplete: a request that arrives whole in one read
(the common case) costs no timer, and is parsed in one slice.
"""

import asyncio
import resource
import secrets
import socket
import time
import weakref
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from model_service.operations.logs import JsonLog
from model_service.protocol.errors import error_json
from model_service.server.event_loop import LoopErrorLog

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
    max_pipelined: int = 16
    """Most requests waiting on one connection behind the one being answered; past it reading stops."""
    max_connections: int = 0
    """Most open connections per worker; 0: the descriptor limit less `DESCRIPTOR_RESERVE`."""


PARSE_SLICE_BYTES = 4096
"""A read is parsed this much at a time while it holds request heads, so the pipeline cap is checked every
few requests (a request arriving whole is one slice); a body of known length is parsed whole."""
LISTEN_BACKLOG = 2048
"""uvicorn's listen backlog (`backlog`): asyncio accepts up to this many waiting connections in one
wake-up, before this protocol can close any."""
DESCRIPTOR_RESERVE = LISTEN_BACKLOG + 256
"""Descriptors kept below the limit: one accept burst, and what is not a connection (the model, logs,
the event loop, metrics files). With it, a flood of connections never meets EMFILE in the accept loop."""
LOG_INTERVAL_S = 10.0
"""Connections closed for the limit are written to the log at once, then as one count per interval."""


def raise_descriptor_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard one (as Go's runtime does at start): the soft limit is
    often 1024, far below what the kernel allows the process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def derived_connection_limit() -> int:
    """The descriptor limit (RLIMIT_NOFILE, soft) less `DESCRIPTOR_RESERVE`; half the limit when it is
    below twice the reserve (a small limit: some connections must still be served)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    if soft >= 2 * DESCRIPTOR_RESERVE:
        return soft - DESCRIPTOR_RESERVE
    return max(16, soft // 2)


class ConnectionTable:
    """A worker's connections on one port: the limit, and the connections with no request in progress in
    the order they became so (oldest first), the ones a newcomer past the limit may close."""

    def __init__(self, limit: int, log: JsonLog) -> None:
        self.limit = limit
        self.idle: dict[GuardedHttpToolsProtocol, None] = {}
        self.log = log
        self._refused = 0
        self._evicted = 0
        self._report: asyncio.TimerHandle | None = None

    def count(self, loop: asyncio.AbstractEventLoop, *, refused: bool) -> None:
        """A connection closed for the limit: the first is logged at once, the next ones as counts at the
        end of the interval."""
        if self._report is None:
            self._write(refused=int(refused), idle_closed=int(not refused))
            self._report = loop.call_later(LOG_INTERVAL_S, self._write_counts)
        elif refused:
            self._refused += 1
        else:
            self._evicted += 1

    def _write_counts(self) -> None:
        self._report = None
        if self._refused or self._evicted:
            self._write(refused=self._refused, idle_closed=self._evicted)
            self._refused = self._evicted = 0

    def _write(self, *, refused: int, idle_closed: int) -> None:
        self.log.event(
            "WARNING",
            "connection_limit",
            limit=self.limit,
            idle_closed=idle_closed,
            refused=refused,
            interval_s=LOG_INTERVAL_S,
        )


_tables: weakref.WeakKeyDictionary[ServerState, ConnectionTable] = weakref.WeakKeyDictionary()


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


async def _bad_host(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer to a request without exactly one Host header, in its turn on the connection, which
    then closes (RFC 9112 section 3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    HTTP/1.1 request message that lacks a Host header field and to any request message that contains
    more than one Host header field line")."""
    hosts = sum(1 for name, _ in scope["headers"] if name == b"host")
    message = (
        "an HTTP/1.1 request needs a Host header" if hosts == 0 else f"{hosts} Host headers; send exactly one"
    )
    request_id = f"conn-{secrets.token_hex(6)}"
    body = error_json("bad_host", message, request_id, scope["path"])
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"x-request-id", request_id.encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
        self._hosts = 0
        self._body_left: int | None = None
        """Bytes of the current body still to come, when its Content-Length says so."""
        self._held = b""
        """The rest of a read not yet parsed because `max_pipelined` requests wait; reading is paused."""
        self._refused = False
        table = _tables.get(server_state)
        if table is None:  # the worker's first connection
            table = ConnectionTable(limits.max_connections or derived_connection_limit(), JsonLog())
            _tables[server_state] = table
            if self.loop.get_exception_handler() is None:
                self.loop.set_exception_handler(LoopErrorLog(table.log))
        self.table = table

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        table = self.table
        if len(self.connections) >= table.limit:
            oldest = next(iter(table.idle), None)
            if oldest is None:  # every connection is busy: this one goes, before it costs anything more
                self.transport, self._refused = transport, True
                transport.abort()
                table.count(self.loop, refused=True)
                return
            del table.idle[oldest]
            oldest.transport.abort()
            table.count(self.loop, refused=False)
        table.idle[self] = None
        super().connection_made(transport)
        # asyncio sets TCP_NODELAY only on sockets whose `proto` is TCP; with several workers the listening
        # socket (uvicorn's, rebuilt from a file descriptor, or the worker's own from event_loop.py) has
        # proto 0, so its connections would wait ~40 ms on delayed ACKs (2 workers: 710 requests/s, not 16,000).
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self.table.idle.pop(self, None)
        self._held = b""
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._held:  # read before the pause took effect: parsed after what is held
            self._held += data
            return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Parse a slice at a time; once `max_pipelined` requests wait, hold the rest and stop reading."""
        view = memoryview(data)
        while view:
            if len(self.pipeline) >= self.limits.max_pipelined:
                self._held = bytes(view)
                self.flow.pause_reading()
                return
            size = PARSE_SLICE_BYTES
            if not self._reading_head and self._body_left:
                size = max(size, self._body_left)
            self._parse_slice(view[:size])
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return  # closed, or upgraded (WebSocket): the rest is not this parser's, as in uvicorn
            view = view[size:]

    def _parse_held(self) -> None:
        if self.transport.is_closing() or not self._held:
            return
        held, self._held = self._held, b""
        self._parse(held)
        if not self._held and not self.pipeline and not self.transport.is_closing():
            self.flow.resume_reading()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next request waiting, and resumes reading
        if self.transport.is_closing():
            return
        if self._held:
            self.flow.pause_reading()  # still paused until what is held is parsed
            self.loop.call_soon(self._parse_held)
        elif len(self.pipeline) >= self.limits.max_pipelined:
            self.flow.pause_reading()
        if not self.pipeline and not self._held and self.cycle.response_complete:
            self.table.idle[self] = None  # no request in progress: first to go when connections run out

    def _parse_slice(self, data: memoryview) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)  # type: ignore[arg-type]  # httptools takes any buffer
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
        self._hosts = 0
        self._body_left = None
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
        size = len(name)  # lower-cased only when the length matches: this runs for every header
        if size == 4 and name.lower() == b"host":
            self._hosts += 1
        elif size == 14 and name.lower() == b"content-length" and value.isdigit():
            self._body_left = int(value)
        super().on_header(name, value)

    def on_body(self, body: bytes) -> None:
        if self._body_left is not None:
            self._body_left -= len(body)
        super().on_body(body)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_begun = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.scope[ARRIVED] = time.perf_counter()  # type: ignore[literal-required]
        self.table.idle.pop(self, None)
        if self._hosts == 1 or (self._hosts == 0 and self.parser.get_http_version() != "1.1"):
            super().on_headers_complete()
            return
        app, self.app = self.app, _bad_host  # answered in its turn, as uvicorn runs an app
        try:
            super().on_headers_complete()
        finally:
            self.app = app

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
