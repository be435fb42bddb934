"""Hostile and slow clients over raw sockets on 127.0.0.1: head limits, read deadlines, idle connections.

Each test uses a handful of connections for a few seconds; every refusal must be the JSON error format.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    from tests.integration.service.conftest import Server

READ_TIMEOUT_S = 8  # longer than every deadline set below: a missing answer fails, never hangs


@contextmanager
def connect(server: Server) -> Iterator[socket.socket]:
    url = urlsplit(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=READ_TIMEOUT_S)
    try:
        yield sock
    finally:
        sock.close()


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def json_error(raw: bytes, status: int) -> dict[str, Any]:
    """The error object of a raw HTTP response, after checking its status and content type."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), raw[:200]
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["content-type"] == "application/json"
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["request_id"] == headers["x-request-id"]
    return error


def test_oversized_head_is_431_and_closed(start_server: Callable[..., Server]) -> None:
    server = start_server()
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536)  # never terminated
        error = json_error(read_until_closed(sock), 431)
    assert error["code"] == "header_too_large"
    assert "16384 bytes" in error["message"]


def test_too_many_headers_is_431(start_server: Callable[..., Server]) -> None:
    server = start_server(max_headers=20)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        error = json_error(read_until_closed(sock), 431)
    assert error["code"] == "too_many_headers"


def test_malformed_request_is_json_400(start_server: Callable[..., Server]) -> None:
    server = start_server()
    with connect(server) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert json_error(read_until_closed(sock), 400)["code"] == "malformed_request"


def test_slowloris_head_is_408_and_silent_connection_closed(start_server: Callable[..., Server]) -> None:
    server = start_server(header_timeout_s=1)
    with connect(server) as trickling, connect(server) as silent:
        trickling.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):  # a header line now and then, never the blank line
            time.sleep(0.5)
            try:
                trickling.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break  # closed by the server already
        error = json_error(read_until_closed(trickling), 408)
        assert error["code"] == "request_timeout"
        assert read_until_closed(silent) == b""  # opened, sent nothing: closed without an answer


def test_slowloris_head_after_a_served_request_is_408(start_server: Callable[..., Server]) -> None:
    """The head deadline of a later request on a kept-alive connection (a head that arrives whole sets no
    timer; one that does not must still get its deadline)."""
    server = start_server(header_timeout_s=1, keep_alive_timeout_s=30)
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)  # the first request is served before the second begins
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        # Within READ_TIMEOUT_S (the socket's timeout), far below the keep-alive timeout.
        served, refused, rest = read_until_closed(sock).partition(b"HTTP/1.1 408 ")
    assert served.startswith(b"HTTP/1.1 200 "), served
    error = json_error(refused + rest, 408)
    assert error["code"] == "request_timeout"


def test_trickled_body_is_408_and_holds_no_in_flight_slot(
    start_server: Callable[..., Server], model_dir: Path
) -> None:
    server = start_server(max_in_flight=2, body_timeout_s=3)
    row = json.loads((model_dir / "eval.json").read_text())["rows"][0]
    body = json.dumps({"instances": [row]}).encode()
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Request-ID: slow-%d\r\nContent-Length: %d\r\n\r\n"
    )
    with connect(server) as a, connect(server) as b, connect(server) as c:
        stalled = [a, b, c]
        for i, sock in enumerate(stalled):
            sock.sendall(head % (i, len(body)) + body[:5])  # more stalled bodies than max_in_flight
        time.sleep(0.3)
        # The stalled requests hold no in-flight slot: a whole request is served meanwhile.
        response = httpx.post(f"{server.url}/v1/predict", json={"instances": [row]}, timeout=READ_TIMEOUT_S)
        assert response.status_code == 200, response.text
        for i, sock in enumerate(stalled):
            error = json_error(read_until_closed(sock), 408)
            assert error["code"] == "request_timeout"
            assert error["request_id"] == f"slow-{i}"


def test_idle_keep_alive_connection_closed(start_server: Callable[..., Server]) -> None:
    server = start_server(keep_alive_timeout_s=1)
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(sock)  # returns only because the server closes the idle connection
    assert answer.startswith(b"HTTP/1.1 200 ")
