"""RFC 9112 section 3.2 (https://www.rfc-editor.org/rfc/rfc9112#section-3.2): "A server MUST respond with
a 400 (Bad Request) status code to any HTTP/1.1 request message that lacks a Host header field and to any
request message that contains more than one Host header field line". HTTP/1.0 has no such rule."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from tests.integration.service.conftest import Server


def exchange(server: Server, raw: bytes) -> bytes:
    """Send `raw`, read until the server closes (every case here ends in a close)."""
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def bad_host_error(raw: bytes) -> dict[str, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), raw[:200]
    assert b"content-type: application/json" in head
    assert b"connection: close" in head
    error: dict[str, str] = json.loads(body)["error"]
    assert error["code"] == "bad_host"
    return error


def test_a_request_without_exactly_one_host_is_400(start_server: Callable[..., Server]) -> None:
    server = start_server()
    missing = bad_host_error(exchange(server, b"GET /healthz HTTP/1.1\r\n\r\n"))
    assert missing["message"] == "an HTTP/1.1 request needs a Host header"
    two = bad_host_error(exchange(server, b"GET /healthz HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"))
    assert two["message"] == "2 Host headers; send exactly one"

    # Answered in its turn: the request before it on the connection gets its own answer first, and the
    # connection closes after the 400 (the request after it is never read).
    good = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    answers = exchange(server, good + b"GET /readyz HTTP/1.1\r\n\r\n" + good)
    first, refusal, rest = answers.partition(b"HTTP/1.1 400 ")
    assert first.startswith(b"HTTP/1.1 200 ")
    assert first.count(b"HTTP/1.1 200 ") == 1
    bad_host_error(refusal + rest)

    # HTTP/1.0 may omit Host.
    assert exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200 ")
