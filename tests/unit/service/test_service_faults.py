"""Fault injection: off by default, refused in prod, 500s at about the configured ratio."""

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from model_service.operations.settings import ServiceSettings
from tests._metrics import worker_metrics


def test_refused_in_prod(model_dir: Path) -> None:
    with pytest.raises(ValidationError, match="refused when MODEL_SERVICE_ENVIRONMENT=prod"):
        ServiceSettings(model_dir=model_dir, environment="prod", fault_error_ratio=0.1)
    with pytest.raises(ValidationError, match="refused"):
        ServiceSettings(model_dir=model_dir, environment="prod", fault_latency_ms=5)
    assert not ServiceSettings(model_dir=model_dir, environment="prod").faults_enabled


def test_error_ratio(make_client: Callable[..., TestClient], rows: list[list[float]]) -> None:
    client = make_client(fault_error_ratio=0.3)
    statuses = [client.post("/v1/predict", json={"instances": rows[:1]}) for _ in range(300)]
    failed = [response for response in statuses if response.status_code == 500]
    assert {response.status_code for response in statuses} == {200, 500}
    assert 0.18 < len(failed) / len(statuses) < 0.42
    assert failed[0].json()["error"]["code"] == "injected_fault"
    assert client.get("/healthz").status_code == 200  # probes are never failed on purpose
    text = worker_metrics(client)
    assert f'model_service_requests_total{{route="/v1/predict",status="500"}} {len(failed)}.0' in text


def test_warning_logged_at_start(
    make_client: Callable[..., TestClient], capfd: pytest.CaptureFixture[str]
) -> None:
    make_client(fault_latency_ms=1)
    err = capfd.readouterr().err
    assert '"level":"WARNING","event":"fault_injection_on"' in err


def record_fault_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the injected delays (3 ms and 50 ms here) instead of sleeping them; every other sleep (the
    metrics flush timer, the test client) sleeps as usual."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float, *args: Any) -> Any:
        if seconds in (0.003, 0.05):
            delays.append(seconds)
            return None
        return await real_sleep(seconds, *args)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return delays


def test_latency_delays_the_configured_share_of_requests(
    make_client: Callable[..., TestClient], rows: list[list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    delays = record_fault_sleeps(monkeypatch)
    client = make_client(fault_latency_ms=3, fault_latency_ratio=0.25)
    for _ in range(400):
        assert client.post("/v1/predict", json={"instances": rows[:1]}).status_code == 200
    client.get("/healthz")  # probes are never delayed on purpose
    assert set(delays) == {0.003}
    assert 0.15 < len(delays) / 400 < 0.35


def test_latency_without_a_share_delays_every_request(
    make_client: Callable[..., TestClient], rows: list[list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    delays = record_fault_sleeps(monkeypatch)
    client = make_client(fault_latency_ms=50)
    for _ in range(20):
        client.post("/v1/predict", json={"instances": rows[:1]})
    assert delays == [0.05] * 20
