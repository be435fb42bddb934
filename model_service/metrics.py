"""Prometheus metrics, created per app on its own registry (no import-time registration).

With several workers the launcher sets PROMETHEUS_MULTIPROC_DIR; values then live in files there and
/metrics aggregates every worker. Label children are bound once, not looked up per request.
"""

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

# Fine enough for p95/p99 of a sub-millisecond service, wide enough for an overloaded one.
LATENCY_BUCKETS = (
    0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
PREFIX = "model_service_"


class Metrics:
    def __init__(self, name: str, version: str, sha256: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        registry = self.registry
        self._requests = Counter(
            f"{PREFIX}requests", "HTTP requests by route and status", ["route", "status"], registry=registry
        )
        self._latency = Histogram(
            f"{PREFIX}request_duration_seconds",
            "HTTP request latency by route and status",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            f"{PREFIX}inference_duration_seconds",
            "onnxruntime time per request",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rows = Histogram(
            f"{PREFIX}request_rows", "rows per prediction request", buckets=ROW_BUCKETS, registry=registry
        )
        self.in_flight = Gauge(
            f"{PREFIX}in_flight_requests",
            "requests being handled",
            registry=registry,
            multiprocess_mode="livesum",
        )
        info = Gauge(
            f"{PREFIX}model_info",
            "the model served (value 1)",
            ["name", "version", "sha256"],
            registry=registry,
            multiprocess_mode="max",
        )
        info.labels(name, version, sha256).set(1)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def bind(self, routes: list[str], statuses: list[int]) -> None:
        """Pre-bind the label children of the usual (route, status) pairs at start-up."""
        for route in routes:
            for status in statuses:
                self._child(route, status)

    def _child(self, route: str, status: int) -> tuple[Any, Any]:
        key = (route, status)
        child = self._children.get(key)
        if child is None:
            child = (self._requests.labels(route, str(status)), self._latency.labels(route, str(status)))
            self._children[key] = child
        return child

    def observe(self, route: str, status: int, seconds: float) -> None:
        count, latency = self._children.get((route, status)) or self._child(route, status)
        count.inc()
        latency.observe(seconds)

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    @staticmethod
    def mark_worker_gone() -> None:
        """Drop this worker's live gauges (in-flight) from the shared directory when it exits."""
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
