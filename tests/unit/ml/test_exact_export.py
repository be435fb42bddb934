"""A trainer written as scikit-learn's examples write one (median imputer + scaler on the numbers, constant
imputer + one-hot encoder on the strings, a tree ensemble after them) exports within the default parity
bound, for each tree family, on a CSV with missing numbers and missing strings (issue 31)."""

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier, XGBRegressor

from model_service.contract.card import Feature, Parity
from pipeline.config import DataSpec, load_config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.ml.data import Dataset, load_dataset
from pipeline.ml.onnx_converters import nan_imputers_on_strings
from pipeline.ml.onnx_model import convert, predict, to_onnx
from pipeline.stages.export import _check_parity, parity_checks
from tests._card_v2 import card_of

REPO = Path(__file__).parents[3]
PARITY_BOUND = 1e-4
"""export.parity.max_abs_diff in environments/base.yaml."""
ROWS = 1500


def applicants_csv(folder: Path) -> Dataset:
    """Numbers with missing values, two string columns with missing values, a binary target."""
    rng = np.random.default_rng(31)
    lines = ["age,income,city,channel,approved"]
    for _ in range(ROWS):
        age = rng.normal(40, 12)
        income = rng.lognormal(10, 0.5)
        city = str(rng.choice(["paris", "lyon", "nice", "lille"]))
        channel = str(rng.choice(["web", "store", "phone"]))
        approved = int((age > 38) != (city == "paris") or rng.random() < 0.2)
        lines.append(
            ",".join(
                [
                    "" if rng.random() < 0.1 else f"{age:.0f}",
                    "" if rng.random() < 0.1 else f"{income:.2f}",
                    "" if rng.random() < 0.1 else city,
                    "" if rng.random() < 0.1 else channel,
                    str(approved),
                ]
            )
        )
    (folder / "applicants.csv").write_text("\n".join(lines) + "\n")
    return load_dataset(DataSpec(source="csv", path=Path("applicants.csv"), target="approved"), folder)


def sklearn_example_pipeline(model: Any, strings: SimpleImputer | None = None) -> Pipeline:
    """The pipeline of scikit-learn's "Column Transformer with Mixed Types" example, names by column."""
    imputer = strings or SimpleImputer(strategy="constant", fill_value="missing")
    return Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        (
                            "numeric",
                            make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                            ["age", "income"],
                        ),
                        (
                            "strings",
                            make_pipeline(imputer, OneHotEncoder(handle_unknown="ignore")),
                            ["city", "channel"],
                        ),
                    ]
                ),
            ),
            ("model", model),
        ]
    )


MODELS: dict[str, Callable[[], Any]] = {
    "random_forest": lambda: RandomForestClassifier(n_estimators=50, random_state=0),
    "gradient_boosting": lambda: GradientBoostingClassifier(random_state=0),
    # Dense one-hot columns: XGBoost reads the zeros of a sparse matrix as missing values, ONNX as zeros.
    "xgboost": lambda: XGBClassifier(n_estimators=50, n_jobs=1),
    "lightgbm": lambda: LGBMClassifier(n_estimators=50, n_jobs=1, verbose=-1),
}


def max_probability_diff(
    tmp_path: Path, data: Dataset, estimator: Any, inputs: list[dict[str, Any]]
) -> float:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(convert(estimator, inputs, classifier=estimator.steps[-1][1], opset=17))
    card = card_of(
        "binary",
        data.columns,
        {"inputs": inputs, "outputs": {"label": "label", "probabilities": "probabilities"}},
    )
    served = predict(onnx_path, card, data.test_rows()).probabilities
    assert served is not None
    return float(np.max(np.abs(served - estimator.predict_proba(data.test))))


