"""A real Open Inference Protocol client (tritonclient's HTTP client, as teams use against Triton and
KServe) against the service process: JSON and binary tensor data, FP32/FP64 inputs, FP32 and INT64
outputs, a mixed-type model's string feature as BYTES, and its errors shown with the service's message."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

if TYPE_CHECKING:
    from tests.integration.service.conftest import Server

NAME = "breast-cancer-classifier"


def batch(model_dir: Path, n: int, dtype: Any = np.float32) -> Any:
    rows = json.loads((model_dir / "eval.json").read_text())["rows"]
    return np.asarray((rows * n)[:n], dtype=dtype)


def expected(server: Server, x: Any) -> tuple[list[int], Any]:
    """What /v1/predict answers for the same rows (the reference the v2 answers must match)."""
    body = httpx.post(f"{server.url}/v1/predict", json={"instances": x.tolist()}, timeout=10).json()
    return body["predictions"], np.asarray(body["probabilities"], dtype=np.float32)


def infer(
    client: triton.InferenceServerClient,
    x: Any,
    *,
    datatype: str,
    binary_input: bool,
    binary_output: bool,
) -> Any:
    tensor = triton.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary_input)
    outputs = [
        triton.InferRequestedOutput("label", binary_data=binary_output),
        triton.InferRequestedOutput("probabilities", binary_data=binary_output),
    ]
    return client.infer(NAME, [tensor], outputs=outputs)


def test_tritonclient_json_and_binary(start_server: Callable[..., Server], model_dir: Path) -> None:
    server = start_server()
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    x = batch(model_dir, 64)
    labels, probabilities = expected(server, x)
    cases = [
        (datatype, dtype, binary_input, binary_output)
        for datatype, dtype in (("FP32", np.float32), ("FP64", np.float64))
        for binary_input in (False, True)
        for binary_output in (False, True)
    ]
    for datatype, dtype, binary_input, binary_output in cases:
        result = infer(
            client, x.astype(dtype), datatype=datatype, binary_input=binary_input, binary_output=binary_output
        )
        response = result.get_response()
        for output in response["outputs"]:
            assert ("binary_data_size" in output.get("parameters", {})) is binary_output, output
        label = result.as_numpy("label")
        assert label.dtype == np.int64
        assert label.tolist() == labels
        proba = result.as_numpy("probabilities")
        assert proba.dtype == np.float32
        assert proba.shape == (64, 2)
        np.testing.assert_allclose(proba, probabilities, rtol=1e-6, atol=1e-7)


def test_tritonclient_shows_the_services_error_message(
    start_server: Callable[..., Server], model_dir: Path
) -> None:
    server = start_server()
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    x = batch(model_dir, 2)[:, :29]  # one feature short
    with pytest.raises(InferenceServerException) as caught:
        infer(client, x, datatype="FP32", binary_input=True, binary_output=True)
    assert caught.value.status() == "422"
    assert caught.value.message() == "inputs[0].shape: expected [N, 30], got [2, 29]"
    x = batch(model_dir, 2)
    x[1, 3] = np.nan  # JSON cannot carry a NaN; binary can, and it is refused the same way
    with pytest.raises(InferenceServerException) as caught:
        infer(client, x, datatype="FP32", binary_input=True, binary_output=False)
    assert caught.value.message() == "inputs[0].data[33]: expected a finite number, got nan"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("other")
    assert caught.value.message().startswith("model 'other' not found")


TRITON_DATATYPE_OF = {
    "float32": ("FP32", np.float32),
    "int64": ("INT64", np.int64),
    "string": ("BYTES", object),
}
"""The tensor datatype and numpy dtype tritonclient sends for each ONNX input dtype of a card."""


def test_tritonclient_bytes_json_and_binary(
    start_server: Callable[..., Server], mixed_model_dir: Path
) -> None:
    """A mixed-type model (card v2) called with one tensor per ONNX input, its string feature as BYTES."""
    card = json.loads((mixed_model_dir / "model.json").read_text())
    evaluation = json.loads((mixed_model_dir / "eval.json").read_text())
    names = evaluation["features"]
    # A missing number has no value in a binary FP32 tensor (NaN is refused); a missing string is "".
    rows = [row for row in evaluation["rows"] if row[names.index("age")] is not None]
    assert any(row[names.index("city")] is None for row in rows)  # the empty string is exercised
    server = start_server(model=mixed_model_dir)
    body = httpx.post(f"{server.url}/v1/predict", json={"instances": rows}, timeout=10).json()
    labels = body["predictions"]
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    model = card["name"]
    for binary_input in (False, True):
        for binary_output in (False, True):
            tensors = []
            for spec in card["onnx"]["inputs"]:
                datatype, dtype = TRITON_DATATYPE_OF[spec["dtype"]]
                columns = [names.index(feature) for feature in spec["features"]]
                values = [[row[j] for j in columns] for row in rows]
                if datatype == "BYTES":
                    x = np.array([[(v or "").encode() for v in row] for row in values], dtype=object)
                else:
                    x = np.asarray(values, dtype=dtype)
                tensor = triton.InferInput(spec["name"], list(x.shape), datatype)
                tensor.set_data_from_numpy(x, binary_data=binary_input)
                tensors.append(tensor)
            output = triton.InferRequestedOutput("label", binary_data=binary_output)
            result = client.infer(model, tensors, outputs=[output])
            (label,) = result.get_response()["outputs"]
            assert ("binary_data_size" in label.get("parameters", {})) is binary_output, label
            assert result.as_numpy("label").tolist() == labels, (binary_input, binary_output)
