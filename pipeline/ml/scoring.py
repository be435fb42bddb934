"""Classification metrics computed from class probabilities, the same way for every model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn import metrics as skm

LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


def better_delta(metric: str, candidate: float, champion: float) -> float:
    """Change from champion to candidate, positive when the candidate is better."""
    return champion - candidate if metric in LOWER_IS_BETTER else candidate - champion


def evaluate(probabilities: NDArray[Any], y_true: NDArray[Any], classes: Sequence[Any]) -> dict[str, float]:
    """Every metric the gates know, from probabilities [N, C] whose columns follow `classes`."""
    labels = np.asarray(classes)
    # ONNX computes in float32: rows sum to 1 only within rounding, which scikit-learn warns about.
    probabilities = np.clip(probabilities, 1e-15, 1)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    predicted = labels[np.argmax(probabilities, axis=1)]
    binary = len(labels) == 2
    positive = y_true == labels[-1]
    average = "binary" if binary else "macro"
    pos_label = labels[-1] if binary else 1
    if binary:
        roc_auc = skm.roc_auc_score(positive, probabilities[:, 1])
        brier = skm.brier_score_loss(positive, probabilities[:, 1])
    else:
        roc_auc = skm.roc_auc_score(y_true, probabilities, multi_class="ovr", labels=labels)
        onehot = (y_true[:, None] == labels[None, :]).astype(np.float64)
        brier = float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))
    return {
        "roc_auc": float(roc_auc),
        "accuracy": float(skm.accuracy_score(y_true, predicted)),
        "f1": float(skm.f1_score(y_true, predicted, average=average, pos_label=pos_label, zero_division=0)),
        "precision": float(
            skm.precision_score(y_true, predicted, average=average, pos_label=pos_label, zero_division=0)
        ),
        "recall": float(
            skm.recall_score(y_true, predicted, average=average, pos_label=pos_label, zero_division=0)
        ),
        "log_loss": float(skm.log_loss(y_true, probabilities, labels=labels)),
        "brier": float(brier),
    }
