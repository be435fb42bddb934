"""The service as a process: v2 client traffic, load shedding, graceful SIGTERM, one /metrics for all workers
(on the metrics port; the API port answers 404)."""

from __future__ import annotations

import gzip
import json
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests._metrics import scraped_when

if TYPE_CHECKING:
    from tests.integration.service.conftest import Server

NAME = "breast-cancer-classifier"


def rows(model_dir: Path, n: int = 1) -> list[list[float]]:
    return json.loads((model_dir / "eval.json").read_text())["rows"][:n]  # type: ignore[no-any-return]


def test_v1_and_v2_over_http(start_server: Callable[..., Server], model_dir: Path) -> None:
    server = start_server()
    with httpx.Client(base_url=server.url) as client:
        response = client.post("/v1/predict", json={"instances": rows(model_dir, 3)})
        assert response.status_code == 200
        assert len(response.json()["predictions"]) == 3
        # What a v2 client (KServe InferenceRESTClient, tritonclient) sends: flat row-major data.
        flat = [value for row in rows(model_dir, 2) for value in row]
        infer = {"inputs": [{"name": "input", "shape": [2, 30], "datatype": "FP32", "data": flat}]}
        body = client.post(f"/v2/models/{NAME}/infer", json=infer).json()
        assert {output["name"] for output in body["outputs"]} == {"label", "probabilities"}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        bad = client.post("/v1/predict", content=b"{", headers={"content-type": "application/json"})
        assert bad.status_code == 400
        assert bad.json()["error"]["request_id"] == bad.headers["x-request-id"]


def test_overload_sheds_with_503_and_retry_after(
    start_server: Callable[..., Server], model_dir: Path
) -> None:
    server = start_server(max_in_flight=1, fault_latency_ms=400, retry_after_s=2)
    body = {"instances": rows(model_dir)}

    def call(_: int) -> httpx.Response:
        return httpx.post(f"{server.url}/v1/predict", json=body, timeout=10)

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(call, range(4)))
    statuses = sorted(response.status_code for response in responses)
    assert 200 in statuses
    assert 503 in statuses
    shed = next(response for response in responses if response.status_code == 503)
    assert shed.headers["retry-after"] == "2"
    assert shed.json()["error"]["code"] == "overloaded"
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # probes are not shed


def test_sigterm_drains_in_flight_request(start_server: Callable[..., Server], model_dir: Path) -> None:
    server = start_server(fault_latency_ms=1500, shutdown_delay_s=0.5)
    result: dict[str, Any] = {}

    def slow_request() -> None:
        result["response"] = httpx.post(
            f"{server.url}/v1/predict", json={"instances": rows(model_dir)}, timeout=15
        )

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.4)  # the request is in flight (1.5 s of injected latency)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    assert httpx.get(f"{server.url}/readyz").status_code == 503  # readiness turns false first
    thread.join(timeout=15)
    assert result["response"].status_code == 200
    assert server.process.wait(timeout=15) == 0


def test_one_metrics_endpoint_for_all_workers(start_server: Callable[..., Server], model_dir: Path) -> None:
    server = start_server("--workers", "2")
    with httpx.Client(base_url=server.url) as client:
        for _ in range(20):
            assert client.post("/v1/predict", json={"instances": rows(model_dir)}).status_code == 200
        public = client.get("/metrics")  # the API port never serves it, on either worker
        assert public.status_code == 404
        assert public.json()["error"]["code"] == "not_found"
    counted = 'model_service_requests_total{route="/v1/predict",status="200"} 20.0'
    scraped_when(server.metrics_url, counted)
    for _ in range(10):  # new connections each time: every scrape counts all 20
        text = httpx.get(f"{server.metrics_url}/metrics").text
        assert counted in text
    assert "model_service_model_info{" in text
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=20) == 0


def test_wrong_typed_fields_and_compressed_bodies_are_4xx(
    start_server: Callable[..., Server], model_dir: Path
) -> None:
    server = start_server()
    tensor = {"name": "input", "shape": [1, 30], "datatype": "FP32", "data": rows(model_dir)[0]}
    url = f"/v2/models/{NAME}/infer"
    with httpx.Client(base_url=server.url) as client:
        for body in (
            {"inputs": [{**tensor, "datatype": ["FP32"]}]},
            {"inputs": [tensor], "outputs": [{"name": {"label": 1}}]},
            {"inputs": [tensor], "outputs": []},
        ):
            response = client.post(url, json=body)
            assert response.status_code == 422, response.text
            assert isinstance(response.json()["error"], str)  # the protocol's {"error": "<message>"}
        compressed = gzip.compress(json.dumps({"inputs": [tensor]}).encode())
        response = client.post(
            url, content=compressed, headers={"content-type": "application/json", "content-encoding": "gzip"}
        )
        assert response.status_code == 415
        assert response.json()["error"].startswith("Content-Encoding 'gzip' is not supported")
        assert response.headers["accept-encoding"] == "identity"


def test_graceful_timeout_answers_json_503(start_server: Callable[..., Server], model_dir: Path) -> None:
    server = start_server(fault_latency_ms=20_000, graceful_timeout_s=1)
    result: list[httpx.Response] = []
    request = threading.Thread(
        target=lambda: result.append(
            httpx.post(f"{server.url}/v1/predict", json={"instances": rows(model_dir)}, timeout=30)
        )
    )
    request.start()
    time.sleep(0.5)  # the request is in its injected latency
    server.process.send_signal(signal.SIGTERM)
    request.join(timeout=30)
    assert result, "no answer"
    assert result[0].status_code == 503
    assert result[0].json()["error"]["code"] == "shutting_down"
