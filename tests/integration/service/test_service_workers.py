"""Several workers share the load of connections opened in a burst (model_service/server/event_loop.py): each
listens on a socket of its own and the kernel spreads new connections over them."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import psutil

if TYPE_CHECKING:
    from tests.integration.service.conftest import Server

CONNECTIONS = 64
FEWEST_PER_WORKER = 8
"""The kernel hashes each connection onto one of the 2 listening sockets: fewer than 8 of 64 on one
has a probability of about 1e-10. With one shared socket the worker that wakes first takes the burst."""
_LISTEN = "0A"  # TCP state in /proc/net/tcp


def _listening_sockets(port: int) -> int:
    """Listening TCP sockets on the port, counted by the kernel: one per socket, not per descriptor."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]]
    return sum(1 for row in rows if int(row[1].split(":")[1], 16) == port and row[3] == _LISTEN)


def _workers(server: Server) -> list[psutil.Process]:
    children = psutil.Process(server.process.pid).children()
    return [child for child in children if "spawn_main" in " ".join(child.cmdline())]


def _held(worker: psutil.Process, port: int) -> int:
    return sum(
        1
        for connection in worker.net_connections(kind="tcp")
        if connection.status == psutil.CONN_ESTABLISHED and connection.laddr.port == port
    )


def test_a_burst_of_connections_reaches_every_worker(start_server: Callable[..., Server]) -> None:
    server = start_server("--workers", "2")
    port = urlsplit(server.url).port
    assert port is not None
    workers = _workers(server)
    assert len(workers) == 2, [child.cmdline() for child in psutil.Process(server.process.pid).children()]
    deadline = time.monotonic() + 30  # ready means one worker is: the other may still be loading
    while _listening_sockets(port) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _listening_sockets(port) == 2  # one per worker; the parent's socket never listens

    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
    try:
        deadline = time.monotonic() + 30
        held = [_held(worker, port) for worker in workers]
        while sum(held) < CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.05)
            held = [_held(worker, port) for worker in workers]
        assert sum(held) == CONNECTIONS, held
        assert min(held) >= FEWEST_PER_WORKER, held
        for client in clients:  # every worker's socket serves
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            assert client.recv(64).startswith(b"HTTP/1.1 200 "), "no 200 from a worker"
    finally:
        for client in clients:
            client.close()


def test_one_worker_listens_on_one_socket(start_server: Callable[..., Server]) -> None:
    server = start_server()
    port = urlsplit(server.url).port
    assert port is not None
    assert _listening_sockets(port) == 1
