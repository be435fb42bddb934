"""Converters the template hands skl2onnx for one conversion, where skl2onnx's own would not compute
what the fit computes (docs/bring-your-model.md, "Exact export").

- SimpleImputer: skl2onnx writes numbers through ai.onnx.ml Imputer, which rounds the fitted statistics to
  float32 and has no float64 kernel in onnxruntime, and refuses a string imputer looking for NaN. Here
  numbers are filled with IsNaN/Equal + Where in the input's own dtype, and such a string imputer is the
  identity it was in the fit (`convert_simple_imputer`).
- Tree ensembles: fed float32 of float64 numbers, as scikit-learn's trees and XGBoost round their inputs
  themselves; LightGBM fed the float64 numbers with float64 thresholds (`tree_converter`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pipeline.ml.estimators import column_steps

APPROXIMATE_TREES = frozenset(
    {
        "LGBMClassifier",
        "LGBMRegressor",
        "HistGradientBoostingClassifier",
        "HistGradientBoostingRegressor",
    }
)
"""Tree models deciding on float64 values that their ONNX graph decides in float32: HistGradientBoosting
(float32 thresholds), and LightGBM when its numbers enter as float32 (nothing computes on them before it:
the card keeps float32 inputs, `computes_before_trees`)."""


def looks_for_nan(missing_values: Any) -> bool:
    """The imputer's missing_values is NaN or None: a value a string column of the template never holds."""
    return missing_values is None or (isinstance(missing_values, float) and math.isnan(missing_values))


def convert_simple_imputer(scope: Any, operator: Any, container: Any) -> None:
    """A fitted SimpleImputer as ONNX that gives what the fit gives on the inputs the template feeds.

    Strings: a missing string is "" in the training frame, the evaluation rows and the served requests, so
    an imputer looking for NaN or None (scikit-learn's default) never replaced anything in the fit: it is
    the identity, exported as one. An imputer looking for a string goes to skl2onnx's converter.
    Numbers: missing values replaced by the fitted statistics in the input's dtype."""
    from skl2onnx.common.data_types import StringTensorType  # noqa: PLC0415
    from skl2onnx.operator_converters.common import concatenate_variables  # noqa: PLC0415
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer  # noqa: PLC0415
    from skl2onnx.proto import onnx_proto  # noqa: PLC0415

    imputer = operator.raw_operator
    output = operator.outputs[0].full_name
    if imputer.add_indicator:
        # Neither converter writes the indicator columns: the graph would be narrower than the fit.
        msg = "SimpleImputer(add_indicator=True) has no ONNX converter; use add_indicator=False"
        raise RuntimeError(msg)
    if isinstance(operator.inputs[0].type, StringTensorType):
        if not looks_for_nan(imputer.missing_values):
            convert_sklearn_imputer(scope, operator, container)
            return
        joined = concatenate_variables(scope, operator.inputs, container)
        container.add_node("Identity", [joined], [output], name=scope.get_unique_operator_name("Identity"))
        return
    proto_type = operator.inputs[0].type.to_onnx_type().tensor_type.elem_type
    if proto_type not in (onnx_proto.TensorProto.DOUBLE, onnx_proto.TensorProto.FLOAT):
        convert_sklearn_imputer(scope, operator, container)
        return
    dtype = np.float64 if proto_type == onnx_proto.TensorProto.DOUBLE else np.float32
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    # A column scikit-learn dropped for having no value at all would change the width: not exported.
    if np.isnan(statistics).any():
        msg = (
            "SimpleImputer: a column had no value at all in the fit (its statistic is NaN); drop the column "
            "or set keep_empty_features=True"
        )
        raise RuntimeError(msg)
    joined = concatenate_variables(scope, operator.inputs, container)
    fill = scope.get_unique_variable_name("imputer_fill")
    container.add_initializer(fill, proto_type, [1, len(statistics)], statistics.astype(dtype).tolist())
    missing = scope.get_unique_variable_name("imputer_missing")
    if looks_for_nan(imputer.missing_values):
        container.add_node("IsNaN", [joined], [missing], name=scope.get_unique_operator_name("IsNaN"))
    else:
        marker = scope.get_unique_variable_name("imputer_marker")
        container.add_initializer(marker, proto_type, [], [float(imputer.missing_values)])
        container.add_node("Equal", [joined, marker], [missing], name=scope.get_unique_operator_name("Equal"))
    container.add_node(
        "Where", [missing, fill, joined], [output], name=scope.get_unique_operator_name("Where")
    )


