"""The client SDK's decisions without a network: which failures are retried and after how long, how the
service's error JSON becomes a typed exception, and how rows are checked against the card."""

import random
import struct
import time
from typing import Any

import httpx
import pytest

from model_client import (
    BadRequest,
    InvalidInput,
    Overloaded,
    Retry,
    RowError,
    ServerError,
    ServiceError,
    ServiceTimeout,
    ServiceUnreachable,
)
from model_client.client import _Attempt, _Core
from model_client.codec import Codec

CARD = {
    "card_version": 1,
    "name": "m",
    "version": "1",
    "features": [{"name": "a", "dtype": "float32"}, {"name": "b", "dtype": "float32"}],
    "onnx": {
        "file": "model.onnx",
        "sha256": "0" * 64,
        "opset": 17,
        "input": {"name": "input", "dtype": "float32"},
        "outputs": {"label": "label", "probabilities": "p"},
    },
    "classes": [0, 1],
}


def core(attempts: int = 3, timeout: float = 60.0) -> _Core:
    return _Core("http://127.0.0.1:1", None, None, timeout, Retry(attempts=attempts))


def codec() -> Codec:
    return Codec(dict(CARD))


def response(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def test_a_503_waits_its_retry_after_and_others_back_off_with_jitter() -> None:
    rng = random.Random(7)
    retry = Retry(backoff_s=0.1, max_backoff_s=0.3)
    for attempt in range(6):
        wait = retry.delay(attempt, response(503, headers={"retry-after": "2"}), rng)
        assert 2.0 <= wait <= 2.1
        wait = retry.delay(attempt, response(502), rng)
        assert 0.0 <= wait <= min(0.3, 0.1 * 2**attempt)
    waits = {retry.delay(3, None, rng) for _ in range(20)}
    assert len(waits) == 20  # jittered: no two clients wait alike


def test_4xx_and_500_are_raised_at_once_503_and_connection_failures_are_retried() -> None:
    attempt = next(core().attempts("POST", "/v1/predict", "rid", None))
    with pytest.raises(InvalidInput):
        attempt.failed(
            response(422, {"error": {"code": "invalid_input", "message": "x: bad", "request_id": "r"}})
        )
    with pytest.raises(BadRequest):
        attempt.failed(response(400, {"error": "not JSON"}))
    with pytest.raises(ServerError):
        attempt.failed(response(500, {"error": {"code": "internal_error", "message": "bug"}}))
    assert attempt.failed(response(503, {"error": "busy"}, {"retry-after": "1"})) >= 1.0
    assert attempt.failed(httpx.ConnectError("refused")) >= 0.0
    with pytest.raises(ServiceTimeout):
        attempt.failed(httpx.ReadTimeout("slow"))


def test_the_last_attempt_and_a_wait_past_the_deadline_raise_the_failure() -> None:
    c = core(attempts=2)
    last = _Attempt(c, 1, {}, "rid", 1.0, time.monotonic() + 60, "GET /v1/model")
    with pytest.raises(Overloaded):
        last.failed(response(503, {"error": "busy"}))
    with pytest.raises(ServiceUnreachable):
        last.failed(httpx.ConnectError("refused"))
    soon = _Attempt(c, 0, {}, "rid", 1.0, time.monotonic() + 0.5, "GET /v1/model")
    with pytest.raises(Overloaded):  # Retry-After 2 s would end past the deadline: not waited
        soon.failed(response(503, {"error": "busy"}, {"retry-after": "2"}))


def test_attempts_end_with_the_timeout_error_once_the_deadline_passed() -> None:
    attempts = core(attempts=5, timeout=0.0).attempts("GET", "/v1/model", "rid", None)
    with pytest.raises(ServiceTimeout, match=r"no answer within 0\.0 s"):
        next(attempts)


def test_error_json_of_both_protocols() -> None:
    v1 = ServiceError.of(
        response(
            422,
            {"error": {"code": "invalid_input", "message": "instances[3]: expected 30", "request_id": "r"}},
        ),
        "r",
    )
    assert isinstance(v1, InvalidInput)
    assert (v1.status, v1.code, v1.field) == (422, "invalid_input", "instances[3]")
    v2 = ServiceError.of(response(422, {"error": "inputs[0].shape: expected [N, 30]"}), "r")
    assert isinstance(v2, InvalidInput)
    assert (v2.code, v2.field, v2.body) == (
        None,
        "inputs[0].shape",
        {"error": "inputs[0].shape: expected [N, 30]"},
    )
    proxy = ServiceError.of(httpx.Response(502, text="<html>bad gateway</html>"), "r")
    assert isinstance(proxy, ServerError)
    assert "without the service's error JSON" in proxy.message


def test_rows_are_put_in_the_cards_order_and_checked() -> None:
    c = codec()
    assert c.matrix([{"b": 2.0, "a": 1}, [3.0, 4.0]]) == [[1, 2.0], [3.0, 4.0]]
    for row, message in (
        ({"a": 1.0}, r"rows\[0\]: missing feature 'b'"),
        ({"a": 1.0, "b": 2.0, "c": 3.0}, r"rows\[0\]: unknown feature 'c'"),
        ({"a": True, "b": 2.0}, r"rows\[0\]\['a'\]: expected a number \(float\), got bool"),
        ({"a": "1", "b": 2.0}, r"rows\[0\]\['a'\]: expected a number \(float\), got str"),
        ({"a": float("nan"), "b": 2.0}, r"rows\[0\]\['a'\]: expected a number, got NaN"),
        ({"a": float("inf"), "b": 2.0}, r"rows\[0\]\['a'\]: expected a finite number, got inf"),
        ({"a": None, "b": 2.0}, r"rows\[0\]\['a'\]: expected a number, got null"),
        ([1.0], r"rows\[0\]: expected 2 values in the card's order .*, got 1"),
        ("ab", r"rows\[0\]: expected 2 values in the card's order .*, got str"),
    ):
        with pytest.raises(RowError, match=message):
            c.matrix([row])


def test_v2_answers_as_json_and_as_binary_read_alike() -> None:
    c = codec()
    as_json = httpx.Response(
        200,
        json={
            "model_name": "m",
            "model_version": "1",
            "id": "r",
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]},
                {"name": "p", "datatype": "FP32", "shape": [2, 2], "data": [0.25, 0.75, 0.5, 0.5]},
            ],
        },
    )
    header = (
        b'{"model_name":"m","model_version":"1","id":"r","outputs":['
        b'{"name":"label","datatype":"INT64","shape":[2],"parameters":{"binary_data_size":16}},'
        b'{"name":"p","datatype":"FP32","shape":[2,2],"parameters":{"binary_data_size":16}}]}'
    )
    body = header + struct.pack("<2q", 1, 0) + struct.pack("<4f", 0.25, 0.75, 0.5, 0.5)
    binary = httpx.Response(200, content=body, headers={"inference-header-content-length": str(len(header))})
    for answer in (c.v2_answer(as_json), c.v2_answer(binary)):
        assert answer.predictions == [1, 0]
        assert answer.probabilities == [[0.25, 0.75], [0.5, 0.5]]
        assert (answer.model_name, answer.model_version, answer.request_id) == ("m", "1", "r")
