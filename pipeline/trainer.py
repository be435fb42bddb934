"""The contract of your own training code (`model.trainer: "package.module:function"`).

The pipeline imports the function from the workspace root and calls it once per training run:

    def train(frame: pandas.DataFrame, target: pandas.Series, params: Params, seed: int) -> estimator

- `frame`: the training rows, one column per feature, in the data file's order. Column dtypes follow
  the types written to the model card: `float64` (float, and any numeric column with missing values,
  as NaN), `int64` (int), `bool` (bool), `object` holding `str` (string; a missing string is "", as in
  a served request: a SimpleImputer looking for NaN on strings leaves it, and the encoder after it sees
  a category of its own; `SimpleImputer(missing_values="")` fills it).
- `target`: the labels (classification) or values (regression) of those rows.
- `params`: the environment's `model.params`, as written in YAML.
- `seed`: `data.seed`; use it wherever your code draws random numbers, so a run is reproducible.

It returns a fitted scikit-learn estimator or Pipeline that skl2onnx can convert (XGBoost and LightGBM
models, also inside a Pipeline, are registered). A classifier needs `predict_proba`. When the frame has
string columns, the model is exported with one ONNX input per column, named as the column: select
columns by name in a ColumnTransformer. Import only this module from pipeline/: the rest may change
between template versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import pandas as pd

ParamValue = int | float | str | bool | None
Params = Mapping[str, ParamValue]


class Trainer(Protocol):
    """The signature of a trainer function."""

    def __call__(self, frame: pd.DataFrame, target: pd.Series[Any], params: Params, seed: int) -> Any: ...
