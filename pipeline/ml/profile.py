"""The reference profile of a model card (what export writes as its `reference`) and the binned statistics
that compare a sample with it (numpy only).

The bin convention, the score and PSI are the service's (model_service/monitoring.py): the profile is
binned exactly as the service bins live traffic, and both sides compute PSI alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_service.monitoring import PSI_FLOOR, bin_index, inner_edges, scores

FEATURE_BINS = 10
"""Quantile bins per feature (fewer when a feature has fewer distinct values)."""
SCORE_EDGES = tuple(round(i / 10, 1) for i in range(11))
"""Equal-width bins of the score on [0, 1]: quantiles of a confident model's scores collapse at 0 and 1."""


def quantile_edges(values: NDArray[Any], bins: int = FEATURE_BINS) -> list[float]:
    """Edges of up to `bins` quantile bins; duplicates (discrete features) are merged."""
    quantiles = np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0.0, 1.0, bins + 1))
    edges = [float(v) for v in np.unique(quantiles)]
    return edges if len(edges) >= 2 else [edges[0], edges[0]]  # a constant feature: one bin


def bin_counts(edges: Sequence[float], values: NDArray[Any]) -> NDArray[np.int64]:
    """Values per bin (the service's bin convention)."""
    return np.bincount(bin_index(inner_edges(edges), values), minlength=len(edges) - 1).astype(np.int64)


def shares(counts: NDArray[Any]) -> NDArray[np.float64]:
    total = float(np.sum(counts))
    return np.asarray(counts, dtype=np.float64) / total if total else np.zeros(len(counts))


def binned_ks(expected: Sequence[float] | NDArray[Any], actual: Sequence[float] | NDArray[Any]) -> float:
    """Kolmogorov-Smirnov statistic evaluated at the bin edges (largest gap of the two binned CDFs)."""
    return float(np.max(np.abs(np.cumsum(expected) - np.cumsum(actual)))) if len(expected) else 0.0


# --- reading a card's reference (v2: categorical features, nullable numerics' missing bin) ----------


def is_categorical(profile: dict[str, Any]) -> bool:
    """A feature profile over categories (+ "other") rather than numeric edges; v1 profiles are numeric."""
    return profile.get("kind") == "categorical"


def has_missing_bin(profile: dict[str, Any]) -> bool:
    """A nullable numeric feature's profile: one bin past the value bins holds the missing values."""
    return not is_categorical(profile) and len(profile["frequencies"]) == len(profile["edges"])


def value_bins(profile: dict[str, Any]) -> int:
    """Bins of actual values: numeric edges' bins, or the categories (both without missing/other)."""
    return len(profile["categories"]) if is_categorical(profile) else len(profile["edges"]) - 1


def profile_counts(profile: dict[str, Any], values: Sequence[Any]) -> NDArray[np.int64]:
    """Values per bin of one feature's reference profile, one count per `frequencies` entry.

    Numeric: the service's bin convention, None/NaN in the missing bin (a profile without one must get
    no missing values: the caller checks). Categorical: bin i is `categories[i]`, the last bin ("other")
    counts unknown categories and missing values."""
    if is_categorical(profile):
        index = {category: i for i, category in enumerate(profile["categories"])}
        other = len(index)
        bins = [index.get(value, other) if isinstance(value, str) else other for value in values]
        return np.bincount(np.asarray(bins, dtype=np.intp), minlength=other + 1).astype(np.int64)
    numbers = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    missing = np.isnan(numbers)
    counts = bin_counts(profile["edges"], numbers[~missing])
    if has_missing_bin(profile):
        counts = np.append(counts, np.int64(missing.sum()))
    return counts


def chi_square(expected: Sequence[float], observed: NDArray[Any]) -> tuple[float, float]:
    """Pearson's chi-square of observed counts against the reference shares (floored like PSI, so a
    category unseen in training does not divide by zero): (statistic, p-value)."""
    from scipy.stats import chisquare  # noqa: PLC0415  (slow import, only here)

    floored = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    total = float(np.sum(observed))
    result = chisquare(np.asarray(observed, dtype=np.float64), floored / floored.sum() * total)
    return float(result.statistic), float(result.pvalue)


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
