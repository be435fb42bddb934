"""The binary tensor data extension in process: framing both ways, and every malformed framing refused
with the protocol's error shape and a message naming the field."""

import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from model_service.protocol.errors import InvalidInput
from model_service.protocol.v2_binary import decode, encode

NAME = "breast-cancer-classifier"
URL = f"/v2/models/{NAME}/infer"


def binary_request(
    header: dict[str, Any], tensors: bytes, *, header_length: str | None = None, content_type: str = ""
) -> dict[str, Any]:
    """Keyword arguments for TestClient.post: the JSON object, then the raw tensors."""
    head = orjson.dumps(header)
    headers = {"inference-header-content-length": header_length or str(len(head))}
    if content_type:
        headers["content-type"] = content_type
    return {"content": head + tensors, "headers": headers}


def tensor(x: Any, datatype: str = "FP32", **parameters: Any) -> dict[str, Any]:
    return {
        "name": "input",
        "shape": list(x.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": x.nbytes, **parameters},
    }


def split(response: Any) -> tuple[dict[str, Any], bytes]:
    length = int(response.headers["inference-header-content-length"])
    return orjson.loads(response.content[:length]), response.content[length:]


def v2_error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    return str(body["error"])


def test_binary_in_binary_out_matches_json(client: TestClient, rows: list[list[float]]) -> None:
    x = np.asarray(rows[:5], dtype=np.float32)
    reference = client.post(
        URL,
        json={
            "inputs": [{"name": "input", "shape": [5, 30], "datatype": "FP32", "data": x.ravel().tolist()}]
        },
    ).json()
    header = {"inputs": [tensor(x)], "parameters": {"binary_data_output": True}}
    response = client.post(
        URL, **binary_request(header, x.tobytes(), content_type="application/octet-stream")
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    body, tail = split(response)
    sizes = [output["parameters"]["binary_data_size"] for output in body["outputs"]]
    assert [output["name"] for output in body["outputs"]] == ["label", "probabilities"]
    assert all("data" not in output for output in body["outputs"])
    assert sizes == [5 * 8, 5 * 2 * 4]
    assert len(tail) == sum(sizes)
    label = np.frombuffer(tail[: sizes[0]], dtype="<i8")
    proba = np.frombuffer(tail[sizes[0] :], dtype="<f4").reshape(5, 2)
    assert label.tolist() == reference["outputs"][0]["data"]
    np.testing.assert_allclose(proba.ravel(), reference["outputs"][1]["data"], rtol=1e-6)


def test_per_output_flag_overrides_the_request_default(client: TestClient, rows: list[list[float]]) -> None:
    x = np.asarray(rows[:2], dtype=np.float64)
    header = {
        "inputs": [tensor(x, "FP64")],
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "label", "parameters": {"binary_data": False}}, {"name": "probabilities"}],
    }
    body, tail = split(client.post(URL, **binary_request(header, x.tobytes())))
    label, proba = body["outputs"]
    assert "data" in label and "parameters" not in label
    assert proba["parameters"] == {"binary_data_size": 16} == {"binary_data_size": len(tail)}
    # JSON in, one binary output out: a plain JSON request may ask for binary outputs too.
    request = {
        "inputs": [{"name": "input", "shape": [2, 30], "datatype": "FP64", "data": x.ravel().tolist()}],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
    }
    body, tail = split(client.post(URL, json=request))
    assert np.frombuffer(tail, dtype="<i8").tolist() == label["data"]


def test_json_without_binary_flags_is_unchanged(client: TestClient, rows: list[list[float]]) -> None:
    request = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": rows[0]}]}
    response = client.post(URL, json=request)
    assert response.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in response.headers


