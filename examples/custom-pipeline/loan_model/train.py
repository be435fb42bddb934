"""The team's own model: imputation, scaling and one-hot encoding in front of a logistic regression.

The pipeline calls `fit` with the contract of pipeline/trainer.py and exports what it returns to ONNX
with one input per column, so the ColumnTransformer selects its columns by name."""

from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeline.trainer import Params


def fit(frame: pd.DataFrame, target: "pd.Series[Any]", params: Params, seed: int) -> Pipeline:
    numeric = [name for name in frame.columns if frame[name].dtype != object]
    strings = [name for name in frame.columns if frame[name].dtype == object]
    preprocess = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            # A missing city arrives as "": one more category. Unknown cities are all zeros.
            ("strings", OneHotEncoder(handle_unknown="ignore", sparse_output=False), strings),
        ]
    )
    model = LogisticRegression(C=float(params.get("C", 1.0)), max_iter=1000, random_state=seed)  # type: ignore[arg-type]
    return Pipeline([("preprocess", preprocess), ("model", model)]).fit(frame, target)
