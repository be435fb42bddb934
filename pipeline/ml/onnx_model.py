"""The ONNX side of a model: convert a fitted estimator with the card's input layout, feed it rows as a
client sends them (eval.json, the card contract in docs/model-card.md) and read its outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.ml.columns import Column

INPUT_NAME = "input"
"""The one input of a numeric-only model: every feature, float32 [N, F]."""
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
ML_OPSET = 3
"""The ai.onnx.ml opset (TreeEnsembleClassifier/Regressor v3: what onnxruntime and skl2onnx agree on)."""
_registered = False


def register_converters() -> None:
    """Teach skl2onnx the XGBoost and LightGBM models (onnxmltools' converters), also inside a Pipeline."""
    global _registered  # noqa: PLW0603  (registration is process-wide in skl2onnx too)
    if _registered:
        return
    from lightgbm import LGBMClassifier, LGBMRegressor  # noqa: PLC0415  (slow imports, export only)
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm  # noqa: PLC0415
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost  # noqa: PLC0415
    from skl2onnx import update_registered_converter  # noqa: PLC0415
    from skl2onnx.common.shape_calculator import (  # noqa: PLC0415
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from xgboost import XGBClassifier, XGBRegressor  # noqa: PLC0415

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    for model, alias, converter in (
        (LGBMClassifier, "LightGbmLGBMClassifier", convert_lightgbm),
        (XGBClassifier, "XGBoostXGBClassifier", convert_xgboost),
    ):
        update_registered_converter(
            model, alias, calculate_linear_classifier_output_shapes, converter, options=classifier_options
        )
    update_registered_converter(
        LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        convert_lightgbm,
        options={"split": None},
    )
    update_registered_converter(
        XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost
    )
    _registered = True


def input_layout(columns: Sequence[Column], per_column: bool) -> list[dict[str, Any]]:
    """The card's `onnx.inputs`: one float32 matrix of every feature, or one [N, 1] input per feature."""
    if not per_column:
        return [{"name": INPUT_NAME, "dtype": "float32", "features": [c.name for c in columns]}]
    return [
        {"name": c.name, "dtype": "float32" if c.numeric else "string", "features": [c.name]} for c in columns
    ]


def convert(estimator: Any, inputs: Sequence[dict[str, Any]], *, classifier: Any | None, opset: int) -> bytes:
    """ONNX bytes of `estimator` taking `inputs`; `classifier`: the final classifier, whose probabilities
    become a plain [N, C] tensor (no ZipMap, so any client can read them)."""
    from skl2onnx import convert_sklearn  # noqa: PLC0415
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType  # noqa: PLC0415

    register_converters()
    types = {"float32": FloatTensorType, "string": StringTensorType}
    initial_types = [(i["name"], types[i["dtype"]]([None, len(i["features"])])) for i in inputs]
    options = {id(classifier): {"zipmap": False}} if classifier is not None else None
    # The ai.onnx.ml domain as skl2onnx pairs it with the main opset: onnxmltools' tree converters would
    # otherwise emit a newer TreeEnsemble that skl2onnx refuses.
    target_opset = {"": opset, "ai.onnx.ml": ML_OPSET}
    model = convert_sklearn(
        estimator, initial_types=initial_types, options=options, target_opset=target_opset
    )
    return bytes(model.SerializeToString())


def feeds(
    inputs: Sequence[dict[str, Any]], features: Sequence[str], rows: Sequence[Sequence[Any]]
) -> dict[str, Any]:
    """The arrays of each input from rows of JSON values in `features` order (the card's feeding rules:
    bool -> 0/1, null -> NaN in a float input and "" in a string input)."""
    position = {name: j for j, name in enumerate(features)}
    out: dict[str, Any] = {}
    for spec in inputs:
        columns = [position[name] for name in spec["features"]]
        if spec["dtype"] == "string":
            values: list[list[Any]] = [
                ["" if row[j] is None else str(row[j]) for j in columns] for row in rows
            ]
            out[spec["name"]] = np.array(values, dtype=object).reshape(len(rows), len(columns))
        else:
            numbers = [[np.nan if row[j] is None else float(row[j]) for j in columns] for row in rows]
            out[spec["name"]] = np.array(numbers, dtype=spec["dtype"]).reshape(len(rows), len(columns))
    return out


@dataclass(frozen=True)
class Outputs:
    probabilities: NDArray[np.float64] | None
    """Classification: [N, C], columns in the order of the card's classes."""
    values: NDArray[np.float64] | None
    """Regression: [N]."""


def card_inputs(card: dict[str, Any]) -> list[dict[str, Any]]:
    """`onnx.inputs` of a card; a card v1 has one input of every feature."""
    if "inputs" in card["onnx"]:
        return list(card["onnx"]["inputs"])
    return [{"name": card["onnx"]["input"]["name"], "dtype": "float32", "features": card_features(card)}]


def card_features(card: dict[str, Any]) -> list[str]:
    return [str(feature["name"]) for feature in card["features"]]


def card_task(card: dict[str, Any]) -> str:
    """The card's task; a card v1 says `classification`: binary with two classes, else multiclass."""
    task = str(card.get("task", ""))
    if task in ("binary", "multiclass", "regression"):
        return task
    return "binary" if len(card["classes"]) == 2 else "multiclass"


def predict(onnx_path: Path, card: dict[str, Any], rows: Sequence[Sequence[Any]]) -> Outputs:
    """Run the model of `card` on rows of JSON values (eval.json's), through onnxruntime on one thread."""
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = feeds(card_inputs(card), card_features(card), rows)
    outputs = card["onnx"]["outputs"]
    if card_task(card) == "regression":
        (values,) = session.run([outputs["value"]], feed)
        return Outputs(None, np.asarray(values, dtype=np.float64).reshape(-1))
    (probabilities,) = session.run([outputs["probabilities"]], feed)
    return Outputs(np.asarray(probabilities, dtype=np.float64), None)
