"""Prometheus metrics, created per app on its own registry (no import-time registration).

Requests are counted in plain Python and added to the Prometheus metrics by `flush()`, which runs on a
timer (`FLUSH_INTERVAL_S`): a prometheus_client update costs a lock and an mmap write per value in
multiprocess mode (about 2.5 µs each, ten per request), a plain counter a list index. The launcher sets
PROMETHEUS_MULTIPROC_DIR, whatever the number of workers: values live in files there, and the metrics
process (model_service/server/metrics_server.py) aggregates every worker's, each at most one flush interval
old.
"""

import gc
import os
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

from model_service.contract.monitoring import (
    IN_FLIGHT,
    INFERENCE_DURATION,
    MODEL_INFO,
    MODEL_INFO_LABELS,
    RATE_LIMITED,
    REQUEST_DURATION,
    REQUEST_DURATION_BOUNDS,
    REQUEST_ROWS,
    REQUESTS,
    ROUTE_LABEL,
    STATUS_LABEL,
    WORKER_GC_COLLECTIONS,
)

LATENCY_BUCKETS = REQUEST_DURATION_BOUNDS
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
FLUSH_INTERVAL_S = 0.5
"""Logs and metrics are written in bulk this often; the metrics port renders no more often either."""


class BufferedHistogram:
    """Observations of one Histogram (child) gathered as bucket counts; `flush` adds them in bulk.

    Bulk adding uses the child's `_buckets` and `_sum` values (prometheus_client has no public bulk
    observe); tests/unit/service/test_service_metrics.py checks the output equals per-call `observe`."""

    def __init__(self, histogram: Any, bounds: tuple[float, ...]) -> None:
        self._histogram = histogram
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus puts a value in the first bucket whose upper bound is >= the value.
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> int:
        """Add what was observed since the last flush; returns how many observations that was."""
        counts = self._counts
        total = sum(counts)
        if total:
            for bucket, count in zip(self._histogram._buckets, counts, strict=True):
                if count:
                    bucket.inc(count)
            self._histogram._sum.inc(self._sum)
            self._counts = [0] * len(counts)
            self._sum = 0.0
        return total


class Metrics:
    def __init__(self, name: str, version: str, sha256: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._requests = Counter(
            REQUESTS, "HTTP requests by route and status", [ROUTE_LABEL, STATUS_LABEL], registry=registry
        )
        self._latency = Histogram(
            REQUEST_DURATION,
            "HTTP request latency by route and status",
            [ROUTE_LABEL, STATUS_LABEL],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._inference = BufferedHistogram(
            Histogram(
                INFERENCE_DURATION,
                "onnxruntime time per request",
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            LATENCY_BUCKETS,
        )
        self._rows = BufferedHistogram(
            Histogram(REQUEST_ROWS, "rows per prediction request", buckets=ROW_BUCKETS, registry=registry),
            ROW_BUCKETS,
        )
        self._in_flight = Gauge(
            IN_FLIGHT,
            "requests being handled (sampled at each flush)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        gc_collections = Gauge(
            WORKER_GC_COLLECTIONS,
            "garbage collections of this worker so far, by generation (sampled at each flush)",
            ["generation"],
            registry=registry,
            multiprocess_mode="liveall",  # one series per live worker, labelled with its pid
        )
        self._gc_generations = [gc_collections.labels(str(generation)) for generation in range(3)]
        info = Gauge(
            MODEL_INFO,
            "the model served (value 1)",
            MODEL_INFO_LABELS,
            registry=registry,
            multiprocess_mode="max",
        )
        info.labels(name, version, sha256).set(1)
        self._by_route: dict[tuple[str, int], tuple[Any, BufferedHistogram]] = {}
        self._rate_limited = Counter(
            RATE_LIMITED,
            "requests refused by the per-client rate limit, by route",
            [ROUTE_LABEL],
            registry=registry,
        )
        self._rate_limited_counts: dict[str, int] = {}

    def bind(self, routes: Sequence[str], statuses: Sequence[int]) -> None:
        """Create the usual (route, status) series at start-up, so they read 0 before the first request
        (and each route's rate-limited count, 0 before the first 429)."""
        for route in routes:
            self._rate_limited.labels(route)
            for status in statuses:
                self._route(route, status)

    def _route(self, route: str, status: int) -> tuple[Any, BufferedHistogram]:
        label = str(status)
        entry = (
            self._requests.labels(route, label),
            BufferedHistogram(self._latency.labels(route, label), LATENCY_BUCKETS),
        )
        self._by_route[(route, status)] = entry
        return entry

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        entry = self._by_route.get((route, status)) or self._route(route, status)
        entry[1].observe(seconds)

    def count_rate_limited(self, route: str) -> None:
        self._rate_limited_counts[route] = self._rate_limited_counts.get(route, 0) + 1

    def observe_inference(self, seconds: float, rows: int) -> None:
        self._inference.observe(seconds)
        self._rows.observe(rows)

    def flush(self, in_flight: int) -> None:
        """Add the requests counted since the last flush to the Prometheus metrics; sample in-flight."""
        for count, latency in self._by_route.values():
            added = latency.flush()
            if added:
                count.inc(added)
        self._inference.flush()
        self._rows.flush()
        self._in_flight.set(in_flight)
        for generation, stats in zip(self._gc_generations, gc.get_stats(), strict=False):
            generation.set(stats["collections"])
        if self._rate_limited_counts:
            for route, count in self._rate_limited_counts.items():
                self._rate_limited.labels(route).inc(count)
            self._rate_limited_counts = {}

    @staticmethod
    def mark_worker_gone() -> None:
        """Drop this worker's live gauges (in-flight) from the shared directory when it exits."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
