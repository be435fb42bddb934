"""Card version 2 in the app: typed features (float, int, bool, string, nullable), one ONNX input per
column, regression and multiclass models; every bad value is a 422 naming its field."""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from starlette.testclient import TestClient

from model_service.model.drift import InputSampler
from model_service.model.runtime import load_card
from model_service.protocol.v2_binary import encode
from tests._metrics import worker_metrics

MIXED = "mixed-classifier"
ROW = {"age": 52.5, "rooms": 3, "garden": True, "city": "Paris"}


def eval_rows(model_dir: Path) -> list[list[Any]]:
    return json.loads((model_dir / "eval.json").read_text())["rows"]  # type: ignore[no-any-return]


def onnx_probabilities(model_dir: Path, rows: list[list[Any]]) -> Any:
    """What onnxruntime gives for the rows, fed by hand as the contract says (null: NaN or "")."""
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    age, rooms, garden, city = zip(*rows, strict=True)
    feeds = {
        "age": np.asarray([[np.nan if v is None else v] for v in age], dtype=np.float32),
        "rooms": np.asarray([[v] for v in rooms], dtype=np.int64),
        "garden": np.asarray([[float(v)] for v in garden], dtype=np.float32),
        "city": np.asarray([["" if v is None else v] for v in city], dtype=object),
    }
    return session.run(["probabilities"], feeds)[0]


def v2_body(rows: list[list[Any]]) -> dict[str, Any]:
    columns = list(zip(*rows, strict=True))
    n = len(rows)
    return {
        "inputs": [
            {"name": "city", "shape": [n, 1], "datatype": "BYTES", "data": list(columns[3])},
            {"name": "age", "shape": [n, 1], "datatype": "FP32", "data": list(columns[0])},
            {"name": "rooms", "shape": [n], "datatype": "INT64", "data": list(columns[1])},
            {"name": "garden", "shape": [n, 1], "datatype": "BOOL", "data": list(columns[2])},
        ]
    }


@pytest.fixture
def mixed(make_client: Callable[..., TestClient], mixed_model_dir: Path) -> TestClient:
    return make_client(model_dir=mixed_model_dir)


def test_typed_v1_lists_objects_and_v2_bytes_give_the_models_answer(
    mixed: TestClient, mixed_model_dir: Path
) -> None:
    rows = eval_rows(mixed_model_dir)
    assert any(None in row for row in rows)  # the rows hold missing ages and cities
    expected = onnx_probabilities(mixed_model_dir, rows)
    names = ["age", "rooms", "garden", "city"]
    as_lists = mixed.post("/v1/predict", json={"instances": rows}).json()
    as_objects = mixed.post("/v1/predict", json=[dict(zip(names, row, strict=True)) for row in rows]).json()
    as_v2 = mixed.post(f"/v2/models/{MIXED}/infer", json=v2_body(rows)).json()
    for body in (as_lists, as_objects):
        np.testing.assert_allclose(body["probabilities"], expected, rtol=1e-6)
        assert body["predictions"] == expected.argmax(axis=1).tolist()
    outputs = {output["name"]: output for output in as_v2["outputs"]}
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["probabilities"]["shape"] == [len(rows), 2]
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (-1, 2)), expected, rtol=1e-6)


def binary_body(rows: list[list[Any]], city: list[bytes] | None = None) -> dict[str, Any]:
    """`v2_body(rows)` with every tensor as binary data (`city`: its BYTES elements as raw bytes)."""
    body = v2_body(rows)
    tensors = []
    for tensor in body["inputs"]:
        data = city if city is not None and tensor["name"] == "city" else tensor.pop("data")
        tensor.pop("data", None)
        raw = encode(tensor["datatype"], data)
        tensor["parameters"] = {"binary_data_size": len(raw)}
        tensors.append(raw)
    head = orjson.dumps(body)
    return {
        "content": head + b"".join(tensors),
        "headers": {"inference-header-content-length": str(len(head))},
    }


