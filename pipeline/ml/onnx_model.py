"""The ONNX side of a model: convert a fitted estimator with the card's input layout, feed it rows as a
client sends them (eval.json, the card contract in docs/model-card.md) and read its outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_service.contract.card import Feature, ModelCard
from model_service.contract.monitoring import scores
from pipeline.errors import StageError
from pipeline.ml.estimators import final_estimator, has_column_transformer
from pipeline.ml.onnx_converters import computes_before_trees, exact_converters, parts

INPUT_NAME = "input"
"""The one input of a numeric-only model: every feature, [N, F], float32 (float64 when the fit computes on
the numbers before a tree model: `input_layout`)."""
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


def input_layout(
    columns: Sequence[Feature], per_column: bool, numbers: str = "float32"
) -> list[dict[str, Any]]:
    """The card's `onnx.inputs`: one matrix of every feature, or one [N, 1] input per feature (strings as
    strings); numbers in `numbers`: float64 where the fit computes on them before a tree model
    (`computes_before_trees`), so the graph computes what scikit-learn computes."""
    if not per_column:
        return [{"name": INPUT_NAME, "dtype": numbers, "features": [c.name for c in columns]}]
    return [
        {"name": c.name, "dtype": numbers if c.numeric else "string", "features": [c.name]} for c in columns
    ]


def convert(estimator: Any, inputs: Sequence[dict[str, Any]], *, classifier: Any | None, opset: int) -> bytes:
    """ONNX bytes of `estimator` taking `inputs`; `classifier`: the final classifier, whose probabilities
    become a plain [N, C] tensor (no ZipMap, so any client can read them)."""
    from skl2onnx import convert_sklearn  # noqa: PLC0415
    from skl2onnx.common.data_types import (  # noqa: PLC0415
        DoubleTensorType,
        FloatTensorType,
        StringTensorType,
    )

    register_converters()
    types = {"float32": FloatTensorType, "float64": DoubleTensorType, "string": StringTensorType}
    initial_types = [(i["name"], types[i["dtype"]]([None, len(i["features"])])) for i in inputs]
    options = {id(classifier): {"zipmap": False}} if classifier is not None else None
    # The ai.onnx.ml domain as skl2onnx pairs it with the main opset: onnxmltools' tree converters would
    # otherwise emit a newer TreeEnsemble that skl2onnx refuses.
    target_opset = {"": opset, "ai.onnx.ml": ML_OPSET}
    model = convert_sklearn(
        estimator,
        initial_types=initial_types,
        options=options,
        target_opset=target_opset,
        custom_conversion_functions=exact_converters(),
    )
    return bytes(model.SerializeToString())


def to_onnx(
    estimator: Any, columns: Sequence[Feature], *, task: str, opset: int, origin: str
) -> tuple[bytes, dict[str, Any]]:
    """The ONNX bytes of a fit and the card's `onnx.inputs` and `onnx.outputs` (one float matrix, or one
    input per column when there are strings or a ColumnTransformer); a StageError naming `origin` (the
    trainer or the family) and the estimator when skl2onnx cannot convert it."""
    per_column = not all(c.numeric for c in columns) or has_column_transformer(estimator)
    inputs = input_layout(columns, per_column, "float64" if computes_before_trees(estimator) else "float32")
    classifier = final_estimator(estimator) if task != "regression" else None
    try:
        onnx_bytes = convert(estimator, inputs, classifier=classifier, opset=opset)
    except Exception as exc:  # noqa: BLE001  (skl2onnx raises many types; each means: cannot be exported)
        kind = f"{type(estimator).__module__}.{type(estimator).__name__}"
        msg = (
            f"{origin}: skl2onnx cannot convert the fitted {kind} "
            f"({', '.join(components(estimator))}): {type(exc).__name__}: {exc}; "
            "nothing was written. Use estimators skl2onnx converts (docs/bring-your-model.md)"
        )
        raise StageError(msg) from None
    outputs = (
        {"value": _regression_output(onnx_bytes)}
        if task == "regression"
        else {"label": LABEL_OUTPUT, "probabilities": PROBABILITIES_OUTPUT}
    )
    return onnx_bytes, {"inputs": inputs, "outputs": outputs}


def components(estimator: Any) -> list[str]:
    """The class names of what the fit is made of, in order (`parts`)."""
    return [type(part).__name__ for part in parts(estimator)]


def _regression_output(onnx_bytes: bytes) -> str:
    import onnx  # noqa: PLC0415

    return str(onnx.load_from_string(onnx_bytes).graph.output[0].name)


@dataclass(frozen=True)
class Outputs:
    probabilities: NDArray[np.float64] | None
    """Classification: [N, C], columns in the order of the card's classes."""
    values: NDArray[np.float64] | None
    """Regression: [N]."""


def onnx_feeds(card: ModelCard, rows: Sequence[Sequence[Any]]) -> dict[str, NDArray[Any]]:
    """Rows of JSON values in the card's feature order as one array per ONNX input, fed as the contract
    says: numbers and booleans in the input's dtype (null: NaN), strings as strings (null: "")."""
    feeds: dict[str, NDArray[Any]] = {}
    for spec in card.inputs:
        columns = spec.columns
        if spec.dtype == "string":
            values = [["" if row[j] is None else str(row[j]) for j in columns] for row in rows]
            feeds[spec.name] = np.asarray(values, dtype=object).reshape(len(rows), len(columns))
        else:
            numbers = [[np.nan if row[j] is None else float(row[j]) for j in columns] for row in rows]
            feeds[spec.name] = np.asarray(numbers, dtype=spec.dtype).reshape(len(rows), len(columns))
    return feeds


def predict(onnx_path: Path, card: ModelCard, rows: Sequence[Sequence[Any]]) -> Outputs:
    """Run the model of `card` on rows of JSON values (eval.json's), through onnxruntime on one thread."""
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = onnx_feeds(card, rows)
    outputs = card.outputs
    if card.is_regression:
        (values,) = session.run([outputs["value"]], feed)
        return Outputs(None, np.asarray(values, dtype=np.float64).reshape(-1))
    (probabilities,) = session.run([outputs["probabilities"]], feed)
    return Outputs(np.asarray(probabilities, dtype=np.float64), None)


def predicted_scores(onnx_path: Path, card: ModelCard, rows: Sequence[Sequence[Any]]) -> NDArray[np.float64]:
    """The score the card's reference bins: P(classes[1]) (binary), the top probability (multiclass), the
    predicted value (regression)."""
    outputs = predict(onnx_path, card, rows)
    if outputs.values is not None:
        return outputs.values
    assert outputs.probabilities is not None  # a classifier's outputs
    return np.asarray(scores(outputs.probabilities), dtype=np.float64)
