"""Reading metrics in tests: an in-process app's own registry (a TestClient), or a real metrics port.

The app never serves /metrics: the metrics process does, from the workers' multiprocess files."""

import time
from typing import cast

import httpx
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from model_service.server.worker import Service


def worker_metrics(client: TestClient) -> str:
    service = cast("Service", cast("Starlette", client.app).state.service)
    service.flush_metrics()
    return generate_latest(service.served().metrics.registry).decode()


def scraped_when(metrics_url: str, needle: str, timeout_s: float = 10.0) -> str:
    """The metrics port's text once it holds `needle`: workers add their counts on a timer
    (FLUSH_INTERVAL_S) and the port renders no more often, so a count shows up within about a second."""
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"{metrics_url}/metrics", timeout=5).text
        except httpx.TransportError as exc:  # not listening yet
            text = repr(exc)
        if needle in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in {metrics_url}/metrics after {timeout_s:g} s:\n{text}")
