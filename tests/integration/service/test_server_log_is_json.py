"""uvicorn's own lines (a malformed request; a request cancelled when the graceful shutdown times out) go
through the service's JSON log: every line of its stderr is one JSON object, a traceback is a field."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.integration.service.conftest import Server


def test_malformed_and_cancelled_requests_are_json_lines(
    start_server: Callable[..., Server], model_dir: Path, tmp_path: Path
) -> None:
    server = start_server(fault_latency_ms=20_000, graceful_timeout_s=1)
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400 ")

    row = json.loads((model_dir / "eval.json").read_text())["rows"][0]
    answers: list[httpx.Response] = []

    def predict() -> None:  # delayed 20 s by the fault: still running when the shutdown times out
        answers.append(httpx.post(f"{server.url}/v1/predict", json={"instances": [row]}, timeout=30))

    slow = threading.Thread(target=predict)
    slow.start()
    time.sleep(1)
    server.stop()
    slow.join(timeout=30)
    assert answers[0].status_code == 503
    assert answers[0].json()["error"]["code"] == "shutting_down"

    (log_path,) = tmp_path.glob("server-*.log")
    lines: list[dict[str, Any]] = []
    for text in log_path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            raise AssertionError(f"a line of the service's log is not JSON: {text[:200]!r}") from None
    messages = {line["message"]: line for line in lines if line["event"] == "log"}
    assert messages["Invalid HTTP request received."]["logger"] == "uvicorn.error"
    assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in messages
    cancelled = messages["Exception in ASGI application\n"]
    assert cancelled["error"].startswith("CancelledError")
    assert cancelled["traceback"].startswith("Traceback (most recent call last):")