@pytest.mark.parametrize("family", sorted(MODELS))
def test_the_sklearn_example_pipeline_is_served_as_fitted_for_each_tree_family(
    tmp_path: Path, family: str
) -> None:
    data = applicants_csv(tmp_path)
    estimator = sklearn_example_pipeline(MODELS[family]())
    if family == "xgboost":
        estimator.set_params(preprocess__strings__onehotencoder__sparse_output=False)
    estimator.fit(data.train, data.y_train)
    _, card_onnx = to_onnx(estimator, data.columns, task="binary", opset=17, origin="model.trainer 't:fit'")
    inputs = card_onnx["inputs"]
    assert [(i["name"], i["dtype"]) for i in inputs] == [
        ("age", "float64"),
        ("income", "float64"),
        ("city", "string"),
        ("channel", "string"),
    ]
    assert max_probability_diff(tmp_path, data, estimator, inputs) <= PARITY_BOUND


def test_float32_numbers_are_where_the_forest_lost_its_precision(tmp_path: Path) -> None:
    """The same forest fed float32 numbers: the scaling computed in float32 lands values a unit in the last
    place away from scikit-learn's float64 ones, and thresholds between the two flip trees."""
    data = applicants_csv(tmp_path)
    estimator = sklearn_example_pipeline(MODELS["random_forest"]()).fit(data.train, data.y_train)
    _, card_onnx = to_onnx(estimator, data.columns, task="binary", opset=17, origin="model.trainer 't:fit'")
    as_float32 = [{**i, "dtype": "float32"} if i["dtype"] == "float64" else i for i in card_onnx["inputs"]]
    assert max_probability_diff(tmp_path, data, estimator, as_float32) > PARITY_BOUND
    assert max_probability_diff(tmp_path, data, estimator, card_onnx["inputs"]) <= PARITY_BOUND


@pytest.mark.parametrize(
    "imputer",
    [
        SimpleImputer(strategy="constant", fill_value="missing"),
        SimpleImputer(strategy="most_frequent"),
        SimpleImputer(missing_values=None, strategy="constant", fill_value="missing"),
        SimpleImputer(missing_values="", strategy="constant", fill_value="missing"),
        SimpleImputer(missing_values="", strategy="most_frequent"),
    ],
    ids=["nan-constant", "nan-most-frequent", "none-constant", "empty-constant", "empty-most-frequent"],
)
def test_the_usual_string_imputers_export_as_they_were_fitted(tmp_path: Path, imputer: SimpleImputer) -> None:
    """A missing string is "" in the frame a trainer gets and in a served request alike: an imputer looking
    for NaN or None never replaced one in the fit and is exported as leaving them; one looking for ""
    fills them in ONNX as in scikit-learn. Rows with a missing string and an unseen string are compared too."""
    data = applicants_csv(tmp_path)
    estimator = sklearn_example_pipeline(MODELS["random_forest"](), imputer).fit(data.train, data.y_train)
    _, card_onnx = to_onnx(estimator, data.columns, task="binary", opset=17, origin="model.trainer 't:fit'")
    assert max_probability_diff(tmp_path, data, estimator, card_onnx["inputs"]) <= PARITY_BOUND
    looks_for_nan = not isinstance(imputer.missing_values, str)
    assert nan_imputers_on_strings(estimator, {"city", "channel"}) == (
        [["city", "channel"]] if looks_for_nan else []
    )


def test_a_numeric_pipeline_scaling_before_a_forest_takes_one_float64_matrix(tmp_path: Path) -> None:
    """No strings, no ColumnTransformer: one input matrix, float64 when a step computes on the numbers
    before the trees; an imputer alone keeps float32 (the trees round what it fills in to float32 too)."""
    data = applicants_csv(tmp_path)
    numbers = data.train[["age", "income"]]
    columns = [c for c in data.columns if c.numeric]
    scaled = make_pipeline(SimpleImputer(), StandardScaler(), MODELS["random_forest"]()).fit(
        numbers, data.y_train
    )
    imputed = make_pipeline(SimpleImputer(), MODELS["random_forest"]()).fit(numbers, data.y_train)
    for estimator, dtype in ((scaled, "float64"), (imputed, "float32")):
        _, card_onnx = to_onnx(estimator, columns, task="binary", opset=17, origin="model.trainer 't:fit'")
        assert card_onnx["inputs"] == [{"name": "input", "dtype": dtype, "features": ["age", "income"]}]
        onnx_path = tmp_path / "m.onnx"
        onnx_path.write_bytes(
            convert(estimator, card_onnx["inputs"], classifier=estimator.steps[-1][1], opset=17)
        )
        card = card_of("binary", columns, card_onnx)
        rows = [row[:2] for row in data.test_rows()]
        served = predict(onnx_path, card, rows).probabilities
        assert served is not None
        expected = estimator.predict_proba(data.test[["age", "income"]])
        assert float(np.max(np.abs(served - expected))) <= PARITY_BOUND


