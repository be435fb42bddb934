"""Spans over OTLP/HTTP from the service process to a real OTLP receiver process: `otelsink --http` (from
the `oteltest` package), which prints every export request it receives."""

from __future__ import annotations

import ast
import base64
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from tests.integration.service.conftest import Server

OTLP_HTTP_PORT = 4318
"""otelsink's port (fixed by it: no option to choose another)."""
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def otelsink(tmp_path: Path) -> Iterator[Path]:
    """The receiver running; yields the file its stdout goes to."""
    binary = shutil.which("otelsink", path=str(Path(sys.executable).parent))
    assert binary is not None, "otelsink (package oteltest, in the test dependency group) is not installed"
    output = tmp_path / "otelsink.out"
    with output.open("w") as out:
        process = subprocess.Popen([binary, "--http"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _listening(OTLP_HTTP_PORT):
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "otelsink did not listen within 30 s"
            time.sleep(0.1)
        yield output
    finally:
        process.terminate()
        process.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _spans(output: Path) -> list[dict[str, Any]]:
    """Every span in the export requests otelsink printed (protobuf's dict form: ids in base64)."""
    spans = []
    for line in output.read_text().splitlines():
        if not line.startswith("{'resourceSpans'"):
            continue
        for resource in ast.literal_eval(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                spans.extend(scope["spans"])
    return spans


def _hex(value: str) -> str:
    return base64.b64decode(value).hex()


def test_spans_reach_a_real_otlp_receiver(
    otelsink: Path,
    start_server: Callable[..., Server],
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{OTLP_HTTP_PORT}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export every 100 ms, not every 5 s
    server = start_server()
    rows = json.loads((model_dir / "eval.json").read_text())["rows"][:3]
    answer = httpx.post(
        f"{server.url}/v1/predict",
        json={"instances": rows},
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        timeout=10,
    )
    assert answer.status_code == 200
    span_id = answer.headers["traceparent"].split("-")[2]
    server.stop()  # the SDK flushes what is left at exit
    spans = {span["name"]: span for span in _spans(otelsink) if _hex(span["traceId"]) == TRACE_ID}
    assert set(spans) == {"POST /v1/predict", "validation", "inference"}, _spans(otelsink)
    request = spans["POST /v1/predict"]
    assert _hex(request["spanId"]) == span_id
    assert _hex(request["parentSpanId"]) == PARENT_ID
    assert request["kind"] == "SPAN_KIND_SERVER"
    for child in ("validation", "inference"):
        assert _hex(spans[child]["parentSpanId"]) == span_id