def tree_converter(convert: Any, *, float64_thresholds: bool) -> Any:
    """`convert` (a tree ensemble's converter) on a float64 input, its float32 outputs cast back to the
    float64 the graph declares; on a float32 input, `convert` as it is.

    - `float64_thresholds` False: the trees are fed float32 of the input. scikit-learn's trees compare
      float32(x) with their thresholds and XGBoost casts its inputs to float32 too: computing x in float64
      (the preprocessing in front, as scikit-learn computes it) then rounding once reproduces their
      decisions. Preprocessing computed in float32 instead lands a value a unit in the last place away from
      where scikit-learn put it, and a threshold lying between the two flips a tree.
    - True (LightGBM, which compares float64 values with float64 thresholds): the trees take the float64
      input, and the TreeEnsemble holds its thresholds and leaf values as float64 tensors (ai.onnx.ml 3's
      `*_as_tensor` attributes), where onnxmltools would round them to float32."""
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType  # noqa: PLC0415
    from skl2onnx.proto import onnx_proto  # noqa: PLC0415

    def converter(scope: Any, operator: Any, container: Any) -> None:
        source = operator.inputs[0]
        if not isinstance(source.type, DoubleTensorType):
            convert(scope, operator, container)
            return
        if not float64_thresholds:
            rounded = scope.declare_local_variable("tree_input", FloatTensorType(source.type.shape))
            container.add_node(
                "Cast",
                [source.full_name],
                [rounded.full_name],
                to=onnx_proto.TensorProto.FLOAT,
                name=scope.get_unique_operator_name("Cast"),
            )
            operator.inputs.set_element(0, rounded)
        # A TreeEnsemble's outputs are float32 whatever its input.
        declared = list(operator.outputs)
        widened = {
            i: scope.declare_local_variable("tree_output", FloatTensorType(output.type.shape))
            for i, output in enumerate(declared)
            if isinstance(output.type, DoubleTensorType)
        }
        for i, variable in widened.items():
            operator.outputs.set_element(i, variable)
        try:
            convert(scope, operator, _Float64Thresholds(container) if float64_thresholds else container)
        finally:
            operator.inputs.set_element(0, source)
            for i in widened:
                operator.outputs.set_element(i, declared[i])
        for i, variable in widened.items():
            container.add_node(
                "Cast",
                [variable.full_name],
                [declared[i].full_name],
                to=onnx_proto.TensorProto.DOUBLE,
                name=scope.get_unique_operator_name("Cast"),
            )

    return converter


class _Float64Thresholds:
    """skl2onnx's container, but a TreeEnsemble node gets its thresholds, leaf weights and base values as
    float64 tensors: the converter hands them over as Python floats, which the float attributes round."""

    _WIDENED = ("nodes_values", "base_values", "class_weights", "target_weights")

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, op_type: str, inputs: Any, outputs: Any, *args: Any, **attrs: Any) -> Any:
        if op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor"):
            from onnx import numpy_helper  # noqa: PLC0415

            for key in self._WIDENED:
                if key in attrs:
                    values = np.asarray(attrs.pop(key), dtype=np.float64)
                    attrs[f"{key}_as_tensor"] = numpy_helper.from_array(values, name=key)
        return self._container.add_node(op_type, inputs, outputs, *args, **attrs)


