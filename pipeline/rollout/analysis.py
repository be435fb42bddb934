"""Per-version measurements from each service's own /metrics, over a window, like Prometheus would.

A window is the difference of two scrapes: requests by status and latency-histogram buckets, from
which error ratio and p95/p99 are computed the way `histogram_quantile` does (linear within a bucket).
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from model_service.monitoring import (
    BIN_LABEL,
    CLASS_LABEL,
    PREDICT_ROUTE,
    PREDICTED_CLASS_TOTAL,
    REQUEST_DURATION_BUCKET,
    REQUESTS_TOTAL,
    ROUTE_LABEL,
    SCORE_BIN_TOTAL,
    STATUS_LABEL,
    psi,
)
from pipeline.config import PREDICTION_SHIFT_METRICS
from pipeline.rollout.plan import Analysis, Threshold

# Routes that are user traffic; probes and /metrics are not counted by the service anyway.
USER_ROUTE_PREFIXES = (PREDICT_ROUTE, "/v2/models/")


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
            if not route.startswith(USER_ROUTE_PREFIXES):
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


def scrape(url: str, headers: dict[str, str] | None = None) -> Scrape | None:
    """The version's counters now, or None when it does not answer (a dead version has no data)."""
    request = urllib.request.Request(f"{url}/metrics", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
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


def prediction_shift(metric: str, new: Window, stable: Window) -> float | None:
    """score_psi or positive_rate_delta of `new` against `stable` on the same window; None without data."""
    side = "score_bins" if metric == "score_psi" else "classes"
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
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    """Why the window failed, each with value, comparator and bound."""


def judge(analysis: Analysis, new: Window, stable: Window | None, label: str = "canary") -> Verdict:
    """Check one window of the new version against every threshold; missing data fails."""
    if new.requests < analysis.min_requests:
        return Verdict(
            False, [f"no data: {label} served {new.requests} requests < min {analysis.min_requests}"]
        )
    reasons = [
        reason for threshold in analysis.thresholds for reason in _check(threshold, new, stable, label)
    ]
    return Verdict(not reasons, reasons)


def _check_shift(threshold: Threshold, new: Window, stable: Window | None, label: str) -> list[str]:
    name = threshold.metric
    if stable is None:
        return [f"no data: {name} of the {label} vs stable unknown (the stable version did not answer)"]
    if not new.classes or not stable.classes:
        # A version whose card predates drift monitoring exports no prediction counters (docs/drift.md):
        # the comparison cannot be made, and the rehearsal says so before it starts (rehearsal.py).
        return []
    shift = prediction_shift(threshold.metric, new, stable)
    if shift is None:
        return [f"no data: {name} of the {label} vs stable unknown (no predictions counted on one side)"]
    if threshold.max is not None and shift > threshold.max:
        return [f"prediction shift: {label} {name} vs stable {shift:.3g} > max {threshold.max:g}"]
    return []


def _check(threshold: Threshold, new: Window, stable: Window | None, label: str) -> list[str]:
    if threshold.metric in PREDICTION_SHIFT_METRICS:
        return _check_shift(threshold, new, stable, label)
    name, unit = _NAMES[threshold.metric]
    value = new.value(threshold.metric)
    if value is None:
        return [f"no data: {label} {name} unknown"]
    reasons = []
    if threshold.max is not None and value > threshold.max:
        reasons.append(f"{label} {name} {value:.3g}{unit} > max {threshold.max:g}{unit}")
    if threshold.max_vs_stable is not None:
        baseline = stable.value(threshold.metric) if stable is not None else None
        if baseline is None:
            reasons.append(f"no data: stable {name} unknown, cannot compare")
        elif baseline > 0 and value / baseline > threshold.max_vs_stable:
            reasons.append(
                f"{label} {name} {value:.3g}{unit} is {value / baseline:.2f}x stable {baseline:.3g}{unit} "
                f"> max {threshold.max_vs_stable:g}x"
            )
    return reasons


_NAMES = {
    "error_ratio": ("error ratio", ""),
    "p95_ms": ("p95", "ms"),
    "p99_ms": ("p99", "ms"),
    "score_psi": ("score_psi", ""),
    "positive_rate_delta": ("positive_rate_delta", ""),
}
