"""Every endpoint, both /v1 input forms and the Open Inference Protocol v2 as a v2 client sends it."""

import hashlib
from collections.abc import Callable
from typing import Any

import jsonschema
import numpy as np
import onnxruntime as ort
import pytest
from starlette.testclient import TestClient

from tests._metrics import worker_metrics

NAME = "breast-cancer-classifier"
VERSION = "0123456789ab"


def reference(model_dir: Any, rows: list[list[float]]) -> tuple[list[int], np.ndarray]:
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    label, proba = session.run(["label", "probabilities"], {"input": np.asarray(rows, dtype=np.float32)})
    return label.tolist(), proba


def test_predict_lists(client: TestClient, model_dir: Any, rows: list[list[float]]) -> None:
    response = client.post("/v1/predict", json={"instances": rows[:5]})
    assert response.status_code == 200
    body = response.json()
    labels, proba = reference(model_dir, rows[:5])
    assert body["predictions"] == labels
    np.testing.assert_allclose(body["probabilities"], proba, rtol=1e-6)
    assert body["model"] == {"name": NAME, "version": VERSION}
    assert body["request_id"] == response.headers["x-request-id"]


def test_predict_objects_wrapped_and_bare(
    client: TestClient, card: dict[str, Any], rows: list[list[float]]
) -> None:
    names = [feature["name"] for feature in card["features"]]
    objects = [dict(zip(names, row, strict=True)) for row in rows[:3]]
    expected = client.post("/v1/predict", json={"instances": rows[:3]}).json()
    for body in ({"instances": objects}, objects):
        response = client.post("/v1/predict", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == expected["predictions"]
        assert response.json()["probabilities"] == expected["probabilities"]


def test_objects_in_any_key_order(client: TestClient, card: dict[str, Any], rows: list[list[float]]) -> None:
    names = [feature["name"] for feature in card["features"]]
    shuffled = dict(reversed(list(zip(names, rows[0], strict=True))))
    ordered = client.post("/v1/predict", json={"instances": [rows[0]]}).json()
    assert client.post("/v1/predict", json=[shuffled]).json()["probabilities"] == ordered["probabilities"]


def test_model_card(client: TestClient, card: dict[str, Any]) -> None:
    assert client.get("/v1/model").json() == card


def test_probes(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", f"/v2/models/{NAME}/ready"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["x-request-id"]
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/health/live").json() == {"live": True}


def test_v2_metadata(client: TestClient) -> None:
    assert client.get("/v2").json()["name"] == "model-service"
    meta = client.get(f"/v2/models/{NAME}").json()
    assert meta["name"] == NAME
    assert meta["versions"] == [VERSION]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert {output["name"] for output in meta["outputs"]} == {"label", "probabilities"}
    assert client.get(f"/v2/models/{NAME}/versions/{VERSION}").status_code == 200


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_v2_infer_flat(client: TestClient, model_dir: Any, rows: list[list[float]], datatype: str) -> None:
    flat = [value for row in rows[:4] for value in row]
    request = {
        "id": "abc",
        "inputs": [{"name": "input", "shape": [4, 30], "datatype": datatype, "data": flat}],
    }
    response = client.post(f"/v2/models/{NAME}/infer", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (NAME, VERSION, "abc")
    outputs = {output["name"]: output for output in body["outputs"]}
    labels, proba = reference(model_dir, rows[:4])
    assert outputs["label"] == {"name": "label", "datatype": "INT64", "shape": [4], "data": labels}
    assert outputs["probabilities"]["shape"] == [4, 2]
    assert outputs["probabilities"]["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (4, 2)), proba, rtol=1e-6)


def test_v2_infer_nested_outputs_filter_and_version_route(
    client: TestClient, rows: list[list[float]]
) -> None:
    request = {
        "inputs": [{"name": "input", "shape": [2, 30], "datatype": "FP32", "data": rows[:2]}],
        "outputs": [{"name": "probabilities"}],
    }
    response = client.post(f"/v2/models/{NAME}/versions/{VERSION}/infer", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [output["name"] for output in body["outputs"]] == ["probabilities"]
    assert body["id"] == response.headers["x-request-id"]


def test_unknown_model_404(client: TestClient, rows: list[list[float]]) -> None:
    request = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": rows[0]}]}
    for response in (
        client.get("/v2/models/other"),
        client.get("/v2/models/other/ready"),
        client.post("/v2/models/other/infer", json=request),
        client.get(f"/v2/models/{NAME}/versions/nope"),
    ):
        assert response.status_code == 404
        assert "not found" in response.json()["error"]  # the protocol's {"error": "<message>"}


def test_openapi_and_docs(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for path in ("/v1/predict", "/v1/model", "/v2/models/{name}/infer", "/healthz", "/readyz"):
        assert path in document["paths"]
    assert "/metrics" not in document["paths"]  # served on the metrics port only
    schema = document["components"]["schemas"]["PredictRequest"]
    assert schema["oneOf"][0]["properties"]["instances"]["items"]["oneOf"][0]["minItems"] == 30
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text


def documented_error(document: dict[str, Any], path: str, method: str, status: int) -> str:
    """The name of the schema the document gives for an error answer of a route."""
    media = document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
    return str(media["schema"]["$ref"]).removeprefix("#/components/schemas/")


def test_openapi_documents_each_protocols_error_shape(
    make_client: Callable[..., TestClient], rows: list[list[float]]
) -> None:
    key = "s3cret-key"
    client = make_client(api_key_sha256=hashlib.sha256(key.encode()).hexdigest())
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status in (int(s) for s in operation["responses"] if int(s) >= 400):
                expected = "V2Error" if path.startswith("/v2") else "Error"
                assert documented_error(document, path, method, status) == expected, (path, status)
    signed = {"X-API-Key": key}
    v2_infer = f"/v2/models/{NAME}/infer"
    bad_shape = {"inputs": [{"name": "input", "shape": [1, 29], "datatype": "FP32", "data": rows[0][:29]}]}
    answers = [
        ("/v2", "get", client.get("/v2")),
        ("/v2/models/{name}", "get", client.get("/v2/models/other", headers=signed)),
        ("/v2/models/{name}/ready", "get", client.get("/v2/models/other/ready", headers=signed)),
        ("/v2/models/{name}/infer", "post", client.post(v2_infer, json=bad_shape, headers=signed)),
        ("/v2/models/{name}/infer", "post", client.post(v2_infer, content=b"{", headers=signed)),
        ("/v1/predict", "post", client.post("/v1/predict", json={"instances": [[1.0]]}, headers=signed)),
        ("/v1/model", "get", client.get("/v1/model")),
    ]
    client.app.state.service.draining = True  # type: ignore[attr-defined]
    answers.append(("/v2/health/ready", "get", client.get("/v2/health/ready")))
    assert [status for _, _, response in answers if (status := response.status_code) < 400] == []
    for path, method, response in answers:
        name = documented_error(document, path, method, response.status_code)
        jsonschema.validate(response.json(), schemas[name])
        other = schemas["Error" if name == "V2Error" else "V2Error"]
        assert not jsonschema.Draft202012Validator(other).is_valid(response.json()), (path, response.json())


def test_request_id_taken_from_header_or_generated(client: TestClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "trace-42"}).headers["x-request-id"] == "trace-42"
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert first and second and first != second


def test_metrics(client: TestClient, rows: list[list[float]]) -> None:
    client.post("/v1/predict", json={"instances": rows[:3]})
    client.post("/v1/predict", json={"instances": [[1.0]]})
    text = worker_metrics(client)
    assert 'model_service_requests_total{route="/v1/predict",status="200"} 1.0' in text
    assert 'model_service_requests_total{route="/v1/predict",status="422"} 1.0' in text
    assert (
        'model_service_request_duration_seconds_bucket{le="0.0005",route="/v1/predict",status="200"}' in text
    )
    assert "model_service_inference_duration_seconds_count 1.0" in text
    assert 'model_service_request_rows_bucket{le="4.0"} 1.0' in text
    assert "model_service_in_flight_requests 0.0" in text
    assert f'model_service_model_info{{name="{NAME}",sha256="' in text
    assert 'route="/healthz"' not in text  # probes stay out of the latency histograms


def test_draining_turns_readiness_false(client: TestClient) -> None:
    client.app.state.service.draining = True  # type: ignore[attr-defined]
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_api_port_does_not_serve_metrics(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
