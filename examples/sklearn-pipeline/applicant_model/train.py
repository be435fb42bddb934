"""The pipeline as scikit-learn's own examples write one ("Column Transformer with Mixed Types"): median
imputation and scaling on the numbers, a constant imputer and one-hot encoding on the strings, a random
forest after them. Nothing in it is written for the template.

The pipeline calls `fit` with the contract of pipeline/trainer.py and exports what it returns to ONNX
with one input per column, so the ColumnTransformer selects its columns by name."""

from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pipeline.trainer import Params


def fit(frame: pd.DataFrame, target: "pd.Series[Any]", params: Params, seed: int) -> Pipeline:
    numeric_features = frame.select_dtypes(include="number").columns.tolist()
    categorical_features = frame.select_dtypes(exclude="number").columns.tolist()
    numeric_transformer = Pipeline(
        steps=[("imputer", SimpleImputer(strategy="median")), ("scaler", StandardScaler())]
    )
    categorical_transformer = Pipeline(
        steps=[
            ("imputer", SimpleImputer(strategy="constant", fill_value="missing")),
            ("encoder", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    preprocessor = ColumnTransformer(
        transformers=[
            ("num", numeric_transformer, numeric_features),
            ("cat", categorical_transformer, categorical_features),
        ]
    )
    classifier = RandomForestClassifier(
        n_estimators=int(params.get("n_estimators", 100)),  # type: ignore[arg-type]
        min_samples_leaf=int(params.get("min_samples_leaf", 1)),  # type: ignore[arg-type]
        random_state=seed,
        n_jobs=1,
    )
    return Pipeline(steps=[("preprocessor", preprocessor), ("classifier", classifier)]).fit(frame, target)
