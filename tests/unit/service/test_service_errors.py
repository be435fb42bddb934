"""Every class of bad input gets its status and a message naming the field; never a 500 or a trace."""

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from tests._metrics import worker_metrics

NAME = "breast-cancer-classifier"


def error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in body["message"]
    return str(body["message"])


def v2_error(response: Any, status: int) -> str:
    """The Open Inference Protocol's error shape: `{"error": "<message>"}` and nothing else."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"], body
    assert isinstance(body["error"], str)
    assert "Traceback" not in body["error"]
    assert response.headers["x-request-id"]
    return body["error"]


def test_malformed_json_400(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    message = error(
        client.post("/v1/predict", content=b'{"instances": [[1,', headers=headers), 400, "malformed_json"
    )
    assert "not valid JSON" in message
    error(client.post("/v1/predict", content=b"", headers=headers), 400, "malformed_json")
    error(client.post("/v1/predict", content=b'{"a": NaN}', headers=headers), 400, "malformed_json")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_wrong_content_type_415(client: TestClient, content_type: str) -> None:
    response = client.post(
        "/v1/predict", content=b'{"instances": []}', headers={"content-type": content_type}
    )
    assert content_type in error(response, 415, "unsupported_media_type")


def test_content_type_with_charset_is_json(client: TestClient, rows: list[list[float]]) -> None:
    body = orjson.dumps({"instances": rows[:1]})
    response = client.post(
        "/v1/predict", content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


def test_body_limit_413_by_content_length_and_by_stream(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=1000)
    big = b'{"instances": [' + b"0," * 1000 + b"0]}"
    response = client.post("/v1/predict", content=big, headers={"content-type": "application/json"})
    assert "1000 bytes" in error(response, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        yield b'{"instances": ['
        for _ in range(100):
            yield b"0," * 50
        yield b"0]}"

    response = client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    error(response, 413, "payload_too_large")


def test_row_length_422(client: TestClient, rows: list[list[float]]) -> None:
    instances = [rows[0]] * 3 + [rows[0][:29]]
    message = error(client.post("/v1/predict", json={"instances": instances}), 422, "invalid_input")
    assert message == "instances[3]: expected 30 numbers, got 29"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.5", "got string"),
        (True, "got boolean"),
        (None, "got null"),
        ([1], "got array"),
        ({"a": 1}, "got object"),
    ],
)
def test_wrong_type_422(client: TestClient, rows: list[list[float]], value: object, expected: str) -> None:
    row = list(rows[0])
    row[4] = value  # type: ignore[call-overload]
    message = error(client.post("/v1/predict", json={"instances": [rows[0], row]}), 422, "invalid_input")
    assert message.startswith("instances[1][4] ('mean smoothness'): expected a number")
    assert expected in message


def test_non_finite_422(client: TestClient, rows: list[list[float]]) -> None:
    row = list(rows[0])
    row[2] = 1e39  # finite in JSON, infinite as float32
    message = error(client.post("/v1/predict", json={"instances": [row]}), 422, "invalid_input")
    assert message.startswith("instances[0][2] ('mean perimeter'): expected a finite float32")
    row[2] = 10**400  # beyond float64: orjson refuses the document itself
    error(client.post("/v1/predict", json={"instances": [row]}), 400, "malformed_json")


def test_beyond_float32_422_in_a_batch_too(client: TestClient, rows: list[list[float]]) -> None:
    # A one-row request's range check runs in Python, a batch's in numpy: both answer the same way.
    batch = [list(row) for row in rows[:20]]
    batch[17][5] = -1e39
    message = error(client.post("/v1/predict", json={"instances": batch}), 422, "invalid_input")
    assert message.startswith("instances[17][5] ('mean compactness'): expected a finite float32 number")
    batch[17][5] = -3.4e38  # the edge of float32's range is still a number
    ok = client.post("/v1/predict", json={"instances": batch})
    assert ok.status_code == 200
    assert len(ok.json()["predictions"]) == 20


def test_too_many_rows_422(make_client: Callable[..., TestClient], rows: list[list[float]]) -> None:
    client = make_client(max_rows=5)
    message = error(client.post("/v1/predict", json={"instances": rows[:6]}), 422, "invalid_input")
    assert message == "instances: expected at most 5 rows per request, got 6"
    assert client.post("/v1/predict", json={"instances": rows[:5]}).status_code == 200


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"instances": []}, "instances: expected at least 1 row, got 0"),
        ({"rows": [[1]]}, "body: expected an object with 'instances'"),
        ({"instances": 3}, "instances: expected a list of rows, got number"),
        ({"instances": [3]}, "instances[0]: expected a list of 30 numbers, got number"),
        ([[1, 2]], "body: a bare list must hold objects"),
        ("text", "body: expected a list of rows, got string"),
    ],
)
def test_shape_errors_422(client: TestClient, body: object, expected: str) -> None:
    assert error(client.post("/v1/predict", json=body), 422, "invalid_input").startswith(expected)


def test_object_rows_name_the_feature(
    client: TestClient, card: dict[str, Any], rows: list[list[float]]
) -> None:
    names = [feature["name"] for feature in card["features"]]
    row = dict(zip(names, rows[0], strict=True))
    missing = {k: v for k, v in row.items() if k != "worst symmetry"}
    message = error(client.post("/v1/predict", json=[row, missing]), 422, "invalid_input")
    assert message.startswith("body[1]: missing feature 'worst symmetry'")
    extra = {**row, "colour": 1.0}
    assert "unknown feature 'colour'" in error(client.post("/v1/predict", json=[extra]), 422, "invalid_input")
    bad = {**row, "mean radius": "big"}
    message = error(client.post("/v1/predict", json={"instances": [bad]}), 422, "invalid_input")
    assert message.startswith("instances[0][0] ('mean radius'): expected a number, got string")


def v2(
    data: object, shape: object = (1, 30), datatype: object = "FP32", name: object = "input"
) -> dict[str, Any]:
    shape = list(shape) if isinstance(shape, tuple) else shape
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


def test_v2_errors_422(client: TestClient, rows: list[list[float]]) -> None:
    url = f"/v2/models/{NAME}/infer"
    cases = [
        (v2(rows[0], datatype="INT64"), "inputs[0].datatype: expected one of ['FP32', 'FP64'], got 'INT64'"),
        (v2(rows[0], shape=(1, 29)), "inputs[0].shape: expected [N, 30], got [1, 29]"),
        (v2(rows[0], shape=(30,)), "inputs[0].shape: expected [N, 30], got [30]"),
        (v2(rows[0][:29]), "inputs[0].data: expected 30 numbers for shape [1, 30], got 29"),
        (v2(rows[0], name="x"), "inputs[0].name: expected 'input', got 'x'"),
        (v2([*rows[0][:29], "a"]), "inputs[0].data[29]: expected a number, got string"),
        (v2(rows[:2], shape=(3, 30)), "inputs[0].data: expected 3 rows for the given shape, got 2"),
        (v2(rows[0], shape=(0, 30)), "inputs[0].shape[0]: expected at least 1 row, got 0"),
        ({"inputs": []}, "inputs: expected a list with 1 tensor named 'input'"),
        ([], "body: expected an object with 'inputs'"),
        ({**v2(rows[0]), "outputs": [{"name": "nope"}]}, "outputs[0].name: expected one of"),
        ({**v2(rows[0]), "id": 5}, "id: expected a string"),
        # Unhashable or wrong-typed values where a string is expected (these once gave 500s).
        (
            v2(rows[0], datatype=["FP32"]),
            "inputs[0].datatype: expected one of ['FP32', 'FP64'], got ['FP32']",
        ),
        (v2(rows[0], datatype={"a": 1}), "inputs[0].datatype: expected one of"),
        (v2(rows[0], name=["input"]), "inputs[0].name: expected 'input', got ['input']"),
        ({**v2(rows[0]), "outputs": [{"name": ["label"]}]}, "outputs[0].name: expected one of"),
        ({**v2(rows[0]), "outputs": [{"name": {"label": 1}}]}, "outputs[0].name: expected one of"),
        ({**v2(rows[0]), "outputs": [{"name": 3}]}, "outputs[0].name: expected one of"),
        ({**v2(rows[0]), "outputs": []}, "outputs: expected a non-empty list"),
        ({**v2(rows[0]), "outputs": {"name": "label"}}, "outputs: expected a non-empty list"),
    ]
    for body, expected in cases:
        assert v2_error(client.post(url, json=body), 422).startswith(expected), expected


def test_unknown_route_and_method(client: TestClient) -> None:
    error(client.get("/v3/anything"), 404, "not_found")
    error(client.get("/v1/predict"), 405, "method_not_allowed")
    assert "no route /v2/anything" in v2_error(client.get("/v2/anything"), 404)
    assert "POST" in v2_error(client.post("/v2/health/live"), 405)


def test_v2_errors_in_the_protocol_shape_v1_in_the_project_format(client: TestClient) -> None:
    """Malformed JSON, a wrong media type and an unknown model on v2 routes: `{"error": "<message>"}`;
    the same faults on /v1 keep the project's `{"error": {"code", "message", "request_id"}}`."""
    headers = {"content-type": "application/json"}
    assert "not valid JSON" in v2_error(
        client.post(f"/v2/models/{NAME}/infer", content=b"{", headers=headers), 400
    )
    assert "text/plain" in v2_error(
        client.post(f"/v2/models/{NAME}/infer", content=b"{}", headers={"content-type": "text/plain"}), 415
    )
    assert "model 'other' not found" in v2_error(client.get("/v2/models/other"), 404)
    assert "not valid JSON" in error(
        client.post("/v1/predict", content=b"{", headers=headers), 400, "malformed_json"
    )


