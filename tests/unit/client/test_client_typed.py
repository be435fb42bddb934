"""The client SDK with card version 2 (docs/model-card.md), without a network: values checked by feature
type before anything is sent, one /v2 tensor per ONNX input in its datatype (JSON, and binary tensor data
read back with the service's own decoder), regression answers."""

import json
import struct
from typing import Any

import httpx
import numpy as np
import pytest

from model_client import ClientError, Row, RowError
from model_client.codec import Codec
from model_service.protocol.v2_binary import read_request

# The inputs are not in feature order and one input holds two features (a nullable float and a bool),
# so the client must place each feature by the card, not by position.
CARD: dict[str, Any] = {
    "card_version": 2,
    "name": "mixed",
    "version": "1",
    "task": "binary",
    "onnx": {
        "file": "model.onnx",
        "sha256": "0" * 64,
        "opset": 17,
        "inputs": [
            {"name": "numbers", "dtype": "float32", "features": ["age", "garden"]},
            {"name": "rooms", "dtype": "int64", "features": ["rooms"]},
            {"name": "income", "dtype": "float64", "features": ["income"]},
            {"name": "city", "dtype": "string", "features": ["city"]},
            {"name": "color", "dtype": "string", "features": ["color"]},
        ],
        "outputs": {"label": "label", "probabilities": "probabilities"},
    },
    "features": [
        {"name": "age", "type": "float", "nullable": True},
        {"name": "rooms", "type": "int", "nullable": False},
        {"name": "garden", "type": "bool", "nullable": False},
        {"name": "income", "type": "float", "nullable": False},
        {
            "name": "city",
            "type": "string",
            "nullable": True,
            "categories": ["Lyon", "Paris"],
            "unknown_category": "error",
        },
        {
            "name": "color",
            "type": "string",
            "nullable": False,
            "categories": ["red"],
            "unknown_category": "ignore",
        },
    ],
    "classes": [0, 1],
}
NAMES = [feature["name"] for feature in CARD["features"]]
FIRST = [41.5, 3, True, 52000.25, "Lyon", "red"]
GOOD: list[Row] = [
    FIRST,
    {"age": None, "rooms": 2, "garden": False, "income": 1e300, "city": None, "color": "Lyon-blue"},
]


def codec(card: dict[str, Any]) -> Codec:
    return Codec(card)


def test_rows_as_lists_or_objects_are_checked_by_feature_type() -> None:
    c = codec(CARD)
    assert c.matrix(GOOD) == [
        [41.5, 3, True, 52000.25, "Lyon", "red"],
        [None, 2, False, 1e300, None, "Lyon-blue"],  # an unknown color is the model's to ignore
    ]
    # pandas' missing value (NaN) is null where nullable; numpy numbers become Python's.
    row = [np.float32(np.nan), np.int64(4), False, np.float64(1.5), "Paris", "red"]
    assert c.matrix([row]) == [[None, 4, False, 1.5, "Paris", "red"]]
    assert type(c.matrix([row])[0][1]) is int


@pytest.mark.parametrize(
    ("feature", "value", "message"),
    [
        ("age", "41", r"rows\[1\]\['age'\]: expected a number or null \(float\), got str"),
        ("age", True, r"rows\[1\]\['age'\]: expected a number or null \(float\), got bool"),
        ("age", float("inf"), r"rows\[1\]\['age'\]: expected a finite number, got inf"),
        ("rooms", 2.0, r"rows\[1\]\['rooms'\]: expected an integer \(int\), got 2\.0 \(a float; send"),
        ("rooms", None, r"rows\[1\]\['rooms'\]: expected an integer, got null"),
        ("rooms", float("nan"), r"rows\[1\]\['rooms'\]: expected an integer, got NaN"),
        ("rooms", False, r"rows\[1\]\['rooms'\]: expected an integer \(int\), got bool"),
        ("rooms", 2**63, r"rows\[1\]\['rooms'\]: expected an integer within int64, got 9223372036854775808"),
        ("garden", 1, r"rows\[1\]\['garden'\]: expected true or false \(bool\), got int"),
        ("income", None, r"rows\[1\]\['income'\]: expected a number, got null"),
        ("city", 75, r"rows\[1\]\['city'\]: expected a string or null \(string\), got int"),
        (
            "city",
            "Marseille",
            (
                r"rows\[1\]\['city'\]: unknown category 'Marseille'; the model was trained on "
                r"\['Lyon', 'Paris'\] and refuses others"
            ),
        ),
        ("color", None, r"rows\[1\]\['color'\]: expected a string, got null"),
    ],
)
def test_a_bad_value_is_a_row_error_naming_row_and_feature(feature: str, value: Any, message: str) -> None:
    bad = dict(zip(NAMES, FIRST, strict=True))
    bad[feature] = value
    with pytest.raises(RowError, match=message):
        codec(CARD).matrix([FIRST, bad])
    as_list = [bad[name] for name in NAMES]
    with pytest.raises(RowError, match=message):
        codec(CARD).matrix([FIRST, as_list])


