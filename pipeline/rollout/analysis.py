"""Per-version measurements from each service's own /metrics, over a window, like Prometheus would.

A window is the difference of two scrapes: requests by status and latency-histogram buckets, from
which error ratio and p95/p99 are computed the way `histogram_quantile` does (linear within a bucket).

The judge compares like a statistician (docs/rollout.md, "How a window is judged"): a comparison with
stable needs enough samples on both sides, a latency regression must be relatively *and* absolutely
large *and* significant by a rank test on the two histograms (as Kayenta's Mann-Whitney judge), an
error-ratio regression significant by Fisher's exact test (two proportions). A window is passed, failed
or inconclusive.

Over 400 lines on purpose: the measurement and the judge share the window and are read beside
docs/rollout.md, one statistical test after the other.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from prometheus_client.parser import text_string_to_metric_families

from model_service.contract.monitoring import (
    BIN_LABEL,
    CLASS_LABEL,
    PREDICTED_CLASS_TOTAL,
    PREDICTION_ROUTES,
    REQUEST_DURATION_BUCKET,
    REQUESTS_TOTAL,
    ROUTE_LABEL,
    SCORE_BIN_TOTAL,
    STATUS_LABEL,
    psi,
)
from pipeline.config import PREDICTION_SHIFT_METRICS
from pipeline.rollout.plan import Analysis, Analyze, Plan, Threshold
from pipeline.stage import Check


@dataclass(frozen=True)
class Scrape:
    """Cumulative counters of one version at one instant."""

    requests: int
    errors: int
    buckets: tuple[tuple[float, float], ...]
    """(upper bound in seconds, cumulative count) for user routes, +Inf last."""
    score_bins: tuple[tuple[str, float], ...] = ()
    """(bin, cumulative count) of predicted scores in the card's reference bins; empty without a reference."""
    classes: tuple[tuple[str, float], ...] = ()
    """(class, cumulative count) of predictions."""


@dataclass(frozen=True)
class Window:
    """What one version did between two scrapes."""

    requests: int
    errors: int
    p95_ms: float | None
    p99_ms: float | None
    score_bins: tuple[tuple[str, float], ...] = ()
    classes: tuple[tuple[str, float], ...] = ()
    latency_counts: tuple[tuple[float, float], ...] = ()
    """(upper bound in seconds, requests in that bucket alone) over the window, +Inf last: the distribution
    the rank test compares."""

    def predictions(self, metric: str) -> float:
        """Rows predicted in the window as the prediction-shift `metric` counts them (its sample size)."""
        counts: tuple[tuple[str, float], ...] = getattr(self, _SHIFT_SIDE[metric])
        return sum(count for _, count in counts)

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def value(self, metric: str) -> float | None:
        return {"error_ratio": self.error_ratio, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms}[metric]

    def as_dict(self) -> dict[str, float | int | dict[str, float] | None]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_ratio": self.error_ratio,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "score_bins": dict(self.score_bins),
            "classes": dict(self.classes),
            "latency_buckets": {f"{upper:g}": count for upper, count in self.latency_counts},
        }


EMPTY = Scrape(0, 0, ())


def parse_metrics(text: str) -> Scrape:
    requests = errors = 0
    buckets: dict[float, float] = defaultdict(float)
    score_bins: dict[str, float] = defaultdict(float)
    classes: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == SCORE_BIN_TOTAL:
                score_bins[sample.labels[BIN_LABEL]] += sample.value
                continue
            if sample.name == PREDICTED_CLASS_TOTAL:
                classes[sample.labels[CLASS_LABEL]] += sample.value
                continue
            route = sample.labels.get(ROUTE_LABEL, "")
            if route not in PREDICTION_ROUTES:
                continue
            if sample.name == REQUESTS_TOTAL:
                requests += int(sample.value)
                if sample.labels.get(STATUS_LABEL, "").startswith("5"):
                    errors += int(sample.value)
            elif sample.name == REQUEST_DURATION_BUCKET:
                buckets[float(sample.labels["le"])] += sample.value
    return Scrape(
        requests,
        errors,
        tuple(sorted(buckets.items())),
        tuple(sorted(score_bins.items(), key=lambda item: int(item[0]))),
        tuple(sorted(classes.items())),
    )


