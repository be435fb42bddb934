"""The reference profile of a model card and the statistics that compare a sample with it (numpy only).

Bin convention, shared with the service (model_service/drift.py, which cannot import this module):
a feature's `edges` are `[e0, e1, ..., ek]` (k bins); a value's bin is the number of inner edges
`e1..e(k-1)` that are <= the value (`np.searchsorted(edges[1:-1], x, side="right")`), so values below
`e0` land in the first bin and values above `ek` in the last one: every row is counted once. Values and
edges are compared in float32, the model's input dtype, so both sides agree on values equal to an edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

FEATURE_BINS = 10
"""Quantile bins per feature (fewer when a feature has fewer distinct values)."""
SCORE_EDGES = tuple(round(i / 10, 1) for i in range(11))
"""Equal-width bins of the score on [0, 1]: quantiles of a confident model's scores collapse at 0 and 1."""
PSI_FLOOR = 1e-4
"""Smallest share used in PSI, so an empty bin counts as rare, not as infinitely surprising."""


def quantile_edges(values: NDArray[Any], bins: int = FEATURE_BINS) -> list[float]:
    """Edges of up to `bins` quantile bins; duplicates (discrete features) are merged."""
    quantiles = np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0.0, 1.0, bins + 1))
    edges = [float(v) for v in np.unique(quantiles)]
    return edges if len(edges) >= 2 else [edges[0], edges[0]]  # a constant feature: one bin


def bin_index(edges: Sequence[float], values: NDArray[Any]) -> NDArray[np.intp]:
    """Bin of each value (the convention above), compared in float32 like the service sees its inputs."""
    inner = np.asarray(edges[1:-1], dtype=np.float32)
    return np.searchsorted(inner, np.asarray(values, dtype=np.float32), side="right")


def bin_counts(edges: Sequence[float], values: NDArray[Any]) -> NDArray[np.int64]:
    return np.bincount(bin_index(edges, values), minlength=len(edges) - 1).astype(np.int64)


def shares(counts: NDArray[Any]) -> NDArray[np.float64]:
    total = float(np.sum(counts))
    return np.asarray(counts, dtype=np.float64) / total if total else np.zeros(len(counts))


def psi(expected: Sequence[float] | NDArray[Any], actual: Sequence[float] | NDArray[Any]) -> float:
    """Population stability index of two distributions over the same bins (shares, each floored)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def binned_ks(expected: Sequence[float] | NDArray[Any], actual: Sequence[float] | NDArray[Any]) -> float:
    """Kolmogorov-Smirnov statistic evaluated at the bin edges (largest gap of the two binned CDFs)."""
    return float(np.max(np.abs(np.cumsum(expected) - np.cumsum(actual)))) if len(expected) else 0.0


def scores(probabilities: NDArray[Any]) -> NDArray[np.float64]:
    """The score of each row: the positive-class probability (binary), else the largest probability."""
    p = np.asarray(probabilities, dtype=np.float64)
    return p[:, 1] if p.shape[1] == 2 else p.max(axis=1)


def reference_profile(
    features: Sequence[str],
    train_rows: NDArray[Any],
    eval_probabilities: NDArray[Any],
    classes: Sequence[Any],
) -> dict[str, Any]:
    """The card's `reference`: feature bins from the training rows, score and classes on the eval rows."""
    feature_profiles = []
    for j, name in enumerate(features):
        edges = quantile_edges(train_rows[:, j])
        feature_profiles.append(
            {
                "name": name,
                "edges": edges,
                "frequencies": shares(bin_counts(edges, train_rows[:, j])).tolist(),
            }
        )
    score_counts = bin_counts(SCORE_EDGES, scores(eval_probabilities))
    predicted = np.bincount(np.argmax(eval_probabilities, axis=1), minlength=len(classes))
    return {
        "rows": {"train": len(train_rows), "eval": len(eval_probabilities)},
        "features": feature_profiles,
        "score": {"edges": list(SCORE_EDGES), "frequencies": shares(score_counts).tolist()},
        "classes": {str(c): float(s) for c, s in zip(classes, shares(predicted), strict=True)},
    }
