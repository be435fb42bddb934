"""The two floods of issue 36, on 127.0.0.1 against a real service process, bounded and measured.

- Pipelining: one connection sends megabytes of pipelined `GET /healthz`; the worker must stop reading
  while answers are queued (model_service/server/http.py, `max_pipelined`) so its memory stays flat,
  and every request still gets its answer, in order.
- Descriptors: thousands of idle connections against a lowered RLIMIT_NOFILE; the service keeps its
  connections below the limit, evicting the oldest idle one for a newcomer, so readiness probes on new
  connections are still answered, and nothing is written as a plain-text traceback.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    from tests.integration.service.conftest import Server

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def address(server: Server) -> tuple[str, int]:
    url = urlsplit(server.url)
    assert url.hostname is not None and url.port is not None
    return url.hostname, url.port


def probe(server: Server) -> bool:
    """One readiness probe on a new connection, as kubelet sends it (1 s timeout)."""
    try:
        return httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_a_pipelined_flood_on_one_connection_keeps_the_worker_memory_flat(
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    pid = server.process.pid  # one worker: uvicorn serves in the launcher's process
    count = 30_000  # 1 MB of requests: on the unbounded protocol the worker grew by some 70 MB
    flood = REQUEST * count
    baseline = rss_bytes(pid)
    peak = baseline
    answered = 0
    probes = []
    with socket.create_connection(address(server), timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(flood,), daemon=True)
        sender.start()
        tail = b""
        while answered < count:
            chunk = sock.recv(1 << 20)
            assert chunk, f"connection closed after {answered} answers"
            data = tail + chunk
            answered += data.count(b"HTTP/1.1 200 ")
            tail = data[-16:]
            answered -= tail.count(b"HTTP/1.1 200 ")  # counted again with the next chunk
            peak = max(peak, rss_bytes(pid))
            if len(probes) < answered // 3000:
                probes.append(probe(server))
        answered += tail.count(b"HTTP/1.1 200 ")
        sender.join(timeout=30)
    growth = peak - baseline
    print(
        f"pipelined flood: {len(flood) / 1e6:.1f} MB, {answered} answers, RSS {baseline / 1e6:.0f} MB -> "
        f"peak {peak / 1e6:.0f} MB; probes answered {sum(probes)}/{len(probes)}"
    )
    assert answered == count
    assert growth < 20e6, f"the worker grew by {growth / 1e6:.0f} MB on one connection"
    assert all(probes), probes
