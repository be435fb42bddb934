"""The CBPE estimate (NannyML, "Estimation of Performance of the Monitored Model": expected confusion
matrices from calibrated probabilities): close to the measured metric when the scores are calibrated,
blind to a model whose labels stopped matching its scores."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.quality.estimate import estimate, expected_roc_auc
from tests._capture import calibrated


def test_on_calibrated_scores_the_estimate_is_near_the_measurement() -> None:
    p, y = calibrated(20_000, seed=3)
    found = estimate(np.c_[1 - p, p], [0, 1])
    assert found.metrics["accuracy"] == pytest.approx(np.mean((p >= 0.5) == y), abs=0.01)
    assert found.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=0.01)
    assert found.basis == "estimate from 20000 served probabilities, assumes calibration"


def test_expected_accuracy_is_the_mean_probability_of_the_predicted_class() -> None:
    probabilities = np.asarray([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    found = estimate(probabilities, ["a", "b", "c"])
    assert found.metrics == {"accuracy": pytest.approx((0.9 + 0.5 + 0.8) / 3)}  # no ROC AUC: multiclass


def test_roc_auc_is_undefined_when_every_row_is_certain_of_one_class() -> None:
    assert expected_roc_auc(np.ones(10)) is None
    assert "roc_auc" not in estimate(np.c_[np.zeros(10), np.ones(10)], [0, 1]).metrics


def test_tied_scores_make_one_point_of_the_curve() -> None:
    """Every row scored 0.5: half of each threshold's rows expected positive, so the curve is the diagonal."""
    assert expected_roc_auc(np.full(50, 0.5)) == pytest.approx(0.5)