def test_a_card_the_client_cannot_read_is_a_client_error() -> None:
    with pytest.raises(
        ClientError, match=r"card_version: expected 1 or 2, got 3; this client reads card versions"
    ):
        _ = codec({**CARD, "card_version": 3}).model_card
    with pytest.raises(
        ClientError, match=r"model card \(GET /v1/model\): onnx\.file: expected a non-empty string"
    ):
        _ = codec({**CARD, "onnx": {"outputs": CARD["onnx"]["outputs"]}}).model_card  # no file, no inputs


def tensors_by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {tensor["name"]: tensor for tensor in body["inputs"]}


def test_v2_json_sends_one_tensor_per_onnx_input_in_its_datatype() -> None:
    c = codec(CARD)
    raw, headers = c.v2_request(c.matrix(GOOD), "r1", binary=False)
    assert headers == {"content-type": "application/json"}
    body = json.loads(raw)
    assert body["id"] == "r1"
    assert tensors_by_name(body) == {
        "numbers": {"name": "numbers", "shape": [2, 2], "datatype": "FP32", "data": [41.5, 1, None, 0]},
        "rooms": {"name": "rooms", "shape": [2, 1], "datatype": "INT64", "data": [3, 2]},
        "income": {"name": "income", "shape": [2, 1], "datatype": "FP64", "data": [52000.25, 1e300]},
        "city": {"name": "city", "shape": [2, 1], "datatype": "BYTES", "data": ["Lyon", None]},
        "color": {"name": "color", "shape": [2, 1], "datatype": "BYTES", "data": ["red", "Lyon-blue"]},
    }


def test_v2_binary_is_read_back_by_the_services_decoder() -> None:
    c = codec(CARD)
    rows: list[Row] = [FIRST, [7.25, -5, False, -0.5, "Paris", "été"]]  # no null: every input goes binary
    raw, headers = c.v2_request(c.matrix(rows), "r2", binary=True)
    assert headers["content-type"] == "application/octet-stream"
    body = read_request(raw, headers["inference-header-content-length"].encode())
    assert body["parameters"] == {"binary_data_output": True}
    tensors = tensors_by_name(body)
    assert tensors["numbers"]["data"].dtype == np.float32
    assert tensors["numbers"]["data"].tolist() == [41.5, 1.0, 7.25, 0.0]
    assert tensors["rooms"]["data"].dtype == np.int64
    assert tensors["rooms"]["data"].tolist() == [3, -5]
    assert tensors["income"]["data"].dtype == np.float64
    assert tensors["income"]["data"].tolist() == [52000.25, -0.5]
    assert tensors["city"]["data"].tolist() == [b"Lyon", b"Paris"]
    assert tensors["color"]["data"].tolist() == [b"red", "été".encode()]
    # BYTES framing per the extension: a 4-byte little-endian length, then the UTF-8 bytes.
    header_length = int(headers["inference-header-content-length"])
    assert raw[header_length:].endswith(struct.pack("<I", 3) + b"red" + struct.pack("<I", 5) + "été".encode())


