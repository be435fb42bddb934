"""The client SDK (model_client) against the service process: retried through shedding, a 422
raised at once with its field, a dead service failing with the timeout error, auth, /v1 and /v2 alike."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest

from model_client import (
    AsyncClient,
    Client,
    InvalidInput,
    Retry,
    RowError,
    ServiceTimeout,
    ServiceUnreachable,
    Unauthorized,
)

if TYPE_CHECKING:
    from tests.integration.service.conftest import Server

NAME = "breast-cancer-classifier"
KEY = "sdk-test-key"


def eval_rows(model_dir: Path) -> list[list[float]]:
    return json.loads((model_dir / "eval.json").read_text())["rows"]  # type: ignore[no-any-return]


@pytest.mark.slow  # a shed burst, then retries after Retry-After
def test_shed_requests_are_retried_after_retry_after_and_succeed(
    start_server: Callable[..., Server], model_dir: Path, tmp_path: Path
) -> None:
    # One slot; each prediction holds it 3 s; a shed request is told to come back after 1 s.
    server = start_server(max_in_flight=1, fault_latency_ms=3000, retry_after_s=1)
    rows = eval_rows(model_dir)[:2]
    with Client(server.url, timeout=30, retry=Retry(attempts=10)) as client:
        client.card()  # read before the slot is taken (the card's route holds it as long)
        holder = threading.Thread(
            target=lambda: httpx.post(f"{server.url}/v1/predict", json={"instances": rows}, timeout=30)
        )
        holder.start()
        _wait_in_flight(server, 1)
        answer = client.predict(rows, request_id="retried-once-or-more")
        holder.join()
    assert answer.request_id == "retried-once-or-more"
    assert len(answer.predictions) == 2
    server.stop()
    statuses = [line["status"] for line in _request_lines(tmp_path, "retried-once-or-more")]
    assert statuses[-1] == 200
    assert set(statuses[:-1]) == {503}, statuses  # shed at least once, the same request id on every try
    assert len(statuses) >= 2


def _wait_in_flight(server: Server, count: int) -> None:
    """Until the service's in-flight gauge reads `count` (on the metrics port, which is never shed)."""
    pattern = re.compile(r"^model_service_in_flight_requests(?:\{[^}]*\})? (\S+)$", re.MULTILINE)
    for _ in range(300):
        found = pattern.search(httpx.get(f"{server.metrics_url}/metrics", timeout=5).text)
        if found and float(found[1]) >= count:
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"the service never had {count} request(s) in flight")


def _request_lines(tmp_path: Path, request_id: str) -> list[dict[str, Any]]:
    lines = []
    for log in tmp_path.glob("server-*.log"):
        for raw in log.read_text().splitlines():
            if raw.startswith("{"):
                line = json.loads(raw)
                if line.get("event") == "request" and line.get("request_id") == request_id:
                    lines.append(line)
    return lines


def test_422_is_raised_at_once_with_its_field(
    start_server: Callable[..., Server], model_dir: Path, tmp_path: Path
) -> None:
    server = start_server()
    row = eval_rows(model_dir)[0]
    row[2] = 1e39  # a number (the client's check passes) beyond the float32 model's range

    async def call() -> None:
        async with AsyncClient(server.url, retry=Retry(attempts=5)) as client:
            with pytest.raises(InvalidInput) as caught:
                await client.predict([row], request_id="bad-row")
            assert caught.value.status == 422
            assert caught.value.code == "invalid_input"
            assert caught.value.field == "instances[0][2] ('mean perimeter')"
            assert caught.value.body["error"]["request_id"] == "bad-row"
            with pytest.raises(RowError, match=r"rows\[0\]\['mean perimeter'\]: 1e\+39 is beyond FP32's"):
                await client.infer([row])  # binary FP32 cannot even carry it
            with pytest.raises(InvalidInput) as caught:  # /v2: the protocol's {"error": "<message>"}
                await client.infer([row], binary=False, request_id="bad-row-v2")
            assert caught.value.code is None
            assert caught.value.field.startswith("inputs[0].data")
            features = [f["name"] for f in (await client.card())["features"]]
            with pytest.raises(RowError, match=r"rows\[0\]: missing feature 'worst fractal dimension'"):
                await client.predict([dict(zip(features[:-1], row, strict=False))])

    asyncio.run(call())
    server.stop()
    assert [line["status"] for line in _request_lines(tmp_path, "bad-row")] == [422]  # one try, no retry
    assert [line["status"] for line in _request_lines(tmp_path, "bad-row-v2")] == [422]


@pytest.mark.slow  # waits out the client timeout
def test_a_stopped_service_fails_with_the_timeout_error(
    start_server: Callable[..., Server], model_dir: Path
) -> None:
    server = start_server()
    rows = eval_rows(model_dir)[:1]
    with Client(server.url, timeout=1.0) as client:
        client.card()
        server.process.send_signal(signal.SIGSTOP)  # accepts connections (the kernel does), never answers
        try:
            with pytest.raises(ServiceTimeout):
                client.predict(rows)
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert client.predict(rows).predictions  # and works again once it runs


def test_a_closed_port_is_unreachable_after_the_retries(model_dir: Path) -> None:
    with (
        socket_bound_not_listening() as url,
        Client(url, timeout=5, retry=Retry(attempts=3)) as client,
        pytest.raises(ServiceUnreachable),
    ):
        client.card()


class socket_bound_not_listening:
    """A port nobody listens on (bound, so no other process takes it meanwhile): connections are refused."""

    def __enter__(self) -> str:
        import socket  # noqa: PLC0415

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *_: object) -> None:
        self.sock.close()


def test_api_key_and_jwt_and_both_protocols(start_server: Callable[..., Server], model_dir: Path) -> None:
    secret = "s" * 32
    server = start_server(api_key_sha256=hashlib.sha256(KEY.encode()).hexdigest(), jwt_hs256_secret=secret)
    rows = eval_rows(model_dir)[:3]
    with Client(server.url, api_key=KEY) as client:
        features = [f["name"] for f in client.card()["features"]]
        by_name = [dict(zip(features, row, strict=True)) for row in rows]
        v1 = client.predict(by_name)
        for binary in (True, False):
            v2 = client.infer(rows, binary=binary)
            assert v2.predictions == v1.predictions
            assert v2.probabilities is not None and v1.probabilities is not None  # a classifier
            for ours, theirs in zip(v2.probabilities, v1.probabilities, strict=True):
                assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-7)
            assert v2.model_version == v1.model_version
    token = jwt.encode(
        {"sub": "sdk", "exp": int(time.time()) + 300, "scope": "model:read predict"},
        secret,
        algorithm="HS256",
    )
    with Client(server.url, token=token) as client:
        assert client.predict(rows).predictions == v1.predictions
    with Client(server.url, api_key="wrong", retry=Retry(attempts=5)) as client, pytest.raises(Unauthorized):
        client.card()
