"""Reference profile v2 (categorical bins, the missing-value bin, a regression's score) and the metrics
of each task."""

import numpy as np
import pandas as pd
import pytest

from model_service.contract.card import Feature
from model_service.contract.monitoring import category_index
from pipeline.ml.profile import card_reference
from pipeline.ml.scoring import better_delta, evaluate, evaluate_values


def test_category_index_puts_unknown_and_missing_values_in_the_other_bin() -> None:
    values = np.array(["Paris", "Lyon", "Nice", None, "", "Aaa", "Zzz"], dtype=object)
    index = category_index(["Lyon", "Paris"], values)
    assert index.tolist() == [1, 0, 2, 2, 2, 2, 2]
    assert category_index([], ["x"]).tolist() == [0]


def test_profile_v2_bins_categories_and_missing_values() -> None:
    train = pd.DataFrame(
        {
            "age": [20.0, 30.0, np.nan, 40.0, 50.0, np.nan, 60.0, 70.0],
            "city": ["Lyon", "Paris", "", "Lyon", "Lyon", "Paris", "", "Lyon"],
        }
    )
    columns = [
        Feature("age", "float", nullable=True),
        Feature("city", "string", nullable=True, categories=("Lyon", "Paris")),
    ]
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.45, 0.55]])
    profile = card_reference(
        columns, train, eval_rows=3, eval_probabilities=probabilities, eval_values=None, classes=[0, 1]
    )
    age, city = profile["features"]
    assert age["kind"] == "numeric"
    assert len(age["frequencies"]) == len(age["edges"])  # k value bins + the missing bin
    assert age["frequencies"][-1] == pytest.approx(2 / 8)
    assert sum(age["frequencies"]) == pytest.approx(1)
    assert city == {
        "name": "city",
        "kind": "categorical",
        "categories": ["Lyon", "Paris"],
        "frequencies": [0.5, 0.25, 0.25],
    }
    assert profile["rows"] == {"train": 8, "eval": 3}
    assert profile["classes"] == {"0": pytest.approx(1 / 3), "1": pytest.approx(2 / 3)}
    assert profile["score"]["edges"][0] == 0.0 and profile["score"]["edges"][-1] == 1.0


def test_a_regression_profile_bins_predicted_values_on_quantiles_and_has_no_classes() -> None:
    train = pd.DataFrame({"x": np.arange(50.0)})
    values = np.linspace(100, 300, 40)
    profile = card_reference(
        [Feature("x", "float", nullable=False)],
        train,
        eval_rows=40,
        eval_probabilities=None,
        eval_values=values,
        classes=None,
    )
    assert "classes" not in profile
    edges = profile["score"]["edges"]
    assert edges[0] == 100 and edges[-1] == 300 and len(edges) == 11
    assert profile["score"]["frequencies"] == pytest.approx([0.1] * 10)
    assert (
        len(profile["features"][0]["frequencies"]) == len(profile["features"][0]["edges"]) - 1
    )  # not nullable


def test_each_task_produces_its_own_metrics() -> None:
    y = np.array(["a", "b", "c", "a"])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    multiclass = evaluate(probabilities, y, ["a", "b", "c"])
    assert set(multiclass) == {"accuracy", "f1_macro", "log_loss"}
    assert multiclass["accuracy"] == 0.75
    regression = evaluate_values(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 2.0]))
    assert regression["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert regression["mae"] == pytest.approx(2 / 3)
    assert set(regression) == {"rmse", "mae", "r2"}
    assert better_delta("rmse", 9.0, 10.0) == 1.0  # lower is better: 1 better
    assert better_delta("r2", 0.4, 0.5) == pytest.approx(-0.1)


def test_a_boolean_feature_gets_a_false_bin_and_a_true_bin() -> None:
    train = pd.DataFrame({"flag": [True, False, True, True]})
    profile = card_reference(
        [Feature("flag", "bool", nullable=False)],
        train,
        eval_rows=1,
        eval_probabilities=np.array([[0.3, 0.7]]),
        eval_values=None,
        classes=[0, 1],
    )
    assert profile["features"][0]["edges"] == [0.0, 0.5, 1.0]
    assert profile["features"][0]["frequencies"] == [0.25, 0.75]