def test_v2_binary_sends_an_input_holding_a_null_as_json_in_the_same_request() -> None:
    c = codec(CARD)
    raw, headers = c.v2_request(c.matrix(GOOD), "r3", binary=True)
    tensors = tensors_by_name(read_request(raw, headers["inference-header-content-length"].encode()))
    assert tensors["numbers"]["data"] == [41.5, 1, None, 0]  # age is null in row 1
    assert "parameters" not in tensors["numbers"]
    assert tensors["city"]["data"] == ["Lyon", None]
    assert tensors["rooms"]["parameters"] == {"binary_data_size": 16}
    assert tensors["rooms"]["data"].tolist() == [3, 2]
    assert tensors["color"]["data"].tolist() == [b"red", b"Lyon-blue"]


def test_a_value_beyond_fp32_names_its_row_and_feature_in_a_shared_input() -> None:
    card = json.loads(json.dumps(CARD))
    card["features"][3]["name"] = "income"
    card["onnx"]["inputs"][0]["features"] = ["garden", "income"]  # income now in the FP32 input, second
    card["onnx"]["inputs"][2]["features"] = ["age"]
    c = codec(card)
    rows = [[1.0, 3, True, 2.0, "Lyon", "red"], [1.0, 3, True, 1e39, "Lyon", "red"]]
    with pytest.raises(RowError, match=r"rows\[1\]\['income'\]: 1e\+39 is beyond FP32's range"):
        c.v2_request(c.matrix(rows), "r4", binary=True)


REGRESSION: dict[str, Any] = {
    "card_version": 2,
    "name": "price",
    "version": "2",
    "task": "regression",
    "onnx": {
        "file": "model.onnx",
        "sha256": "0" * 64,
        "opset": 17,
        "inputs": [{"name": "input", "dtype": "float32", "features": ["x", "y"]}],
        "outputs": {"value": "variable"},
    },
    "features": [
        {"name": "x", "type": "float", "nullable": False},
        {"name": "y", "type": "int", "nullable": False},
    ],
}


def test_regression_answers_carry_values_and_no_probabilities() -> None:
    c = codec(REGRESSION)
    v1 = c.v1_answer(
        httpx.Response(
            200,
            json={"request_id": "r", "model": {"name": "price", "version": "2"}, "predictions": [151.5, 7.0]},
        )
    )
    assert (v1.predictions, v1.probabilities) == ([151.5, 7.0], None)
    meta = {"model_name": "price", "model_version": "2", "id": "r"}
    as_json = httpx.Response(
        200,
        json={
            **meta,
            "outputs": [{"name": "variable", "datatype": "FP32", "shape": [2, 1], "data": [151.5, 7.0]}],
        },
    )
    header = json.dumps(
        {
            **meta,
            "outputs": [
                {
                    "name": "variable",
                    "datatype": "FP32",
                    "shape": [2, 1],
                    "parameters": {"binary_data_size": 8},
                }
            ],
        }
    ).encode()
    binary = httpx.Response(
        200,
        content=header + struct.pack("<2f", 151.5, 7.0),
        headers={"inference-header-content-length": str(len(header))},
    )
    for response in (as_json, binary):
        answer = c.v2_answer(response)
        assert (answer.predictions, answer.probabilities) == ([151.5, 7.0], None)
        assert (answer.model_name, answer.model_version, answer.request_id) == ("price", "2", "r")
    raw, _ = c.v2_request(c.matrix([{"x": 1.5, "y": 2}]), "r5", binary=False)
    assert json.loads(raw)["inputs"] == [
        {"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2]}
    ]


def test_string_class_labels_come_back_from_binary_bytes() -> None:
    c = codec(CARD)
    header = json.dumps(
        {
            "model_name": "mixed",
            "model_version": "1",
            "id": "r",
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 14}},
                {
                    "name": "probabilities",
                    "datatype": "FP64",
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": 32},
                },
            ],
        }
    ).encode()
    tail = (
        struct.pack("<I", 3) + b"yes" + struct.pack("<I", 3) + b"non" + struct.pack("<4d", 0.2, 0.8, 0.6, 0.4)
    )
    answer = c.v2_answer(
        httpx.Response(
            200, content=header + tail, headers={"inference-header-content-length": str(len(header))}
        )
    )
    assert answer.predictions == ["yes", "non"]
    assert answer.probabilities == [[0.2, 0.8], [0.6, 0.4]]
