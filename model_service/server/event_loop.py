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

_INTERNET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


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
