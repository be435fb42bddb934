"""The workers' asyncio event loop: with several workers, each listens on a socket of its own.

uvicorn's workers share the one listening socket its parent binds. An asyncio loop woken by a new
connection accepts every connection waiting on it (`_accept_connection` loops up to the backlog, 2048),
so when a client opens its connections in a burst (a connection pool, a load balancer, wrk) the first
worker to wake takes them all and the other workers idle for as long as those connections live: with 2
workers and 32 connections, one worker did all the work in half of the runs (10,200 against 20,900
req/s, docs/service.md, Overload). Accepting fewer per wake-up spreads a burst only when every worker
is on a CPU at that moment, and under a flood it leaves probes waiting in the kernel's queue.

So each worker binds a socket of its own to the same address with SO_REUSEPORT and listens on it; the
kernel hashes every new connection onto one of them (socket(7), SO_REUSEPORT), whether or not that
worker is on a CPU at the moment. The parent's socket stays bound and never listens, so no connection
waits on it. With one worker uvicorn binds its own listening socket and nothing changes.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from model_service.operations.logs import JsonLog, exception_fields

_INTERNET_FAMILIES = (socket.AF_INET, socket.AF_INET6)
REPEAT_INTERVAL_S = 10.0
"""An event-loop error is written at once, then its repeats as one count per interval."""


class LoopErrorLog:
    """The asyncio exception handler of a process serving HTTP (set by model_service/server/http.py at its
    first connection, whichever loop runs): an error in the loop itself (the accept loop out of
    descriptors: `socket.accept() out of system resource`) as one JSON line with its traceback, and its
    repeats within `REPEAT_INTERVAL_S` as one line with a count. asyncio's own handler wrote a plain-text
    traceback for each: out of descriptors, its accept loop retries every connection waiting (up to the
    listen backlog, 2048) on each wake-up, and 20,600 idle connections made 71,469 tracebacks (29.5 MB)."""

    def __init__(self, log: JsonLog, interval_s: float = REPEAT_INTERVAL_S) -> None:
        self.log = log
        self.interval_s = interval_s
        self._repeats: dict[str, int] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "unhandled exception in the event loop")
        repeats = self._repeats.get(message)
        if repeats is not None:
            self._repeats[message] = repeats + 1
            return
        self._repeats[message] = 0
        exc = context.get("exception")
        fields = exception_fields(exc) if isinstance(exc, BaseException) else {}
        self.log.event("ERROR", "event_loop_error", message=message, **fields)
        loop.call_later(self.interval_s, self._write_repeats, message)

    def _write_repeats(self, message: str) -> None:
        repeats = self._repeats.pop(message, 0)
        if repeats:
            self.log.event(
                "ERROR",
                "event_loop_error_repeated",
                message=message,
                count=repeats,
                interval_s=self.interval_s,
            )


class ReusePortEventLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, listening on a socket of this worker's own when uvicorn hands it the shared one."""

    async def create_server(
        self, protocol_factory: Any, host: Any = None, port: Any = None, *, sock: Any = None, **kwargs: Any
    ) -> asyncio.Server:
        if sock is not None and sock.family in _INTERNET_FAMILIES:
            sock = listening_socket_of_this_worker(sock)
        return await super().create_server(protocol_factory, host, port, sock=sock, **kwargs)


def listening_socket_of_this_worker(shared: socket.socket) -> socket.socket:
    """A socket bound to the shared socket's address, one of a SO_REUSEPORT group with the other
    workers' sockets. SO_REUSEADDR lets it bind next to the parent's socket, which never listens."""
    own = socket.socket(shared.family, socket.SOCK_STREAM)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    own.bind(shared.getsockname())
    return own


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop factory named to uvicorn (`loop="model_service.server.event_loop:new_event_loop"`)."""
    return ReusePortEventLoop()
