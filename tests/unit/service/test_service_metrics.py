"""Requests are counted in plain Python and added to Prometheus in bulk: the output must not differ."""

import math
import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from starlette.testclient import TestClient

from model_service.operations.metrics import FLUSH_INTERVAL_S, LATENCY_BUCKETS, BufferedHistogram
from model_service.server.metrics_server import RENDER_INTERVAL_S


def _exposition(registry: CollectorRegistry) -> dict[str, str]:
    """Sample line → value; `_created` (each series' creation time) differs between registries by design."""
    lines = generate_latest(registry).decode().splitlines()
    return dict(line.rsplit(" ", 1) for line in lines if not line.startswith("#") and "_created" not in line)


def test_bulk_flush_equals_observing_each_value() -> None:
    rng = random.Random(7)
    values = [rng.uniform(0, 3) for _ in range(500)]
    values += [*LATENCY_BUCKETS, 0.0, 1e9]  # exactly on each bound (le is inclusive), and beyond the last

    direct, buffered = CollectorRegistry(), CollectorRegistry()
    direct_child = Histogram("latency", "x", ["route"], buckets=LATENCY_BUCKETS, registry=direct).labels("/a")
    bulk = BufferedHistogram(
        Histogram("latency", "x", ["route"], buckets=LATENCY_BUCKETS, registry=buffered).labels("/a"),
        LATENCY_BUCKETS,
    )
    added = 0
    for i, value in enumerate(values, 1):
        direct_child.observe(value)
        bulk.observe(value)
        if i % 97 == 0:  # flushes in between add up
            added += bulk.flush()
    added += bulk.flush()
    assert added == len(values)
    assert bulk.flush() == 0  # nothing new: nothing added

    expected, got = _exposition(direct), _exposition(buffered)
    assert got.keys() == expected.keys()
    for sample, text in expected.items():
        if sample.startswith("latency_sum"):  # the same numbers added in another order
            assert math.isclose(float(got[sample]), float(text), rel_tol=1e-12)
        else:
            assert got[sample] == text, sample


def test_service_metrics_appear_after_flush(client: TestClient, rows: list[list[float]]) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    client.post("/v1/predict", json={"instances": rows[:2]})
    before = generate_latest(service.model.metrics.registry).decode()
    assert 'model_service_requests_total{route="/v1/predict",status="200"} 0.0' in before  # not flushed yet
    service.flush_metrics()
    after = generate_latest(service.model.metrics.registry).decode()
    assert 'model_service_requests_total{route="/v1/predict",status="200"} 1.0' in after
    assert 'model_service_request_rows_bucket{le="2.0"} 1.0' in after


def test_the_metrics_port_renders_as_often_as_the_workers_flush() -> None:
    assert RENDER_INTERVAL_S == FLUSH_INTERVAL_S