def test_inference_routes_allow_only_post(client: TestClient) -> None:
    response = client.get("/v1/predict")
    assert "GET" in error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    for path in (f"/v2/models/{NAME}/infer", f"/v2/models/{NAME}/versions/1/infer"):
        response = client.get(path)
        assert "GET" in v2_error(response, 405)
        assert response.headers["allow"] == "POST"


def test_paths_that_only_look_like_inference_are_404(client: TestClient) -> None:
    for path in ("/v2/models//infer", "/v2/models/a/b/infer", "/v2/models/a/versions//infer"):
        v2_error(client.post(path, json={}), 404)
    error(client.post("/v1/predict/", json={}), 404, "not_found")


def test_v2_flat_data_beyond_float32_422(client: TestClient, rows: list[list[float]]) -> None:
    data = [*rows[0], *rows[1]]
    data[32] = -1e39
    body = {"inputs": [{"name": "input", "shape": [2, 30], "datatype": "FP32", "data": data}]}
    message = v2_error(client.post(f"/v2/models/{NAME}/infer", json=body), 422)
    assert message.startswith("inputs[0].data[1][2] ('mean perimeter'): expected a finite float32 number")


def test_client_gone_mid_body_is_499_not_an_error(
    capfd: pytest.CaptureFixture[str], make_client: Callable[..., TestClient]
) -> None:
    client = make_client()
    service = client.app.state.service  # type: ignore[attr-defined]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"instances": [[', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(client.app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 499
    service.log.flush()
    assert 'model_service_requests_total{route="/v1/predict",status="499"} 1.0' in worker_metrics(client)
    err = capfd.readouterr().err
    assert '"status":499' in err
    assert "unhandled_exception" not in err