def scrape(metrics_url: str) -> Scrape | None:
    """The version's counters now (from its metrics port), or None when it does not answer (a dead
    version has no data)."""
    try:
        with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=3) as response:
            return parse_metrics(response.read().decode())
    except (urllib.error.URLError, OSError):
        return None


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """`histogram_quantile(q, ...)` over cumulative (upper bound, count) pairs, in seconds."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower_bound  # Prometheus reports the highest finite bound
            span = count - lower_count
            return lower_bound + (upper - lower_bound) * ((rank - lower_count) / span if span else 1.0)
        lower_bound, lower_count = upper, count
    return None


def window(before: Scrape, after: Scrape) -> Window:
    earlier = dict(before.buckets)
    deltas = [(upper, count - earlier.get(upper, 0.0)) for upper, count in after.buckets]
    p95, p99 = quantile(0.95, deltas), quantile(0.99, deltas)
    return Window(
        requests=after.requests - before.requests,
        errors=after.errors - before.errors,
        p95_ms=None if p95 is None else p95 * 1000,
        p99_ms=None if p99 is None else p99 * 1000,
        score_bins=_delta(before.score_bins, after.score_bins),
        classes=_delta(before.classes, after.classes),
        latency_counts=tuple(
            (upper, count - below)
            for (upper, count), below in zip(deltas, [0.0] + [count for _, count in deltas], strict=False)
        ),
    )


def _delta(
    before: tuple[tuple[str, float], ...], after: tuple[tuple[str, float], ...]
) -> tuple[tuple[str, float], ...]:
    earlier = dict(before)
    return tuple((key, count - earlier.get(key, 0.0)) for key, count in after)


SCORE_SMOOTHING = 0.5
"""Counts added to every score bin before comparing two versions (the AnalysisTemplate does the same):
with a few hundred rows a window, an empty bin on one side must not dominate the PSI."""


def _shares(
    counts: tuple[tuple[str, float], ...], keys: list[str], smoothing: float = 0.0
) -> list[float] | None:
    values = dict(counts)
    total = sum(values.values())
    if total <= 0:
        return None
    return [(values.get(key, 0.0) + smoothing) / (total + smoothing * len(keys)) for key in keys]


_SHIFT_SIDE = {"score_psi": "score_bins", "positive_rate_delta": "classes"}
"""The counters each prediction-shift metric compares: score bins, or predicted classes."""
CLASS_METRICS = frozenset({"positive_rate_delta"})
"""Analysis metrics over predicted classes: a regression model predicts none."""


def for_task(rollout_plan: Plan, task: str | None) -> Plan:
    """The plan without the class metrics when the model is a regression (its score PSI stays: the
    predicted values in its reference's bins); unchanged for classifiers and an unknown task."""
    if task != "regression":
        return rollout_plan
    kept = tuple(t for t in rollout_plan.analysis.thresholds if t.metric not in CLASS_METRICS)
    analysis = replace(rollout_plan.analysis, thresholds=kept)
    actions = tuple(
        replace(action, analysis=analysis) if isinstance(action, Analyze) else action
        for action in rollout_plan.actions
    )
    return replace(rollout_plan, analysis=analysis, actions=actions)


def prediction_shift(metric: str, new: Window, stable: Window) -> float | None:
    """score_psi or positive_rate_delta of `new` against `stable` on the same window; None without data."""
    side = _SHIFT_SIDE[metric]
    new_counts, stable_counts = getattr(new, side), getattr(stable, side)
    keys = sorted({key for key, _ in (*new_counts, *stable_counts)})
    smoothing = SCORE_SMOOTHING if metric == "score_psi" else 0.0
    new_shares, stable_shares = _shares(new_counts, keys, smoothing), _shares(stable_counts, keys, smoothing)
    if new_shares is None or stable_shares is None:
        return None
    if metric == "score_psi":
        return psi(stable_shares, new_shares)
    return max(abs(a - b) for a, b in zip(new_shares, stable_shares, strict=True))


@dataclass(frozen=True)
class RankTest:
    """A one-sided Mann-Whitney U test: does the new version's latency tend to be larger than stable's?"""

    u: float
    """U of the new side: pairs (new, stable) where new is larger, ties counting half."""
    z: float
    """Normal approximation of U, tie- and continuity-corrected."""
    p_value: float
    """One-sided: the chance of a U this large if both sides had the same distribution."""
    superiority: float
    """U / (n_new * n_stable): P(a new request is slower than a stable one), 0.5 when alike."""


def mann_whitney(
    new: Sequence[tuple[float, float]], stable: Sequence[tuple[float, float]]
) -> RankTest | None:
    """Mann-Whitney U on two latency histograms: (upper bound, count in that bucket alone) pairs.

    Requests in one bucket are ties (the variance is tie-corrected): the test sees their order only to the
    buckets' resolution, which costs it power, not validity. None when a side is empty."""
    new_counts, stable_counts = dict(new), dict(stable)
    n_new, n_stable = sum(new_counts.values()), sum(stable_counts.values())
    if n_new <= 0 or n_stable <= 0:
        return None
    u = below = ties = 0.0
    for bound in sorted(new_counts.keys() | stable_counts.keys()):
        new_count, stable_count = new_counts.get(bound, 0.0), stable_counts.get(bound, 0.0)
        u += new_count * (below + stable_count / 2)
        below += stable_count
        tied = new_count + stable_count
        ties += tied**3 - tied
    total = n_new + n_stable
    variance = n_new * n_stable / 12 * ((total + 1) - ties / (total * (total - 1)))
    z = (u - n_new * n_stable / 2 - 0.5) / math.sqrt(variance) if variance > 0 else 0.0
    return RankTest(u, z, _upper_tail(z), u / (n_new * n_stable))


def fisher_exact(errors_new: int, n_new: int, errors_stable: int, n_stable: int) -> float:
    """One-sided p-value of Fisher's exact test that the new version's error ratio is the larger: the
    chance that at least `errors_new` of all the window's errors land on the new side by luck alone.

    Exact rather than the pooled z-test, which calls 1 error in 20 requests against 0 in 400
    significant (z 4.5) when luck puts that one error on the new side 1 time in 21."""
    errors, total = errors_new + errors_stable, n_new + n_stable
    if errors == 0:
        return 1.0

    def log_choose(n: int, k: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)

    whole = log_choose(total, n_new)
    return min(
        1.0,
        sum(
            math.exp(log_choose(errors, k) + log_choose(total - errors, n_new - k) - whole)
            for k in range(errors_new, min(errors, n_new) + 1)
            if n_new - k <= total - errors
        ),
    )


def _upper_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


Result = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Verdict:
    result: Result
    checks: list[Check] = field(default_factory=list)
    """Every bound applied to the window, each with its numbers (a comparison with stable: in its note)."""

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    @property
    def reasons(self) -> list[str]:
        """The lines behind the result: failed checks when failed, inconclusive ones when inconclusive."""
        return [
            check.line() for check in self.checks if check.result == self.result and self.result != "pass"
        ]


def judge(analysis: Analysis, new: Window, stable: Window | None, label: str = "canary") -> Verdict:
    """Check one window of the new version against every threshold: any failed check fails the window,
    else any inconclusive one makes it inconclusive. Missing data on the new side fails."""
    if new.requests < analysis.min_requests:  # nothing else can be judged
        check = Check.bounded(label, "requests", new.requests, ">=", analysis.min_requests, note="no data")
        return Verdict("fail", [check])
    checks = [
        check
        for threshold in analysis.thresholds
        for check in _check(analysis, threshold, new, stable, label)
    ]
    results = {check.result for check in checks}
    result: Result = "fail" if "fail" in results else "inconclusive" if "inconclusive" in results else "pass"
    return Verdict(result, checks)


def _unjudged(label: str, name: str, why: str) -> Check:
    """A comparison with stable that could not be made: inconclusive, and why."""
    return Check(scope=label, metric=f"{name} vs stable", value=None, result="inconclusive", note=why)


def _stable_too_small(analysis: Analysis, stable: Window | None, name: str, label: str) -> Check | None:
    if stable is None:
        return _unjudged(label, name, "the stable version did not answer /metrics")
    if stable.requests < analysis.min_requests:
        return _unjudged(
            label, name, f"stable served {stable.requests} requests < min {analysis.min_requests}"
        )
    return None


def _check_shift(
    analysis: Analysis, threshold: Threshold, new: Window, stable: Window | None, label: str
) -> list[Check]:
    name = threshold.metric
    if stable is None:
        return [_unjudged(label, name, "the stable version did not answer /metrics")]
    side = _SHIFT_SIDE[name]
    if not getattr(new, side) or not getattr(stable, side):
        # A version whose card predates drift monitoring exports no prediction counters (docs/drift.md):
        # the comparison cannot be made, and the rehearsal says so before it starts.
        return []
    rows_new, rows_stable = new.predictions(name), stable.predictions(name)
    sizes = f"n {rows_new:.0f} vs {rows_stable:.0f} rows"
    if min(rows_new, rows_stable) < analysis.min_predictions:
        return [_unjudged(label, name, f"too few rows ({sizes}) < min {analysis.min_predictions}")]
    shift = prediction_shift(threshold.metric, new, stable)
    if shift is None:
        return [_unjudged(label, name, "no predictions counted on one side")]
    assert threshold.max is not None  # the config refuses a shift metric without `max`
    return [Check.bounded(label, f"{name} vs stable", shift, "<=", threshold.max, digits=3, note=sizes)]


def _check(
    analysis: Analysis, threshold: Threshold, new: Window, stable: Window | None, label: str
) -> list[Check]:
    if threshold.metric in PREDICTION_SHIFT_METRICS:
        return _check_shift(analysis, threshold, new, stable, label)
    name, unit = _NAMES[threshold.metric]
    value = new.value(threshold.metric)
    if value is None:
        return [Check(scope=label, metric=name, value=None, result="fail")]
    checks = []
    if threshold.max is not None:
        checks.append(Check.bounded(label, name, value, "<=", threshold.max, unit=unit, digits=3))
    if threshold.max_vs_stable is not None:
        too_small = _stable_too_small(analysis, stable, name, label)
        if too_small is not None:
            checks.append(too_small)
        elif threshold.metric == "error_ratio":
            assert stable is not None
            checks.append(_errors_vs_stable(analysis, threshold.max_vs_stable, new, stable, label))
        else:
            assert stable is not None
            checks.append(_latency_vs_stable(analysis, threshold, new, stable, label))
    return checks


def _latency_vs_stable(
    analysis: Analysis, threshold: Threshold, new: Window, stable: Window, label: str
) -> Check:
    """Slower only when the ratio exceeds `max_vs_stable`, the difference reaches `min_effect_ms`, and the
    rank test says the new latencies tend to be larger; ratio and effect without significance is
    inconclusive (another window decides)."""
    name, _ = _NAMES[threshold.metric]
    value, baseline = new.value(threshold.metric), stable.value(threshold.metric)
    assert value is not None and threshold.max_vs_stable is not None
    if baseline is None:
        return _unjudged(label, name, f"stable {name} unknown")
    ratio = value / baseline if baseline > 0 else math.inf
    effect = value - baseline
    test = mann_whitney(new.latency_counts, stable.latency_counts)
    rank = (
        "rank test -"
        if test is None
        else f"Mann-Whitney z {test.z:.2f} p {test.p_value:.2g} P(slower) {test.superiority:.2f}"
    )
    numbers = (
        f"{value:.3g}ms vs {baseline:.3g}ms, {effect:+.3g}ms (min effect {threshold.min_effect_ms:g}ms), "
        f"{rank}, n {new.requests} vs {stable.requests}"
    )
    if ratio <= threshold.max_vs_stable or effect < threshold.min_effect_ms:
        result: Result = "pass"
    elif test is not None and test.p_value < analysis.significance_level:
        result, numbers = "fail", f"{numbers} < significance {analysis.significance_level:g}"
    else:
        result = "inconclusive"
        numbers = f"{numbers} >= significance {analysis.significance_level:g}: not significant"
    return _vs_stable(label, name, ratio, threshold.max_vs_stable, result=result, numbers=numbers)


def _vs_stable(label: str, name: str, ratio: float, bound: float, *, result: Result, numbers: str) -> Check:
    """A ratio to stable against its bound; the result also weighs an effect floor or a significance test."""
    return Check(
        scope=label,
        metric=f"{name} vs stable",
        value=ratio,
        comparator="<=",
        bound=bound,
        result=result,
        unit="x",
        digits=3,
        note=numbers,
    )


def _errors_vs_stable(
    analysis: Analysis, max_vs_stable: float, new: Window, stable: Window, label: str
) -> Check:
    """Worse only when the ratio to stable's error ratio exceeds the bound and Fisher's exact test is
    significant; an exceeded ratio without significance is inconclusive."""
    new_ratio, stable_ratio = new.errors / new.requests, stable.errors / stable.requests
    p_value = fisher_exact(new.errors, new.requests, stable.errors, stable.requests)
    ratio = 0.0 if new_ratio == 0 else new_ratio / stable_ratio if stable_ratio > 0 else math.inf
    numbers = f"{new_ratio:.3g} vs {stable_ratio:.3g}, Fisher exact p {p_value:.2g}, n {new.requests} vs {stable.requests}"
    if ratio <= max_vs_stable:
        result: Result = "pass"
    elif p_value < analysis.significance_level:
        result, numbers = "fail", f"{numbers} < significance {analysis.significance_level:g}"
    else:
        result = "inconclusive"
        numbers = f"{numbers} >= significance {analysis.significance_level:g}: not significant"
    return _vs_stable(label, "error ratio", ratio, max_vs_stable, result=result, numbers=numbers)


_NAMES = {
    "error_ratio": ("error ratio", ""),
    "p95_ms": ("p95", "ms"),
    "p99_ms": ("p99", "ms"),
    "score_psi": ("score_psi", ""),
    "positive_rate_delta": ("positive_rate_delta", ""),
}