def test_typed_v2_binary_tensors_with_bytes_answer_as_json(mixed: TestClient, mixed_model_dir: Path) -> None:
    # A missing age has no binary form (NaN is refused as in JSON); a missing city is the empty string.
    rows = [[*row[:3], row[3] or ""] for row in eval_rows(mixed_model_dir) if row[0] is not None]
    assert "" in (row[3] for row in rows)
    url = f"/v2/models/{MIXED}/infer"
    as_json = mixed.post(url, json=v2_body(rows))
    as_binary = mixed.post(url, **binary_body(rows))
    assert as_binary.status_code == 200, as_binary.text
    assert as_binary.json()["outputs"] == as_json.json()["outputs"]
    city = [b"Paris"] * (len(rows) - 1) + [b"Par\xe9"]  # Latin-1, not UTF-8
    refused = mixed.post(url, **binary_body(rows, city=city))
    assert refused.status_code == 422
    assert refused.json() == {
        "error": f"inputs[0].data[{len(rows) - 1}]: expected UTF-8 text; byte 3 of this element is not UTF-8"
    }


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**ROW, "city": 3}, "instances[0].city: expected a string or null, got number"),
        ({**ROW, "age": "52"}, "instances[0].age: expected a number or null, got string"),
        ({**ROW, "rooms": 2.5}, "instances[0].rooms: expected an integer, got a number with a fraction"),
        ({**ROW, "rooms": True}, "instances[0].rooms: expected an integer, got boolean"),
        ({**ROW, "rooms": None}, "instances[0].rooms: expected an integer, got null"),
        ({**ROW, "rooms": 2**63}, "instances[0].rooms: expected an integer within int64"),
        ({**ROW, "garden": 1}, "instances[0].garden: expected true or false, got number"),
        ({**ROW, "age": 1e39}, "instances[0].age: expected a finite float32 number"),
        ({k: v for k, v in ROW.items() if k != "city"}, "instances[0]: missing feature 'city'"),
        ({**ROW, "town": "Lyon"}, "instances[0]: unknown feature 'town'"),
    ],
)
def test_typed_bad_values_are_422_naming_the_field(
    mixed: TestClient, row: dict[str, Any], message: str
) -> None:
    response = mixed.post("/v1/predict", json={"instances": [row]})
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(message)


def test_typed_bad_values_in_lists_and_v2_name_row_and_feature(mixed: TestClient) -> None:
    good = list(ROW.values())
    response = mixed.post("/v1/predict", json={"instances": [good, good, good, [52.5, 3, True, 7]]})
    assert response.status_code == 422
    assert (
        response.json()["error"]["message"]
        == "instances[3][3] ('city'): expected a string or null, got number"
    )
    cases: list[tuple[Callable[[dict[str, Any]], object], str]] = [
        (
            lambda b: b["inputs"][0].update(datatype="FP32"),
            "inputs[0].datatype: expected BYTES for 'city', got 'FP32'",
        ),
        (
            lambda b: b["inputs"][1]["data"].__setitem__(1, "x"),
            "inputs[1].data[1] ('age'): expected a number or null, got string",
        ),
        (
            lambda b: b["inputs"][2].update(shape=[2, 2]),
            "inputs[2].shape: expected [N, 1] or [N], got [2, 2]",
        ),
        (
            lambda b: b["inputs"][3].update(shape=[3, 1], data=[True] * 3),
            "inputs[3].shape[0]: expected 2 rows as inputs[0], got 3",
        ),
        (
            lambda b: b["inputs"].pop(),
            "inputs: expected a list of 4 tensors named ['age', 'rooms', 'garden', 'city']",
        ),
        (lambda b: b["inputs"][1].update(name="city"), "inputs[1].name: 'city' given twice"),
        (
            lambda b: b["inputs"][2].update(datatype="FP32"),
            "inputs[2].datatype: expected INT64 for 'rooms', got 'FP32'",
        ),
    ]
    for change, message in cases:
        body = v2_body([good, good])
        change(body)
        response = mixed.post(f"/v2/models/{MIXED}/infer", json=body)
        assert response.status_code == 422, message
        assert response.json()["error"] == message  # the v2 protocol's error shape