def tree_models() -> tuple[type, ...]:
    """The tree ensembles `tree_converter` wraps: scikit-learn's trees, forests and gradient boosting, and
    XGBoost (float32 decisions), LightGBM (float64 ones, `float64_threshold_models`). HistGradientBoosting
    compares float64 values with float64 thresholds that skl2onnx writes as float32: exact unless a value
    lies within float32 rounding of a threshold (`APPROXIMATE_TREES`), which the parity check catches."""
    from sklearn import ensemble, tree  # noqa: PLC0415
    from xgboost import XGBClassifier, XGBRegressor  # noqa: PLC0415

    families = ("ExtraTrees", "GradientBoosting", "HistGradientBoosting", "RandomForest")
    return (
        tree.DecisionTreeClassifier,
        tree.DecisionTreeRegressor,
        *(
            getattr(ensemble, f"{family}{task}")
            for family in families
            for task in ("Classifier", "Regressor")
        ),
        XGBClassifier,
        XGBRegressor,
        *float64_threshold_models(),
    )


def float64_threshold_models() -> tuple[type, ...]:
    """The tree ensembles deciding on float64 values whose converter hands over float64 thresholds."""
    from lightgbm import LGBMClassifier, LGBMRegressor  # noqa: PLC0415  (slow imports, export only)

    return (LGBMClassifier, LGBMRegressor)


def exact_converters() -> dict[type, Any]:
    """skl2onnx's `custom_conversion_functions` for one conversion: the imputer above and each tree model
    of `tree_models` wrapped by `tree_converter` (XGBoost and LightGBM registered beforehand)."""
    from skl2onnx._supported_operators import sklearn_operator_name_map  # noqa: PLC0415
    from skl2onnx.common._registration import get_converter  # noqa: PLC0415
    from sklearn.impute import SimpleImputer  # noqa: PLC0415

    converters: dict[type, Any] = {SimpleImputer: convert_simple_imputer}
    wide = float64_threshold_models()
    for model in tree_models():
        convert = get_converter(sklearn_operator_name_map[model])
        converters[model] = tree_converter(convert, float64_thresholds=model in wide)
    return converters


def parts(estimator: Any) -> list[Any]:
    """What the fit is made of, in order: a Pipeline's steps and a ColumnTransformer's (fitted)
    transformers, unfolded; "drop" and "passthrough" left out."""
    from sklearn.compose import ColumnTransformer  # noqa: PLC0415
    from sklearn.pipeline import Pipeline  # noqa: PLC0415

    if isinstance(estimator, Pipeline):
        return [part for _, step in estimator.steps for part in parts(step)]
    if isinstance(estimator, ColumnTransformer):
        fitted = getattr(estimator, "transformers_", estimator.transformers)
        return [part for _, step, _ in fitted if not isinstance(step, str) for part in parts(step)]
    return [estimator]


def computes_before_trees(estimator: Any) -> bool:
    """Something computes on the numbers (scaling, ...) before a tree model: the numbers must enter the
    graph as float64 so it computes what scikit-learn computes before the trees round to float32. Imputers
    and encoders alone need no more than float32: what they write is rounded to float32 by the trees as
    well, or is a small whole number."""
    from sklearn.impute import SimpleImputer  # noqa: PLC0415
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder  # noqa: PLC0415

    *before, final = parts(estimator)
    exact_in_float32 = (SimpleImputer, OneHotEncoder, OrdinalEncoder)
    return isinstance(final, tree_models()) and any(not isinstance(step, exact_in_float32) for step in before)


def nan_imputers_on_strings(estimator: Any, strings: set[str]) -> list[list[str]]:
    """The string columns of each SimpleImputer (inside a ColumnTransformer) that looks for NaN or None:
    the template hands a missing string over as "", so such an imputer leaves every value as it is."""
    from sklearn.impute import SimpleImputer  # noqa: PLC0415

    found: list[list[str]] = []
    for names, imputer in column_steps(estimator, SimpleImputer):
        on_strings = [name for name in names if name in strings]
        if on_strings and looks_for_nan(imputer.missing_values) and on_strings not in found:
            found.append(on_strings)
    return found