@pytest.mark.parametrize(
    ("parts", "cause"),
    [
        (
            ["SimpleImputer", "StandardScaler", "HistGradientBoostingClassifier"],
            (
                "HistGradientBoostingClassifier compares float64 values with thresholds its ONNX converter "
                "writes as float32: use RandomForest, GradientBoosting or XGBoost, which export exactly"
            ),
        ),
        (["StandardScaler", "SVC"], "one of them computes in ONNX otherwise than in scikit-learn"),
    ],
)
def test_a_parity_failure_names_the_components_and_the_remedy(parts: list[str], cause: str) -> None:
    config = load_config("dev", REPO / "environments")
    parity = Parity(rows=375, label_agreement=1.0, max_abs_diff=0.022)
    with pytest.raises(StageError) as failed:
        _check_parity(parity, parity_checks(config, parity), Reporter(io.StringIO()), parts)
    message = str(failed.value)
    assert f"The served model would not answer as the fitted {' + '.join(parts)}: {cause}" in message
    assert "on 375 evaluation rows: max abs probability diff 0.022 > max 0.0001;" in message


def test_imputers_and_encoders_alone_keep_float32_numbers(tmp_path: Path) -> None:
    """Nothing computes on the numbers before the forest but an imputer: float32 inputs are exact (the trees
    round to float32 themselves), and the card keeps the layout the built-in families have always had."""
    data = applicants_csv(tmp_path)
    estimator = sklearn_example_pipeline(MODELS["random_forest"]())
    estimator.set_params(preprocess__numeric=SimpleImputer(strategy="median")).fit(data.train, data.y_train)
    _, card_onnx = to_onnx(estimator, data.columns, task="binary", opset=17, origin="model.trainer 't:fit'")
    assert [i["dtype"] for i in card_onnx["inputs"]] == ["float32", "float32", "string", "string"]
    assert max_probability_diff(tmp_path, data, estimator, card_onnx["inputs"]) <= PARITY_BOUND


REGRESSORS: dict[str, Callable[[], Any]] = {
    "random_forest": lambda: RandomForestRegressor(n_estimators=50, random_state=0),
    "gradient_boosting": lambda: GradientBoostingRegressor(random_state=0),
    "xgboost": lambda: XGBRegressor(n_estimators=50, n_jobs=1),
    "lightgbm": lambda: LGBMRegressor(n_estimators=50, n_jobs=1, verbose=-1),
}


@pytest.mark.parametrize("family", sorted(REGRESSORS))
def test_a_tree_regressor_behind_the_same_preprocessing_predicts_as_fitted(
    tmp_path: Path, family: str
) -> None:
    data = applicants_csv(tmp_path)
    values = data.train["income"].fillna(30000.0) / 1000 + 5.0 * (data.train["city"] == "paris")
    estimator = sklearn_example_pipeline(REGRESSORS[family]())
    estimator.set_params(preprocess__strings__onehotencoder__sparse_output=False).fit(data.train, values)
    onnx_bytes, card_onnx = to_onnx(estimator, data.columns, task="regression", opset=17, origin="t")
    assert {i["dtype"] for i in card_onnx["inputs"]} == {"float64", "string"}
    (tmp_path / "m.onnx").write_bytes(onnx_bytes)
    card = card_of("regression", data.columns, card_onnx)
    served = predict(tmp_path / "m.onnx", card, data.test_rows()).values
    assert served is not None
    expected = estimator.predict(data.test)
    # export.parity's default for values: within 1e-4, or within 1e-5 of the value (the trees' sums run in
    # float32 in ONNX).
    difference = np.abs(served - expected)
    assert float(np.max(difference)) <= PARITY_BOUND or float(np.max(difference / np.abs(expected))) <= 1e-5


