"""The metrics of each task, computed from a model's outputs the same way for every model.

The metric names per task are the config's (`TASK_METRICS`): the gates may name only those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn import metrics as skm

LOWER_IS_BETTER = frozenset({"log_loss", "brier", "rmse", "mae"})


def better_delta(metric: str, candidate: float, champion: float) -> float:
    """Change from champion to candidate, positive when the candidate is better."""
    return champion - candidate if metric in LOWER_IS_BETTER else candidate - champion


def evaluate(probabilities: NDArray[Any], y_true: NDArray[Any], classes: Sequence[Any]) -> dict[str, float]:
    """A classifier's metrics (binary with two classes, else multiclass), from probabilities [N, C] whose
    columns follow `classes`."""
    labels = np.asarray(classes)
    # ONNX computes in float32: rows sum to 1 only within rounding, which scikit-learn warns about.
    probabilities = np.clip(probabilities, 1e-15, 1)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    predicted = labels[np.argmax(probabilities, axis=1)]
    log_loss = float(skm.log_loss(y_true, probabilities, labels=labels))
    accuracy = float(skm.accuracy_score(y_true, predicted))
    if len(labels) != 2:
        f1_macro = skm.f1_score(y_true, predicted, average="macro", labels=labels, zero_division=0)
        return {"accuracy": accuracy, "f1_macro": float(f1_macro), "log_loss": log_loss}
    positive = y_true == labels[-1]
    binary: dict[str, Any] = {"average": "binary", "pos_label": labels[-1], "zero_division": 0}
    return {
        "roc_auc": float(skm.roc_auc_score(positive, probabilities[:, 1])),
        "accuracy": accuracy,
        "f1": float(skm.f1_score(y_true, predicted, **binary)),
        "precision": float(skm.precision_score(y_true, predicted, **binary)),
        "recall": float(skm.recall_score(y_true, predicted, **binary)),
        "log_loss": log_loss,
        "brier": float(skm.brier_score_loss(positive, probabilities[:, 1])),
    }


def evaluate_values(values: NDArray[Any], y_true: NDArray[Any]) -> dict[str, float]:
    """A regression's metrics from its predicted values [N]."""
    y = np.asarray(y_true, dtype=np.float64)
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, values))),
        "mae": float(skm.mean_absolute_error(y, values)),
        "r2": float(skm.r2_score(y, values)),
    }
