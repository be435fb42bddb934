"""A classifier's expected quality from its served probabilities alone, before any label arrives.

Confidence-based performance estimation (CBPE), as NannyML documents it ("Estimation of Performance of the
Monitored Model", docs/how_it_works/performance_estimation.rst): when the probabilities are calibrated, row
j's predicted class is right with probability p̂_j, so the confusion matrix has an expected value. Expected
accuracy is the mean probability of the predicted class; expected ROC AUC (binary) takes each distinct
score as a threshold t, counts expected TP = Σ p̂ and FP = Σ (1 - p̂) over the rows scored >= t, and
integrates the resulting ROC curve. An estimate, never a measurement: it assumes calibration and no
concept drift (P(y|x) unchanged), which only labels can check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

ESTIMATED_METRICS = ("accuracy", "roc_auc")
"""The metrics CBPE estimates here: accuracy for every classifier, ROC AUC for a binary one."""


@dataclass(frozen=True)
class Estimate:
    metrics: dict[str, float]
    rows: int

    @property
    def basis(self) -> str:
        """What the figures rest on, shown beside them wherever they appear."""
        return f"estimate from {self.rows} served probabilities, assumes calibration"


def expected_accuracy(probabilities: NDArray[Any]) -> float:
    """The mean probability of each row's predicted class (its largest)."""
    return float(np.mean(np.max(probabilities, axis=1)))


def expected_roc_auc(positive: NDArray[Any]) -> float | None:
    """The expected ROC AUC of positive-class probabilities [N]; None when it is undefined (every row
    certain of one class: no expected positives or no expected negatives)."""
    p = np.asarray(positive, dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    p = p[order]
    # One ROC point per distinct threshold, taken from the highest score down: the rows scored >= t.
    last_of_each = np.r_[np.flatnonzero(np.diff(p) != 0), len(p) - 1]
    true_positives = np.cumsum(p)[last_of_each]
    false_positives = np.cumsum(1 - p)[last_of_each]
    positives, negatives = p.sum(), (1 - p).sum()
    if positives <= 0 or negatives <= 0:
        return None
    tpr = np.r_[0.0, true_positives / positives]
    fpr = np.r_[0.0, false_positives / negatives]
    return float(np.trapezoid(tpr, fpr))


def estimate(probabilities: NDArray[Any], classes: Sequence[Any]) -> Estimate:
    """The CBPE estimate of rows of served probabilities [N, C] (columns in `classes` order)."""
    p = np.asarray(probabilities, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)  # served in float32: rows sum to 1 only within rounding
    metrics = {"accuracy": expected_accuracy(p)}
    if len(classes) == 2:
        auc = expected_roc_auc(p[:, 1])
        if auc is not None:
            metrics["roc_auc"] = auc
    return Estimate(metrics, len(p))
