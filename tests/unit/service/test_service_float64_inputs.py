"""A card whose numbers are float64 inputs (the export of a preprocessing computing before a tree ensemble,
docs/bring-your-model.md "Exact export"): the service feeds float64 from v1 rows and objects and from v2
FP64 tensors beside BYTES strings, and answers with the fitted model's probabilities."""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from starlette.testclient import TestClient

from pipeline.ml.onnx_model import to_onnx
from tests.unit.ml.test_exact_export import MODELS, PARITY_BOUND, applicants_csv, sklearn_example_pipeline

NAME = "applicants"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[Any]], Any]:
    """The exported sklearn example pipeline (model.onnx, model.json), its evaluation rows as a client
    sends them and the fitted model's probabilities on them."""
    out = tmp_path_factory.mktemp("float64-model")
    data = applicants_csv(out)
    estimator = sklearn_example_pipeline(MODELS["random_forest"]()).fit(data.train, data.y_train)
    onnx_bytes, card_onnx = to_onnx(estimator, data.columns, task="binary", opset=17, origin="test")
    (out / "model.onnx").write_bytes(onnx_bytes)
    card = {
        "card_version": 2,
        "name": NAME,
        "version": "f10a7640000a",
        "task": "binary",
        "onnx": {
            "file": "model.onnx",
            "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "opset": 17,
            **card_onnx,
        },
        "features": [c.to_json() for c in data.columns],
        "classes": [0, 1],
    }
    (out / "model.json").write_text(json.dumps(card))
    return out, data.test_rows(), estimator.predict_proba(data.test)


def test_float64_inputs_answer_with_the_fitted_models_probabilities_on_every_route(
    make_client: Callable[..., TestClient], exported: tuple[Path, list[list[Any]], Any]
) -> None:
    model_dir, rows, expected = exported
    card = json.loads((model_dir / "model.json").read_text())
    assert {i["dtype"] for i in card["onnx"]["inputs"]} == {"float64", "string"}
    assert any(value is None for row in rows for value in row)  # missing numbers and strings
    client = make_client(model_dir=model_dir)
    names = [f["name"] for f in card["features"]]
    as_lists = client.post("/v1/predict", json={"instances": rows})
    as_objects = client.post(
        "/v1/predict", json={"instances": [dict(zip(names, r, strict=True)) for r in rows]}
    )
    position = {name: j for j, name in enumerate(names)}
    tensors = [
        {
            "name": spec["name"],
            "shape": [len(rows), 1],
            "datatype": "FP64" if spec["dtype"] == "float64" else "BYTES",
            "data": [row[position[spec["name"]]] for row in rows],
        }
        for spec in card["onnx"]["inputs"]
    ]
    as_v2 = client.post(f"/v2/models/{NAME}/infer", json={"inputs": tensors})
    for response in (as_lists, as_objects):
        assert response.status_code == 200, response.text
        assert np.max(np.abs(np.asarray(response.json()["probabilities"]) - expected)) <= PARITY_BOUND
    assert as_v2.status_code == 200, as_v2.text
    probabilities = next(o for o in as_v2.json()["outputs"] if o["name"] == "probabilities")
    assert np.max(np.abs(np.reshape(probabilities["data"], (-1, 2)) - expected)) <= PARITY_BOUND
    metadata = client.get(f"/v2/models/{NAME}").json()
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]}["age"] == "FP64"


def test_an_fp32_tensor_for_a_float64_input_is_a_422_naming_the_datatype(
    make_client: Callable[..., TestClient], exported: tuple[Path, list[list[Any]], Any]
) -> None:
    model_dir, rows, _ = exported
    card = json.loads((model_dir / "model.json").read_text())
    tensors = [
        {
            "name": spec["name"],
            "shape": [1, 1],
            "datatype": "FP32" if spec["dtype"] == "float64" else "BYTES",
            "data": [rows[0][j]],
        }
        for j, spec in enumerate(card["onnx"]["inputs"])
    ]
    response = make_client(model_dir=model_dir).post(f"/v2/models/{NAME}/infer", json={"inputs": tensors})
    assert response.status_code == 422
    assert "expected FP64 for 'age', got 'FP32'" in response.text


def test_one_float64_matrix_is_fed_as_float64_on_the_numeric_fast_path(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    """A numeric Pipeline scaling before a forest exports one float64 `input` matrix: v1 rows and a v2
    FP64 tensor answer with the fitted model's probabilities."""
    data = applicants_csv(tmp_path)
    numbers = data.columns[:2]
    frame = data.train[["age", "income"]].fillna(0.0)
    estimator = make_pipeline(StandardScaler(), MODELS["random_forest"]()).fit(frame, data.y_train)
    onnx_bytes, card_onnx = to_onnx(estimator, numbers, task="binary", opset=17, origin="test")
    assert card_onnx["inputs"][0]["dtype"] == "float64"
    (tmp_path / "model.onnx").write_bytes(onnx_bytes)
    card = {
        "card_version": 2,
        "name": NAME,
        "version": "f10a7640000b",
        "task": "binary",
        "onnx": {
            "file": "model.onnx",
            "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "opset": 17,
            **card_onnx,
        },
        "features": [{**c.to_json(), "nullable": False} for c in numbers],
        "classes": [0, 1],
    }
    (tmp_path / "model.json").write_text(json.dumps(card))
    rows = data.test[["age", "income"]].fillna(0.0).to_numpy().tolist()
    expected = estimator.predict_proba(data.test[["age", "income"]].fillna(0.0))
    client = make_client(model_dir=tmp_path)
    as_lists = client.post("/v1/predict", json={"instances": rows})
    assert as_lists.status_code == 200, as_lists.text
    assert np.max(np.abs(np.asarray(as_lists.json()["probabilities"]) - expected)) <= PARITY_BOUND
    tensor = {"name": "input", "shape": [len(rows), 2], "datatype": "FP64", "data": rows}
    as_v2 = client.post(f"/v2/models/{NAME}/infer", json={"inputs": [tensor]})
    assert as_v2.status_code == 200, as_v2.text
    probabilities = next(o for o in as_v2.json()["outputs"] if o["name"] == "probabilities")
    assert np.max(np.abs(np.reshape(probabilities["data"], (-1, 2)) - expected)) <= PARITY_BOUND
