"""How a sample of inputs is compared with a card's reference profile: the drift stage's checks, which the
batch stage applies to the table it scores (one comparison, one set of bounds: the environment's `drift:`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model_service.contract.card import ModelCard, Reference
from model_service.contract.monitoring import psi
from pipeline.config import Config, DriftLevels
from pipeline.errors import StageError
from pipeline.ml.profile import binned_ks, chi_square, shares
from pipeline.stage import Check, CheckResult

Row = list[Any]
"""One row of JSON values (numbers, strings, true/false, None for missing) in the card's feature order."""
SCORE = "(score)"
"""Name of the predicted-score row in the table."""


@dataclass(frozen=True)
class Sample:
    """What is compared: counts per reference bin (card order), plus the rows when they are known (files)."""

    source: str
    rows: int
    feature_counts: Sequence[NDArray[np.int64] | None]
    """Per feature in card order; None for a feature the service does not export (sensitive: drop)."""
    score_counts: NDArray[np.int64] | None
    raw: list[Row] | None = None


def reference_of(card: ModelCard) -> Reference:
    """The card's reference profile (one per feature, in the card's feature order), or a StageError."""
    if card.reference is None:
        raise StageError(
            f"the card of version {card.version} has no reference profile (exported before drift "
            "monitoring); re-export it with `python -m pipeline export --fresh`"
        )
    return card.reference


def compare(
    config: Config, card: ModelCard, sample: Sample, train_columns: dict[str, NDArray[np.float64]] | None
) -> list[Check]:
    """Checks per feature and for the score, each with its bounds; the metric is `psi`; `ks` (scipy's
    two-sample test against the training rows) or `ks_binned` (at the bin edges) for numeric features;
    `chi2` (Pearson's, against the reference shares) for categorical ones, reported beside PSI and not
    gated (`info`, its p-value and degrees of freedom in the note). `train_columns`: the training values
    of numeric features (missing dropped)."""
    from scipy.stats import ks_2samp  # noqa: PLC0415

    drift = config.drift
    checks = []
    reference = reference_of(card)
    for j, (profile, counts) in enumerate(zip(reference.features, sample.feature_counts, strict=True)):
        name = profile.name
        if counts is None:  # not exported by the service (drift.log_inputs.sensitive: drop)
            continue
        observed = shares(counts)
        checks.append(_check(name, "psi", psi(profile.frequencies, observed), drift.bounds(name, "psi")))
        if profile.categorical:
            statistic, p_value = chi_square(profile.frequencies, counts)
            dof = len(counts) - 1
            detail = f"p {p_value:.3g}, dof {dof}"
            checks.append(
                Check(scope=name, metric="chi2", value=statistic, result="info", digits=3, note=detail)
            )
            continue
        if sample.raw is not None and train_columns is not None and name in train_columns:
            values = np.asarray([row[j] for row in sample.raw if row[j] is not None], dtype=np.float64)
            ks = float(ks_2samp(train_columns[name], values).statistic) if len(values) else 1.0
            checks.append(_check(name, "ks", ks, drift.bounds(name, "ks")))
        else:
            # KS compares value distributions: the missing bin is PSI's to judge.
            bins = profile.value_bins
            ks = binned_ks(shares(np.asarray(profile.frequencies[:bins])), shares(counts[:bins]))
            checks.append(_check(name, "ks_binned", ks, drift.bounds(name, "ks")))
    if sample.score_counts is not None and sample.score_counts.sum() > 0:
        score_psi = psi(reference.score.frequencies, shares(sample.score_counts))
        checks.append(_check(SCORE, "psi", score_psi, drift.score_psi))
    return checks


def _check(feature: str, statistic: str, value: float, levels: DriftLevels) -> Check:
    """Fails above `fail`; at or above `warn` (within the bound) a warning."""
    result: CheckResult = "fail" if value > levels.fail else "warn" if value >= levels.warn else "pass"
    return Check(
        scope=feature,
        metric=statistic,
        value=value,
        comparator="<=",
        bound=levels.fail,
        result=result,
        digits=3,
        note=f"warn at {levels.warn:g}",
    )
