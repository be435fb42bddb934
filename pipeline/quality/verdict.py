"""One model version's live quality: its metrics on the labelled served rows (the gate's metric code), the
CBPE estimate from every served row, and the verdict of the environment's gate rows.

The rows of `gates.metrics` judge the live metrics as they judge a candidate: absolute `min`/`max`, and
`vs_champion` against the version's own offline evaluation (the gate's figures for it, else its card's):
a version that serves worse than it was measured before release fails. Below `quality.min_labelled_rows`
labelled rows there is no verdict (inconclusive). An estimate never fails a version: past a bound it warns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from model_service.contract.card import ModelCard
from pipeline.config import Config
from pipeline.ml.scoring import evaluate, evaluate_values
from pipeline.quality.estimate import Estimate, estimate
from pipeline.quality.join import Scored
from pipeline.release.gating import checks_for
from pipeline.stage import Check, CheckResult

Verdict = Literal["pass", "warn", "fail", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("pass", "warn", "fail", "inconclusive")
"""Every verdict a version can get: the verdict gauge has one series per verdict (1 for the current)."""


@dataclass(frozen=True)
class Judged:
    """What `pipeline evaluate` concluded about one version."""

    model: str
    version: str
    rows: int
    labelled: int
    unusable: int
    live: dict[str, float]
    """The gate's metrics on the labelled rows; empty below the minimum or when a class is missing."""
    estimate: Estimate | None
    offline: dict[str, float] | None
    offline_source: str
    checks: list[Check] = field(default_factory=list)
    verdict: Verdict = "inconclusive"


def live_metrics(scored: Scored, card: ModelCard) -> tuple[dict[str, float], str]:
    """The task's metrics (pipeline/ml/scoring.py, the gate's code) on the labelled rows, and why there
    are none when they cannot be computed (a binary ROC AUC needs both classes among the labels)."""
    if not scored.labelled.any():
        return {}, "no labelled rows"
    if scored.values is not None:
        return evaluate_values(scored.values[scored.labelled], scored.truth.astype(np.float64)), ""
    assert scored.probabilities is not None
    if len(card.classes) == 2 and len(set(scored.truth.tolist())) < 2:
        return {}, f"every label is {scored.truth[0]!r}: ROC AUC needs both classes"
    probabilities = scored.probabilities[scored.labelled]
    return evaluate(probabilities, scored.truth, card.classes), ""


def estimate_checks(config: Config, scope: str, found: Estimate) -> list[Check]:
    """The estimate against the gate rows' absolute bounds: `warn` past one, never `fail`."""
    checks = []
    for metric, value in found.metrics.items():
        bounds = config.gates.metrics.get(metric)  # type: ignore[call-overload]  # a str key of a Literal dict
        if bounds is None:
            continue
        for comparator, bound in ((">=", bounds.min), ("<=", bounds.max)):
            if bound is None:
                continue
            broken = Check.bounded(f"{scope} {metric}", "estimate", value, comparator, bound)  # type: ignore[arg-type]
            result: CheckResult = "warn" if broken.failed else "pass"
            checks.append(
                Check(
                    scope=broken.scope,
                    metric="estimate",
                    value=value,
                    comparator=broken.comparator,
                    bound=bound,
                    result=result,
                    note=found.basis,
                )
            )
    return checks


def judge(
    config: Config,
    card: ModelCard,
    scored: Scored,
    *,
    model: str,
    version: str,
    offline: Mapping[str, float] | None,
    offline_source: str,
) -> Judged:
    """The verdict of one version: its live metrics against the gate rows when enough rows are labelled,
    else inconclusive; the estimate beside them (classifiers)."""
    rows = len(scored.labelled)
    labelled = int(scored.labelled.sum())
    found = None if scored.probabilities is None or not rows else estimate(scored.probabilities, card.classes)
    minimum = config.quality.min_labelled_rows
    checks: list[Check] = []
    live: dict[str, float] = {}
    why = ""
    if labelled >= minimum:
        live, why = live_metrics(scored, card)
    counted = Check.bounded(version, "labelled rows", labelled, ">=", minimum, note=f"of {rows} served rows")
    if live:
        checks.append(counted)
        reference = dict(offline) if offline is not None else {}  # none found: each regression check fails
        checks += checks_for(config, live, reference, against="offline", scope=version)
    else:
        note = why or f"of {rows} served rows: too few labels to judge (quality.min_labelled_rows)"
        checks.append(
            Check(
                scope=version,
                metric="labelled rows",
                value=labelled,
                comparator=">=",
                bound=minimum,
                result="inconclusive",
                note=note,
            )
        )
    if found is not None:
        checks += estimate_checks(config, version, found)
    return Judged(
        model=model,
        version=version,
        rows=rows,
        labelled=labelled,
        unusable=scored.unusable,
        live=live,
        estimate=found,
        offline=None if offline is None else dict(offline),
        offline_source=offline_source,
        checks=checks,
        verdict=verdict_of(checks, warn_only=config.gates.mode == "warn"),
    )


def verdict_of(checks: list[Check], *, warn_only: bool) -> Verdict:
    """fail (warn under gates.mode warn) when a check failed, else warn when one warned, else inconclusive
    when there were too few labels, else pass."""
    if any(check.failed for check in checks):
        return "warn" if warn_only else "fail"
    if any(check.result == "warn" for check in checks):
        return "warn"
    if any(check.result == "inconclusive" for check in checks):
        return "inconclusive"
    return "pass"