def test_typed_unknown_category_follows_the_encoder(
    make_client: Callable[..., TestClient], mixed_model_dir: Path, mixed_strict_model_dir: Path
) -> None:
    berlin = {**ROW, "city": "Berlin"}
    ignoring = make_client(model_dir=mixed_model_dir).post(
        "/v1/predict", json=[berlin, {**ROW, "city": None}]
    )
    assert ignoring.status_code == 200
    strict = make_client(model_dir=mixed_strict_model_dir)
    refused = strict.post("/v1/predict", json=[ROW, berlin])
    assert refused.status_code == 422
    assert refused.json()["error"]["message"] == (
        "body[1].city: unknown category 'Berlin'; the model was trained on ['Lyon', 'Nice', 'Paris']"
    )
    # A missing city is fed as "", which the training data held: accepted.
    assert strict.post("/v1/predict", json=[{**ROW, "city": None}]).status_code == 200


def test_typed_openapi_has_a_typed_field_per_feature(
    make_client: Callable[..., TestClient], mixed_strict_model_dir: Path
) -> None:
    document = make_client(model_dir=mixed_strict_model_dir).get("/openapi.json").json()
    row = document["components"]["schemas"]["PredictRequest"]["oneOf"][1]["items"]
    assert row["properties"] == {
        "age": {"type": ["number", "null"], "title": "age"},
        "rooms": {"type": "integer", "title": "rooms"},
        "garden": {"type": "boolean", "title": "garden"},
        "city": {"type": ["string", "null"], "title": "city", "enum": ["Lyon", "Nice", "Paris", None]},
    }
    row_list = document["components"]["schemas"]["PredictRequest"]["oneOf"][0]["properties"]["instances"]
    assert [item["type"] for item in row_list["items"]["oneOf"][0]["prefixItems"]] == [
        ["number", "null"],
        "integer",
        "boolean",
        ["string", "null"],
    ]
    tensors = document["components"]["schemas"]["InferenceRequest"]["properties"]["inputs"]["items"]["oneOf"]
    assert {t["properties"]["name"]["const"]: t["properties"]["datatype"]["enum"] for t in tensors} == {
        "age": ["FP32"],
        "rooms": ["INT64"],
        "garden": ["FP32", "BOOL"],
        "city": ["BYTES"],
    }


def test_typed_v2_metadata_lists_the_real_inputs(mixed: TestClient) -> None:
    metadata = mixed.get(f"/v2/models/{MIXED}").json()
    assert metadata["inputs"] == [
        {"name": "age", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "rooms", "datatype": "INT64", "shape": [-1, 1]},
        {"name": "garden", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1, 1]},
    ]
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"]


