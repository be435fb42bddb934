"""A real Open Inference Protocol client (tritonclient's HTTP client, as teams use against Triton and
KServe) against the service process: JSON and binary tensor data, FP32/FP64 inputs, FP32 and INT64
outputs, and its errors shown with the service's message."""

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
