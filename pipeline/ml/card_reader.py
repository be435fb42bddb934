"""The model card as the pipeline reads it: task, features, ONNX inputs, and the rows a client sends
turned into ONNX feeds (docs/model-card.md); pipeline/ml/onnx_model.py runs the model with them.

Card v2 states all of it; card v1 is read as the contract says: task binary with 2 classes else
multiclass, one input `onnx.input.name` holding every feature, every feature a non-nullable float.
The load test, the drift stage and the rollout rehearsal read the card through here, so they agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import NDArray

Task = Literal["binary", "multiclass", "regression"]
FeatureType = Literal["float", "int", "bool", "string"]

V2_DATATYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "string": "BYTES"}
"""Open Inference Protocol datatype of each ONNX input dtype the card names."""


@dataclass(frozen=True)
class Feature:
    name: str
    type: FeatureType
    """How a client sends it: float (JSON number), int, bool (true/false), string."""
    nullable: bool
    """JSON null is accepted (a missing value)."""
    categories: tuple[str, ...] = ()
    """String features: the categories seen in training, sorted."""


@dataclass(frozen=True)
class Input:
    """One ONNX input: its name, dtype and the features it takes, in order."""

    name: str
    dtype: str
    features: tuple[str, ...]

    @property
    def v2_datatype(self) -> str:
        return V2_DATATYPES[self.dtype]


def card_task(card: Mapping[str, Any]) -> Task:
    if card.get("card_version", 1) >= 2:
        return cast("Task", card["task"])
    return "binary" if len(card["classes"]) == 2 else "multiclass"


def card_features(card: Mapping[str, Any]) -> list[Feature]:
    if card.get("card_version", 1) >= 2:
        return [
            Feature(f["name"], f["type"], bool(f["nullable"]), tuple(f.get("categories", ())))
            for f in card["features"]
        ]
    return [Feature(f["name"], "float", nullable=False) for f in card["features"]]


def card_inputs(card: Mapping[str, Any]) -> list[Input]:
    onnx = card["onnx"]
    if card.get("card_version", 1) >= 2:
        return [Input(i["name"], i["dtype"], tuple(i["features"])) for i in onnx["inputs"]]
    names = tuple(f["name"] for f in card["features"])
    return [Input(onnx["input"]["name"], onnx["input"]["dtype"], names)]


def onnx_feeds(
    inputs: Sequence[Input], features: Sequence[str], rows: Sequence[Sequence[Any]]
) -> dict[str, NDArray[Any]]:
    """Rows of JSON values in `features` order as one array per ONNX input, fed as the contract says:
    numbers and booleans in the input's dtype (null: NaN), strings as strings (null: the empty string)."""
    position = {name: j for j, name in enumerate(features)}
    feeds: dict[str, NDArray[Any]] = {}
    for spec in inputs:
        columns = [position[name] for name in spec.features]
        if spec.dtype == "string":
            values = [["" if row[j] is None else str(row[j]) for j in columns] for row in rows]
            feeds[spec.name] = np.asarray(values, dtype=object).reshape(len(rows), len(columns))
        else:
            numbers = [[np.nan if row[j] is None else float(row[j]) for j in columns] for row in rows]
            feeds[spec.name] = np.asarray(numbers, dtype=spec.dtype).reshape(len(rows), len(columns))
    return feeds