def test_malformed_framing_is_refused(client: TestClient, rows: list[list[float]]) -> None:
    x = np.asarray(rows[:2], dtype=np.float32)
    good = {"inputs": [tensor(x)]}
    data = x.tobytes()
    cases: list[tuple[dict[str, Any], int, str]] = [
        (binary_request(good, data, header_length="abc"), 400, "Inference-Header-Content-Length: expected"),
        (
            binary_request(good, data, header_length="999999"),
            400,
            "Inference-Header-Content-Length: expected",
        ),
        (binary_request(good, data, header_length="3"), 400, "the first 3 bytes"),
        (binary_request(good, data + b"\0\0\0\0"), 422, "body: 244 bytes follow the JSON object"),
        (
            binary_request(good, data[:-4]),
            422,
            "inputs[0].parameters.binary_data_size: 240 bytes from byte 0",
        ),
        (
            binary_request({"inputs": [tensor(x, binary_data_size=3)]}, data[:3]),
            422,
            "inputs[0].parameters.binary_data_size: 3 bytes is not a whole number of FP32 elements",
        ),
        (
            binary_request({"inputs": [tensor(x, binary_data_size=-1)]}, data),
            422,
            "inputs[0].parameters.binary_data_size: expected a byte count, got -1",
        ),
        (
            binary_request({"inputs": [{**tensor(x), "data": [1.0]}]}, data),
            422,
            "inputs[0]: has both 'data' and inputs[0].parameters.binary_data_size",
        ),
        (
            binary_request({"inputs": [{**tensor(x), "parameters": [1]}]}, data),
            422,
            "inputs[0].parameters: expected an object",
        ),
        (
            binary_request({"inputs": [tensor(x, "FP8")]}, data),
            422,
            "inputs[0].datatype: expected one of ['BOOL'",
        ),
        (
            binary_request({"inputs": [{**tensor(x[:1]), "shape": [2, 30]}]}, data[:120]),
            422,
            "inputs[0].data: expected 60 numbers for shape [2, 30], got 30",
        ),
        (
            binary_request({"inputs": [tensor(x.astype(np.int64), "INT64")]}, x.astype(np.int64).tobytes()),
            422,
            "inputs[0].datatype: expected one of ['FP32', 'FP64'], got 'INT64'",
        ),
        (
            binary_request({**good, "parameters": {"binary_data_output": "yes"}}, data),
            422,
            "parameters.binary_data_output: expected true or false, got 'yes'",
        ),
        (
            binary_request({**good, "outputs": [{"name": "label", "parameters": {"binary_data": 1}}]}, data),
            422,
            "outputs[0].parameters.binary_data: expected true or false, got 1",
        ),
    ]
    for kwargs, status, message in cases:
        response = client.post(URL, **kwargs)
        assert v2_error(response, status).startswith(message), (message, response.text)


def test_octet_stream_only_with_the_header(client: TestClient) -> None:
    response = client.post(URL, content=b"{}", headers={"content-type": "application/octet-stream"})
    assert "application/octet-stream" in v2_error(response, 415)


@pytest.mark.parametrize(
    ("datatype", "values"),
    [("INT64", [1, -2, 3]), ("FP16", [0.5, 1.0]), ("BOOL", [True, False]), ("UINT8", [0, 255])],
)
def test_fixed_size_datatypes_round_trip(datatype: str, values: list[Any]) -> None:
    raw = encode(datatype, values)
    assert decode("t", datatype, memoryview(raw)).tolist() == values


def test_bytes_round_trip_and_cut_short() -> None:
    raw = encode("BYTES", ["malignant", b"benign", 3])
    assert raw[:4] == struct.pack("<I", 9)
    assert decode("t", "BYTES", memoryview(raw)).tolist() == [b"malignant", b"benign", b"3"]
    with pytest.raises(InvalidInput, match=r"t.data\[2\]: BYTES element of 1 bytes runs past"):
        decode("t", "BYTES", memoryview(raw[:-1]))
    with pytest.raises(InvalidInput, match=r"t.data\[0\]: BYTES element cut short"):
        decode("t", "BYTES", memoryview(b"\x01\x00"))


sizes = st.integers(-2, 300) | st.none() | st.text(max_size=3) | st.floats(allow_nan=False)
binary_tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "x"]),
        "shape": st.lists(st.integers(-1, 3) | st.just(30), max_size=3),
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "FP16", "nope"]) | st.none(),
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_size": sizes}) | st.integers(-9, 9),
        "data": st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=3),
    },
)
binary_headers = st.fixed_dictionaries(
    {"inputs": st.lists(binary_tensor, max_size=2)},
    optional={
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_output": st.booleans() | st.integers(-9, 9)}
        ),
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["label", "probabilities", "x"])},
                optional={"parameters": st.fixed_dictionaries({}, optional={"binary_data": st.booleans()})},
            ),
            max_size=2,
        ),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=binary_headers, tail=st.binary(max_size=300), length_shift=st.integers(-3, 3) | st.just(0))
def test_binary_framing_never_5xx(
    client: TestClient, header: dict[str, Any], tail: bytes, length_shift: int
) -> None:
    """Whatever the JSON header, the sizes it declares and the bytes after it, the answer is never a 5xx."""
    head = orjson.dumps(header)
    length = str(len(head) + length_shift)
    response = client.post(URL, content=head + tail, headers={"inference-header-content-length": length})
    assert response.status_code < 500, response.text
