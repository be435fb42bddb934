"""Card version 2 models served by the real process: a mixed-type classifier called with string fields
(v1 lists, v1 objects, v2 BYTES), a regression and a multiclass classifier with string classes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tests.integration.service.conftest import Server


def eval_file(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "eval.json").read_text())  # type: ignore[no-any-return]


def test_mixed_model_over_http(start_server: Callable[..., Server], mixed_model_dir: Path) -> None:
    evaluation = eval_file(mixed_model_dir)
    rows, names = evaluation["rows"][:4], evaluation["features"]
    server = start_server(model=mixed_model_dir, workers=2)
    with httpx.Client(base_url=server.url) as client:
        as_lists = client.post("/v1/predict", json={"instances": rows}).json()
        objects = [dict(zip(names, row, strict=True)) for row in rows]
        as_objects = client.post("/v1/predict", json={"instances": objects}).json()
        assert as_lists["predictions"] == as_objects["predictions"]
        assert as_lists["probabilities"] == as_objects["probabilities"]
        age, rooms, garden, city = (list(column) for column in zip(*rows, strict=True))
        infer = {
            "inputs": [
                {"name": "age", "shape": [4, 1], "datatype": "FP32", "data": age},
                {"name": "rooms", "shape": [4, 1], "datatype": "INT64", "data": rooms},
                {"name": "garden", "shape": [4, 1], "datatype": "BOOL", "data": garden},
                {"name": "city", "shape": [4, 1], "datatype": "BYTES", "data": city},
            ]
        }
        v2 = client.post("/v2/models/mixed-classifier/infer", json=infer).json()
        label = next(output for output in v2["outputs"] if output["name"] == "label")
        assert label["data"] == as_lists["predictions"]
        # A string in a float feature: a 422 naming the row and the field.
        bad = client.post("/v1/predict", json={"instances": [*objects[:3], {**objects[0], "age": "41"}]})
        assert bad.status_code == 422
        assert bad.json()["error"]["message"] == "instances[3].age: expected a number or null, got string"
        document = client.get("/openapi.json").json()
        row = document["components"]["schemas"]["PredictRequest"]["oneOf"][1]["items"]
        assert {name: field["type"] for name, field in row["properties"].items()} == {
            "age": ["number", "null"],
            "rooms": "integer",
            "garden": "boolean",
            "city": ["string", "null"],
        }


def test_regression_and_multiclass_over_http(
    start_server: Callable[..., Server], regression_model_dir: Path, iris_model_dir: Path
) -> None:
    regression = start_server(model=regression_model_dir)
    rows = eval_file(regression_model_dir)["rows"][:2]
    body = httpx.post(f"{regression.url}/v1/predict", json={"instances": rows}).json()
    assert [type(value) for value in body["predictions"]] == [float, float]
    assert "probabilities" not in body
    iris = start_server(model=iris_model_dir)
    evaluation = eval_file(iris_model_dir)
    body = httpx.post(f"{iris.url}/v1/predict", json={"instances": evaluation["rows"]}).json()
    assert body["predictions"] == evaluation["labels"]
    metadata = httpx.get(f"{iris.url}/v2/models/iris-species").json()
    assert metadata["outputs"][0] == {"name": "label", "datatype": "BYTES", "shape": [-1]}
