"""The reference profile of a model card (what export writes as its `reference`) and the binned statistics
that compare a sample with it (numpy only).

Profile v2 (docs/model-card.md): numeric features get quantile bins (one more bin for missing values when
nullable), string features one bin per training category plus "other" (unknown or missing); the score is
the positive-class probability (binary), the top probability (multiclass) or the predicted value
(regression, quantile bins). The bin convention, the score and PSI are the service's
(model_service/contract/monitoring.py): the profile is binned exactly as the service bins live traffic,
and both sides compute PSI alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_service.contract.card import Feature, FeatureProfile
from model_service.contract.monitoring import PSI_FLOOR, bin_index, category_index, inner_edges, scores

FEATURE_BINS = 10
"""Quantile bins per feature (fewer when a feature has fewer distinct values)."""
BOOL_EDGES = (0.0, 0.5, 1.0)
"""A boolean feature's two bins, false and true (quantiles of 0/1 values merge into one bin)."""
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


# --- counting a sample in a card's reference bins ------------------------------------------------


def profile_counts(profile: FeatureProfile, values: Sequence[Any]) -> NDArray[np.int64]:
    """Values per bin of one feature's reference profile, one count per `frequencies` entry.

    Numeric: the service's bin convention, None/NaN in the missing bin (a profile without one must get
    no missing values: the caller checks). Categorical: bin i is `categories[i]`, the last bin ("other")
    counts unknown categories and missing values."""
    if profile.categorical:
        index = {category: i for i, category in enumerate(profile.categories)}
        other = len(index)
        bins = [index.get(value, other) if isinstance(value, str) else other for value in values]
        return np.bincount(np.asarray(bins, dtype=np.intp), minlength=other + 1).astype(np.int64)
    numbers = np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    missing = np.isnan(numbers)
    counts = bin_counts(profile.edges, numbers[~missing])
    if profile.has_missing_bin:
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
    """The profile of a numeric-only classifier from its float matrix (every feature float, non-null)."""
    import pandas as pd  # noqa: PLC0415

    columns = [Feature(name, "float") for name in features]
    frame = pd.DataFrame(np.asarray(train_rows, dtype=np.float64), columns=list(features))
    return card_reference(
        columns,
        frame,
        eval_rows=len(eval_probabilities),
        eval_probabilities=eval_probabilities,
        eval_values=None,
        classes=classes,
    )


def card_reference(
    columns: Sequence[Feature],
    train: Any,
    *,
    eval_rows: int,
    eval_probabilities: NDArray[Any] | None,
    eval_values: NDArray[Any] | None,
    classes: Sequence[Any] | None,
) -> dict[str, Any]:
    """The card's `reference` (profile v2): feature bins from the training frame; the score (and the
    predicted classes) from the model's outputs on the evaluation rows."""
    profile: dict[str, Any] = {
        "rows": {"train": len(train), "eval": eval_rows},
        "features": [_feature_profile(column, train[column.name]) for column in columns],
    }
    if eval_probabilities is not None and classes is not None:
        score_counts = bin_counts(SCORE_EDGES, scores(eval_probabilities))
        profile["score"] = {"edges": list(SCORE_EDGES), "frequencies": shares(score_counts).tolist()}
        predicted = np.bincount(np.argmax(eval_probabilities, axis=1), minlength=len(classes))
        profile["classes"] = {str(c): float(s) for c, s in zip(classes, shares(predicted), strict=True)}
    elif eval_values is not None:
        edges = quantile_edges(eval_values)
        profile["score"] = {"edges": edges, "frequencies": shares(bin_counts(edges, eval_values)).tolist()}
    return profile


def _feature_profile(column: Feature, values: Any) -> dict[str, Any]:
    if column.type == "string":
        categories = column.categories or ()
        index = category_index(categories, values.to_numpy(dtype=object))
        counts = np.bincount(index, minlength=len(categories) + 1)
        return {
            "name": column.name,
            "kind": "categorical",
            "categories": list(categories),
            "frequencies": shares(counts).tolist(),
        }
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    present = numbers[~np.isnan(numbers)]
    if column.type == "bool":
        edges = list(BOOL_EDGES)
    else:
        edges = quantile_edges(present) if len(present) else [0.0, 0.0]
    counts = bin_counts(edges, present)
    if column.nullable:  # one more bin, after the value bins, for the missing values
        counts = np.append(counts, len(numbers) - len(present))
    return {"name": column.name, "kind": "numeric", "edges": edges, "frequencies": shares(counts).tolist()}
