import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import BASE_FILE, Config, load_config
from pipeline.ml.scoring import better_delta, evaluate
from pipeline.release.gating import checks_for

ENVIRONMENTS = Path(__file__).parents[2] / "environments"
# The gates these tests reason about, written here so that a fork editing its own gates keeps them true.
GATES = """\
extends: base
gates: !replace
  mode: enforce
  metrics:
    roc_auc: {min: 0.95, vs_champion: {min_delta: -0.005}}
    accuracy: {min: 0.90, vs_champion: {min_delta: -0.01}}
    log_loss: {max: 0.35, vs_champion: {min_relative_delta: -0.1}}
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The shipped base (any valid one does) under the gates above."""
    shutil.copy(ENVIRONMENTS / BASE_FILE, tmp_path / BASE_FILE)
    (tmp_path / "gated.yaml").write_text(GATES)
    return load_config("gated", tmp_path)


def test_delta_is_positive_when_the_candidate_is_better() -> None:
    assert better_delta("roc_auc", 0.95, 0.9) == pytest.approx(0.05)
    assert better_delta("log_loss", 0.1, 0.3) == pytest.approx(0.2)
    assert better_delta("log_loss", 0.3, 0.1) == pytest.approx(-0.2)


def test_first_deploy_has_only_absolute_checks(config: Config) -> None:
    checks = checks_for(config, {"roc_auc": 0.99, "accuracy": 0.95, "log_loss": 0.1}, None)
    assert [(c.name, c.comparator) for c in checks] == [
        ("roc_auc", ">="),
        ("accuracy", ">="),
        ("log_loss", "<="),
    ]
    assert all(c.passed for c in checks)


def test_champion_comparison_is_direction_aware(config: Config) -> None:
    champion = {"roc_auc": 0.99, "accuracy": 0.95, "log_loss": 0.10}
    candidate = {"roc_auc": 0.98, "accuracy": 0.95, "log_loss": 0.12}
    results = {(c.scope, c.metric): c for c in checks_for(config, candidate, champion)}
    assert not results["roc_auc", "delta vs champion"].passed  # 0.01 worse, 0.005 tolerated
    assert results["accuracy", "delta vs champion"].passed
    relative = results["log_loss", "relative delta vs champion"]
    assert relative.value == pytest.approx(-0.2)  # 20 % higher loss is 20 % worse
    assert not relative.passed
    assert relative.line() == "log_loss relative delta vs champion -0.2 < min -0.1: 0.12 vs champion 0.1"


def test_a_missing_metric_fails_rather_than_passes(config: Config) -> None:
    checks = checks_for(config, {"accuracy": 0.95, "log_loss": 0.1}, None)
    roc = next(c for c in checks if c.scope == "roc_auc")
    assert roc.value is None
    assert not roc.passed
    assert roc.line() == "roc_auc: no data"


def test_evaluate_binary_and_multiclass() -> None:
    y = np.array([0, 1, 1, 0])
    perfect = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.7, 0.3]])
    metrics = evaluate(perfect, y, [0, 1])
    assert metrics["accuracy"] == 1.0
    assert metrics["roc_auc"] == 1.0
    y3 = np.array(["a", "b", "c"])
    probabilities = np.eye(3) * 0.8 + 0.1 / 1
    metrics3 = evaluate(probabilities / probabilities.sum(axis=1, keepdims=True), y3, ["a", "b", "c"])
    assert metrics3["accuracy"] == 1.0
    assert metrics3["log_loss"] < 0.5


def test_regression_gates_compare_with_the_champion_in_the_better_direction(tmp_path: Path) -> None:
    shutil.copy(ENVIRONMENTS / BASE_FILE, tmp_path / BASE_FILE)
    (tmp_path / "reg.yaml").write_text(
        "extends: base\nmodel: {task: regression}\ngates: !replace\n  metrics:\n"
        "    rmse: {max: 60, vs_champion: {min_relative_delta: -0.03}}\n"
        "    r2: {min: 0.3, vs_champion: {min_delta: -0.02}}\n"
    )
    config = load_config("reg", tmp_path)
    champion = {"rmse": 50.0, "mae": 40.0, "r2": 0.45}
    slightly_worse = checks_for(config, {"rmse": 51.0, "mae": 40.0, "r2": 0.44}, champion)
    assert all(c.passed for c in slightly_worse)  # 2 % worse rmse, 0.01 lower r2: within tolerance
    much_worse = checks_for(config, {"rmse": 52.0, "mae": 41.0, "r2": 0.42}, champion)
    assert [(c.scope, c.metric) for c in much_worse if not c.passed] == [
        ("rmse", "relative delta vs champion"),
        ("r2", "delta vs champion"),
    ]