def test_a_numeric_imputer_with_a_marker_value_fills_as_fitted_and_an_indicator_is_refused(
    tmp_path: Path,
) -> None:
    """missing_values=-1 on the numbers (Equal + Where in float64); add_indicator=True is refused at
    conversion, naming the imputer and the fix, rather than exported narrower than the fit."""
    data = applicants_csv(tmp_path)
    frame = data.train.fillna({"age": -1.0, "income": -1.0})
    marker = SimpleImputer(missing_values=-1.0, strategy="mean")
    estimator = sklearn_example_pipeline(MODELS["random_forest"]())
    estimator.set_params(preprocess__numeric=make_pipeline(marker, StandardScaler())).fit(frame, data.y_train)
    _, card_onnx = to_onnx(estimator, data.columns, task="binary", opset=17, origin="t")
    rows = [[-1.0 if v is None else v for v in row[:2]] + row[2:] for row in data.test_rows()]
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(
        convert(estimator, card_onnx["inputs"], classifier=estimator.steps[-1][1], opset=17)
    )
    card = card_of("binary", data.columns, card_onnx)
    served = predict(onnx_path, card, rows).probabilities
    assert served is not None
    expected = estimator.predict_proba(data.test.fillna({"age": -1.0, "income": -1.0}))
    assert float(np.max(np.abs(served - expected))) <= PARITY_BOUND

    estimator.set_params(preprocess__numeric=SimpleImputer(add_indicator=True)).fit(data.train, data.y_train)
    with pytest.raises(
        StageError,
        match=r"SimpleImputer\(add_indicator=True\) has no ONNX converter; use add_indicator=False",
    ):
        to_onnx(estimator, data.columns, task="binary", opset=17, origin="t")


def test_lightgbm_behind_a_scaler_decides_on_float64_values_with_float64_thresholds(tmp_path: Path) -> None:
    """LightGBM compares float64 values with float64 thresholds: on values closer together than float32
    can tell apart, only the float64 graph (input and TreeEnsemble thresholds) answers as the fit does."""
    n = 2000
    frame = pd.DataFrame({"x": 1.0 + np.arange(n) * 3e-8, "noise": np.random.default_rng(0).normal(size=n)})
    labels = (np.arange(n) % 200 >= 100).astype(np.int64)
    estimator = make_pipeline(
        StandardScaler(with_mean=False),
        LGBMClassifier(n_estimators=30, n_jobs=1, verbose=-1, min_child_samples=5),
    ).fit(frame, labels)
    columns = [Feature("x", "float"), Feature("noise", "float")]
    _, card_onnx = to_onnx(estimator, columns, task="binary", opset=17, origin="t")
    assert card_onnx["inputs"] == [{"name": "input", "dtype": "float64", "features": ["x", "noise"]}]
    rows = frame.to_numpy().tolist()
    expected = estimator.predict_proba(frame)
    for dtype, within_bound in (("float64", True), ("float32", False)):
        inputs = [{**card_onnx["inputs"][0], "dtype": dtype}]
        (tmp_path / "m.onnx").write_bytes(
            convert(estimator, inputs, classifier=estimator.steps[-1][1], opset=17)
        )
        served = predict(
            tmp_path / "m.onnx", card_of("binary", columns, {**card_onnx, "inputs": inputs}), rows
        ).probabilities
        assert served is not None
        assert (float(np.max(np.abs(served - expected))) <= PARITY_BOUND) is within_bound, dtype
