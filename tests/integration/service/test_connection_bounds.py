"""The two floods of issue 36, on 127.0.0.1 against a real service process, bounded and measured.

- Pipelining: one connection sends megabytes of pipelined `GET /healthz`; the worker must stop reading
  while answers are queued (model_service/server/http.py, `max_pipelined`) so its memory stays flat,
  and every request still gets its answer, in order.
- Descriptors: thousands of idle connections against a lowered RLIMIT_NOFILE; the service keeps its
  connections below the limit, evicting the oldest idle one for a newcomer, so readiness probes on new
  connections are still answered, and nothing is written as a plain-text traceback.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.integration.service.conftest import Server, free_port, service_env

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
    probes: list[bool] = []
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


def test_pipelined_requests_with_bodies_are_each_answered_in_order(
    start_server: Callable[..., Server], model_dir: Path
) -> None:
    """Past the cap the rest of a read is held and parsed later: bodies (by Content-Length, and chunked)
    must come out whole, each request answered once, in the order sent."""
    server = start_server()
    rows = json.loads((model_dir / "eval.json").read_text())["rows"]
    requests = []
    for i in range(60):
        body = json.dumps({"instances": [rows[i % len(rows)]]}).encode()
        head = (
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Request-ID: r%d\r\n"
            % i
        )
        if i % 10 == 9:  # now and then a chunked body, in two chunks
            half = len(body) // 2
            chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:])
            requests.append(head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
        else:
            requests.append(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    with socket.create_connection(address(server), timeout=30) as sock:
        sock.sendall(b"".join(requests) + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = b""
        while chunk := sock.recv(1 << 16):
            answers += chunk
    statuses = answers.count(b"HTTP/1.1 200 ")
    ids = [line.split(b": ")[1] for line in answers.split(b"\r\n") if line.startswith(b"x-request-id: r")]
    assert statuses == 61
    assert ids == [b"r%d" % i for i in range(60)]


@contextmanager
def service_with_descriptor_limit(
    model_dir: Path, log_path: Path, descriptors: int, **settings: object
) -> Iterator[Server]:
    """`python -m model_service` with RLIMIT_NOFILE lowered to `descriptors` (soft and hard)."""
    port, metrics_port = free_port(), free_port()
    command = [sys.executable, "-m", "model_service", "--model-dir", str(model_dir)]
    command += ["--port", str(port), "--metrics-port", str(metrics_port)]

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))

    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            env=service_env(**settings),
            stdout=log,
            stderr=log,
            preexec_fn=lower_limit,  # noqa: PLW1509 - setrlimit only, before exec; no thread of ours runs
            text=True,
        )
    server = Server(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}")
    try:
        deadline = time.monotonic() + 30
        while not probe(server):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "service not ready after 30 s"
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def open_idle(server: Server, count: int, sockets: list[socket.socket]) -> int:
    """Open `count` connections that send nothing; returns how many the kernel let connect in time."""
    connected = 0
    for _ in range(count):
        try:
            sockets.append(socket.create_connection(address(server), timeout=2))
            connected += 1
        except OSError:
            pass
    return connected


def log_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the service's stderr, each of which must be one JSON object."""
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a line of the log is not JSON: {line[:200]!r}") from None
    return lines


def test_idle_connections_past_the_descriptor_limit_leave_probes_answered(
    model_dir: Path, tmp_path: Path
) -> None:
    """4,000 idle connections against 2,048 descriptors: the worker keeps 2,048 - 1,024 (half: the limit
    is below twice the reserve) and closes the one idle the longest for each newcomer."""
    log_path = tmp_path / "service.log"
    sockets: list[socket.socket] = []
    probes: list[bool] = []
    try:
        with service_with_descriptor_limit(model_dir, log_path, 2048) as server:
            pid = server.process.pid
            peak_descriptors = 0
            for _ in range(20):
                open_idle(server, 200, sockets)
                probes.append(probe(server))
                peak_descriptors = max(peak_descriptors, sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir()))
            closed_by_server = sum(1 for sock in sockets if is_closed(sock))
            lines = log_lines(log_path)
    finally:
        for sock in sockets:
            sock.close()
    print(
        f"idle flood: {len(sockets)} connections, {closed_by_server} closed by the service, peak "
        f"{peak_descriptors} descriptors of 2048; probes answered {sum(probes)}/{len(probes)}"
    )
    assert all(probes), probes
    assert peak_descriptors < 2048
    assert closed_by_server >= len(sockets) - 1024
    events = [line["event"] for line in lines]
    assert "connection_limit" in events
    assert "event_loop_error" not in events


def is_closed(sock: socket.socket) -> bool:
    """Whether the server closed (or reset) the connection: a read that ends, not one that would block."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_accept_errors_are_one_json_line_with_a_count(model_dir: Path, tmp_path: Path) -> None:
    """A connection limit set above the descriptor limit: asyncio's accept loop runs out of descriptors
    (EMFILE) and reports every connection it could not accept; the log gets one JSON line with the
    traceback, not a plain-text traceback per connection (71,469 of them in the issue's flood)."""
    log_path = tmp_path / "service.log"
    sockets: list[socket.socket] = []
    try:
        with service_with_descriptor_limit(model_dir, log_path, 512, max_connections=5000) as server:
            open_idle(server, 1500, sockets)
            time.sleep(0.5)
    finally:
        for sock in sockets:
            sock.close()
    lines = log_lines(log_path)
    errors = [line for line in lines if line["event"] == "event_loop_error"]
    assert len(errors) == 1, errors
    assert errors[0]["message"] == "socket.accept() out of system resource"
    assert "Too many open files" in errors[0]["error"]
    assert "Traceback" in errors[0]["traceback"]
    assert len(lines) < 20, [line["event"] for line in lines]
