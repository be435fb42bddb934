"""What the metrics port would show for one in-process app (a TestClient): its worker's registry, flushed.

The app never serves /metrics (the metrics process does, from the workers' multiprocess files;
tests/integration/service/test_service_metrics_port.py runs it for real)."""

from typing import cast

from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from model_service.state import Service


def worker_metrics(client: TestClient) -> str:
    service = cast("Service", cast("Starlette", client.app).state.service)
    service.flush_metrics()
    return generate_latest(service.served().metrics.registry).decode()
