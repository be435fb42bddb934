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

from pipeline.rollout.plan import Analysis, Threshold

REQUESTS = "model_service_requests"
LATENCY = "model_service_request_duration_seconds"
# Routes that are user traffic; probes and /metrics are not counted by the service anyway.
USER_ROUTE_PREFIXES = ("/v1/predict", "/v2/models/")


@dataclass(frozen=True)
class Scrape:
    """Cumulative counters of one version at one instant."""

    requests: int
    errors: int
    buckets: tuple[tuple[float, float], ...]
    """(upper bound in seconds, cumulative count) for user routes, +Inf last."""


@dataclass(frozen=True)
class Window:
    """What one version did between two scrapes."""

    requests: int
    errors: int
    p95_ms: float | None
    p99_ms: float | None

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def value(self, metric: str) -> float | None:
        return {"error_ratio": self.error_ratio, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms}[metric]

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_ratio": self.error_ratio,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
        }


EMPTY = Scrape(0, 0, ())


def parse_metrics(text: str) -> Scrape:
    requests = errors = 0
    buckets: dict[float, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            route = sample.labels.get("route", "")
            if not route.startswith(USER_ROUTE_PREFIXES):
                continue
            if sample.name == f"{REQUESTS}_total":
                requests += int(sample.value)
                if sample.labels.get("status", "").startswith("5"):
                    errors += int(sample.value)
            elif sample.name == f"{LATENCY}_bucket":
                buckets[float(sample.labels["le"])] += sample.value
    return Scrape(requests, errors, tuple(sorted(buckets.items())))


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
    )


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


def _check(threshold: Threshold, new: Window, stable: Window | None, label: str) -> list[str]:
    value = new.value(threshold.metric)
    name, unit = _NAMES[threshold.metric]
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


_NAMES = {"error_ratio": ("error ratio", ""), "p95_ms": ("p95", "ms"), "p99_ms": ("p99", "ms")}