def test_regression_answers_a_value_per_row(
    make_client: Callable[..., TestClient], regression_model_dir: Path
) -> None:
    client = make_client(model_dir=regression_model_dir)
    rows = eval_rows(regression_model_dir)[:3]
    session = ort.InferenceSession(
        str(regression_model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    expected = session.run(["variable"], {"input": np.asarray(rows, dtype=np.float32)})[0].ravel()
    body = client.post("/v1/predict", json={"instances": rows}).json()
    assert set(body) == {"request_id", "model", "predictions"}
    np.testing.assert_allclose(body["predictions"], expected, rtol=1e-6)
    flat = [v for row in rows for v in row]
    infer = {"inputs": [{"name": "input", "shape": [3, 10], "datatype": "FP32", "data": flat}]}
    (output,) = client.post("/v2/models/diabetes-regression/infer", json=infer).json()["outputs"]
    assert output["name"] == "variable"
    assert output["datatype"] == "FP32"
    assert output["shape"] == [3, 1]
    np.testing.assert_allclose(output["data"], expected, rtol=1e-6)
    metadata = client.get("/v2/models/diabetes-regression").json()
    assert metadata["outputs"] == [{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}]
    bad = client.post("/v1/predict", json={"instances": [["0.1", *rows[0][1:]]]})
    assert bad.status_code == 422
    assert bad.json()["error"]["message"] == "instances[0][0] ('age'): expected a number, got string"
    document = client.get("/openapi.json").json()
    response = document["components"]["schemas"]["PredictResponse"]["properties"]
    assert response["predictions"]["items"] == {"type": "number"}
    assert "probabilities" not in response


def test_multiclass_with_string_classes(make_client: Callable[..., TestClient], iris_model_dir: Path) -> None:
    client = make_client(model_dir=iris_model_dir)
    rows = eval_rows(iris_model_dir)
    expected = json.loads((iris_model_dir / "eval.json").read_text())["labels"]
    body = client.post("/v1/predict", json={"instances": rows}).json()
    assert body["predictions"] == expected  # the fitted model gets these easy rows right
    assert len(body["probabilities"][0]) == 3
    flat = [v for row in rows[:2] for v in row]
    infer = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": flat}]}
    outputs = client.post("/v2/models/iris-species/infer", json=infer).json()["outputs"]
    assert outputs[0] == {"name": "label", "datatype": "BYTES", "shape": [2], "data": expected[:2]}


def test_card_v1_is_read_as_its_v2_view(model_dir: Path) -> None:
    card = load_card(model_dir)
    assert card.card_version == 1
    assert card.task == "binary"
    assert card.numeric_only
    assert [(spec.name, spec.dtype, len(spec.features)) for spec in card.inputs] == [("input", "float32", 30)]
    assert {f.type for f in card.features} == {"float"}
    assert not any(f.nullable for f in card.features)


def scrape(client: TestClient, name: str) -> dict[tuple[str, ...], float]:
    """Samples of one metric by their label values (sorted by label name), non-zero only (the worker's own
    registry: the metrics port is a process of its own)."""
    out = {}
    for line in worker_metrics(client).splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            pairs = sorted(pair.split("=", 1) for pair in labels.split(","))
            if float(value):
                out[tuple(v.strip('"') for _, v in pairs)] = float(value)
    return out


def test_typed_drift_counts_categories_other_and_missing_bins(
    mixed: TestClient, mixed_model_dir: Path
) -> None:
    card = json.loads((mixed_model_dir / "model.json").read_text())
    age_bins = len(card["reference"]["features"][0]["edges"]) - 1
    rows = [
        {**ROW, "age": None, "city": "Berlin"},  # age: missing bin; city: "other" (bin 3)
        {**ROW, "city": None},  # missing: "other" too
        {**ROW, "city": "Lyon"},  # bin 0
    ]
    assert mixed.post("/v1/predict", json=rows).status_code == 200
    bins = scrape(mixed, "model_service_feature_bin_total")
    assert {b: n for (b, feature), n in bins.items() if feature == "city"} == {"3": 2, "0": 1}
    assert {b: n for (b, feature), n in bins.items() if feature == "age"}[str(age_bins)] == 1
    assert sum(n for (_, feature), n in bins.items() if feature == "garden") == 3
    assert sum(scrape(mixed, "model_service_predicted_class_total").values()) == 3


def test_regression_drift_counts_predicted_values_and_no_classes(
    make_client: Callable[..., TestClient], regression_model_dir: Path
) -> None:
    client = make_client(model_dir=regression_model_dir)
    rows = eval_rows(regression_model_dir)
    predictions = client.post("/v1/predict", json={"instances": rows}).json()["predictions"]
    card = json.loads((regression_model_dir / "model.json").read_text())
    inner = np.asarray(card["reference"]["score"]["edges"][1:-1], dtype=np.float32)
    expected = np.bincount(np.searchsorted(inner, np.asarray(predictions, dtype=np.float32), side="right"))
    scores = scrape(client, "model_service_score_bin_total")
    assert scores == {(str(b),): float(n) for b, n in enumerate(expected) if n}
    assert scrape(client, "model_service_predicted_class_total") == {}


def test_typed_input_sampling_keeps_strings_and_hashes_sensitive_ones() -> None:
    sampler = InputSampler(["age", "city"], 1.0, {"city": "hash"}, seed=1)
    rows = [(41.5, "Lyon"), (np.nan, "")]
    records = sampler.sample(rows, np.asarray([0, 1]))
    assert records[0] == {
        "inputs": {"age": 41.5, "city": hashlib.sha256(b"'Lyon'").hexdigest()[:16]},
        "prediction": 0,
    }
    assert np.isnan(records[1]["inputs"]["age"])
