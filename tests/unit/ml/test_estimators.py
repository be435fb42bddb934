"""Built-in families per task, the default preprocessing, the trainer plug-in's errors, and the ONNX
conversion with one input per column (fed as a client sends rows)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from pipeline.config import ConfigError, DataSpec, ModelSpec
from pipeline.ml.data import Dataset, load_dataset
from pipeline.ml.estimators import fit, fitted_input, has_column_transformer, load_trainer
from pipeline.ml.onnx_model import convert, input_layout, predict
from pipeline.stages.export import unknown_categories
from tests._card_v2 import card_of

ROWS = 120


def mixed_csv(folder: Path) -> Dataset:
    rng = np.random.default_rng(3)
    lines = ["size,colour,flag,y"]
    for i in range(ROWS):
        size = "" if i % 9 == 0 else f"{rng.normal(5, 2):.3f}"
        colour = "" if i % 11 == 0 else ("red", "green", "blue")[i % 3]
        lines.append(f"{size},{colour},{i % 2 == 0},{int(i % 3 == 0 or rng.random() < 0.2)}")
    (folder / "mixed.csv").write_text("\n".join(lines) + "\n")
    return load_dataset(DataSpec(source="csv", path=Path("mixed.csv"), target="y"), folder)


@pytest.mark.parametrize("family", ["lightgbm", "xgboost", "random_forest", "logistic_regression"])
def test_a_built_in_family_on_mixed_data_exports_one_input_per_column_with_parity(
    tmp_path: Path, family: str
) -> None:
    data = mixed_csv(tmp_path)
    spec = ModelSpec(
        name="m", estimator=family, params={"n_estimators": 20} if family != "logistic_regression" else {}
    )
    fitted = fit(spec, data, seed=1, root=tmp_path)
    assert fitted.takes_frame and has_column_transformer(fitted.estimator)
    inputs = input_layout(data.columns, per_column=True)
    assert [(i["name"], i["dtype"]) for i in inputs] == [
        ("size", "float32"),
        ("colour", "string"),
        ("flag", "float32"),
    ]
    final = fitted.estimator.steps[-1][1]
    (tmp_path / "m.onnx").write_bytes(convert(fitted.estimator, inputs, classifier=final, opset=17))
    card = card_of(
        "binary",
        data.columns,
        {"inputs": inputs, "outputs": {"label": "label", "probabilities": "probabilities"}},
    )
    rows = data.test_rows()
    assert any(row[0] is None for row in rows) or any(row[1] is None for row in rows)
    onnx = predict(tmp_path / "m.onnx", card, rows).probabilities
    expected = fitted.estimator.predict_proba(fitted_input(fitted, data.test))
    assert onnx is not None
    assert np.max(np.abs(onnx - expected)) < 1e-4
    # A category never seen in training is all zeros for the encoder: a prediction, not an error.
    unseen = predict(tmp_path / "m.onnx", card, [[1.0, "purple", True], [None, None, None]]).probabilities
    assert unseen is not None and unseen.shape == (2, 2)
    assert unknown_categories(fitted.estimator) == {"colour": "ignore"}


def test_the_encoders_unknown_handling_is_read_from_the_fit() -> None:
    strict = Pipeline([("p", ColumnTransformer([("s", OneHotEncoder(handle_unknown="error"), ["city"])]))])
    strict.fit(pd.DataFrame({"city": ["a", "b"]}))
    assert unknown_categories(strict) == {"city": "error"}


def test_numeric_data_with_gaps_keeps_one_input_and_imputes(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text(
        "a,b,y\n" + "\n".join(f"{'' if i % 7 == 0 else i},{i % 5},{i % 2}" for i in range(60)) + "\n"
    )
    data = load_dataset(DataSpec(source="csv", path=Path("d.csv"), target="y"), tmp_path)
    fitted = fit(ModelSpec(name="m", estimator="gradient_boosting"), data, seed=1, root=tmp_path)
    assert not fitted.takes_frame and not has_column_transformer(fitted.estimator)
    assert fitted.estimator.steps[0][0] == "simpleimputer"
    assert input_layout(data.columns, per_column=False) == [
        {"name": "input", "dtype": "float32", "features": ["a", "b"]}
    ]


def test_logistic_regression_refuses_a_regression_and_boosting_params_are_checked(tmp_path: Path) -> None:
    data = load_dataset(DataSpec(dataset="diabetes"), tmp_path)
    with pytest.raises(ConfigError, match=r"model\.estimator: logistic_regression is a classifier"):
        fit(ModelSpec(name="m", estimator="logistic_regression"), data, seed=1, root=tmp_path)
    with pytest.raises(
        ConfigError, match=r"model.params: XGBRegressor rejects them: unknown parameters \['n_trees'\]"
    ):
        fit(ModelSpec(name="m", estimator="xgboost", params={"n_trees": 3}), data, seed=1, root=tmp_path)


def write_module(root: Path, name: str, text: str) -> None:
    (root / f"{name}.py").write_text(text)


@pytest.mark.parametrize(
    ("trainer", "module_text", "expected"),
    [
        ("absent_module_c1:fit", None, "cannot import 'absent_module_c1' from the workspace"),
        (
            "trainer_no_attr_c1:fit",
            "def train(frame, target, params, seed): ...\n",
            "has no 'fit' (callables there: ['train'])",
        ),
        ("trainer_not_callable_c1:fit", "fit = 3\n", "fit is a int, not a function"),
        (
            "trainer_broken_c1:fit",
            "import not_installed_anywhere_c1\n",
            "importing trainer_broken_c1 failed: ModuleNotFoundError",
        ),
    ],
)
def test_a_bad_trainer_path_names_the_key_and_what_is_wrong(
    tmp_path: Path, trainer: str, module_text: str | None, expected: str
) -> None:
    if module_text is not None:
        write_module(tmp_path, trainer.partition(":")[0], module_text)
    with pytest.raises(ConfigError) as caught:
        load_trainer(trainer, tmp_path)
    assert str(caught.value).startswith(f"model.trainer {trainer!r}: ")
    assert expected in str(caught.value)


def test_a_trainer_returning_no_classifier_is_refused_before_anything_is_kept(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "trainer_returns_dict_c1",
        "def fit(frame, target, params, seed):\n    return {'model': 1}\n",
    )
    data = mixed_csv(tmp_path)
    with pytest.raises(ConfigError) as caught:
        fit(ModelSpec(name="m", trainer="trainer_returns_dict_c1:fit"), data, seed=1, root=tmp_path)
    assert "returned a builtins.dict without predict, predict_proba, classes_" in str(caught.value)


def test_a_trainer_gets_the_frame_target_params_and_seed(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "trainer_records_c1",
        "from sklearn.dummy import DummyClassifier\n"
        "seen = {}\n"
        "def fit(frame, target, params, seed):\n"
        "    seen.update(columns=list(frame.columns), dtypes=[str(t) for t in frame.dtypes], rows=len(target), params=dict(params), seed=seed)\n"
        "    return DummyClassifier().fit(frame, target)\n",
    )
    data = mixed_csv(tmp_path)
    fit(
        ModelSpec(name="m", trainer="trainer_records_c1:fit", params={"depth": 3}),
        data,
        seed=9,
        root=tmp_path,
    )
    import trainer_records_c1  # type: ignore[import-not-found]  # noqa: PLC0415

    assert trainer_records_c1.seen == {
        "columns": ["size", "colour", "flag"],
        "dtypes": ["float64", "object", "bool"],
        "rows": len(data.train),
        "params": {"depth": 3},
        "seed": 9,
    }


def test_xgboost_refuses_classes_other_than_0_to_n(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text(
        "a,y\n" + "\n".join(f"{i},{'yes' if i % 2 else 'no'}" for i in range(20)) + "\n"
    )
    data = load_dataset(DataSpec(source="csv", path=Path("d.csv"), target="y"), tmp_path)
    with pytest.raises(
        ConfigError, match=r"xgboost's classifier takes the classes 0\.\.1 only .* \['no', 'yes'\]"
    ):
        fit(ModelSpec(name="m", estimator="xgboost"), data, seed=1, root=tmp_path)
