"""Per-client rate limits: the token bucket on a fake clock, and the in-process app (one tenant hammering
does not stop another; 429 with an integer Retry-After; probes never limited; counted by route)."""

import hashlib
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from model_service.operations.rate_limit import RateLimiter, retry_after
from tests._metrics import worker_metrics

KEY_A, KEY_B = "tenant-a-key", "tenant-b-key"
PROBES = ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_burst_then_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert limiter.take("a") == pytest.approx(0.5)  # one token comes back every 1/rate s
    assert limiter.take("b") == 0.0  # another client: its own bucket
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 60  # refills up to the burst, never beyond
    assert [limiter.take("a") for _ in range(4)][-1] == pytest.approx(0.5)


def test_burst_defaults_to_the_rate_rounded_up_and_overrides_win() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.5, 0, clients={"sub:batch": (100.0, 10)}, clock=clock)
    assert [limiter.take("a") > 0 for _ in range(4)] == [False, False, False, True]
    assert sum(limiter.take("sub:batch") == 0 for _ in range(11)) == 10
    assert limiter.limit("sub:batch") == (100.0, 10.0)
    assert limiter.limit("anyone") == (2.5, 3.0)


def test_clients_tracked_are_bounded() -> None:
    """Full buckets are forgotten first (nothing lost: a new client gets a full bucket); else the oldest."""
    clock = FakeClock()
    limiter = RateLimiter(1.0, 1, max_clients=100, clock=clock)
    for n in range(100):
        limiter.take(f"c{n}")
    assert len(limiter) == 100
    limiter.take("new")  # none has refilled yet: the oldest tenth goes
    assert len(limiter) == 91
    assert limiter.take("c50") > 0  # kept, still limited
    clock.now += 5  # all refilled
    for n in range(200, 210):
        limiter.take(f"c{n}")
    assert len(limiter) <= 100


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    """RFC 9110 10.2.3: Retry-After is an HTTP-date or delay-seconds, a non-negative integer."""
    assert [retry_after(w) for w in (0.001, 0.5, 1.0, 1.01, 7.9)] == ["1", "1", "1", "2", "8"]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_one_tenant_hammering_does_not_stop_another(
    make_client: Callable[..., TestClient], rows: list[list[float]]
) -> None:
    client = make_client(
        api_key_sha256=f"{_digest(KEY_A)},{_digest(KEY_B)}", rate_limit_rps=0.001, rate_limit_burst=5
    )
    body = {"instances": rows[:1]}
    statuses = [
        client.post("/v1/predict", json=body, headers={"X-API-Key": KEY_A}).status_code for _ in range(20)
    ]
    assert statuses == [200] * 5 + [429] * 15
    refused = client.post("/v1/predict", json=body, headers={"X-API-Key": KEY_A})
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.headers["retry-after"].isdigit() and int(refused.headers["retry-after"]) >= 1
    assert f"key:{_digest(KEY_A)[:12]}" in refused.json()["error"]["message"]
    assert client.get("/v1/model", headers={"X-API-Key": KEY_A}).status_code == 429  # one budget per client
    assert [
        client.post("/v1/predict", json=body, headers={"X-API-Key": KEY_B}).status_code for _ in range(5)
    ] == [200] * 5
    for path in PROBES:
        assert all(client.get(path).status_code == 200 for _ in range(10)), path
    text = worker_metrics(client)
    assert 'model_service_rate_limited_total{route="/v1/predict"} 16.0' in text
    assert 'model_service_rate_limited_total{route="/v1/model"} 1.0' in text
    assert 'model_service_requests_total{route="/v1/predict",status="429"} 16.0' in text


def test_a_client_override(make_client: Callable[..., TestClient], rows: list[list[float]]) -> None:
    client = make_client(
        api_key_sha256=f"{_digest(KEY_A)},{_digest(KEY_B)}",
        rate_limit_rps=0.001,
        rate_limit_burst=1,
        rate_limit_clients={f"key:{_digest(KEY_B)[:12]}": (0.001, 4)},
    )
    body = {"instances": rows[:1]}

    def statuses(key: str) -> list[int]:
        return [
            client.post("/v1/predict", json=body, headers={"X-API-Key": key}).status_code for _ in range(5)
        ]

    assert statuses(KEY_A) == [200, 429, 429, 429, 429]
    assert statuses(KEY_B) == [200, 200, 200, 200, 429]


def test_auth_off_limits_by_remote_address(
    make_client: Callable[..., TestClient], rows: list[list[float]]
) -> None:
    client = make_client(rate_limit_rps=0.001, rate_limit_burst=2)
    body = {"instances": rows[:1]}
    assert [client.post("/v1/predict", json=body).status_code for _ in range(3)] == [200, 200, 429]
    assert "ip:testclient" in client.post("/v1/predict", json=body).json()["error"]["message"]
    assert client.get("/healthz").status_code == 200


def test_the_open_routes_are_not_limited_with_auth_on(make_client: Callable[..., TestClient]) -> None:
    """With auth on they carry no identity to limit by; their cost is a static answer."""
    client = make_client(api_key_sha256=_digest(KEY_A), rate_limit_rps=0.001, rate_limit_burst=1)
    assert all(client.get("/openapi.json").status_code == 200 for _ in range(5))


def test_the_openapi_document_names_403_and_429(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, method in (("/v1/predict", "post"), ("/v1/model", "get"), ("/v2/models/{name}/infer", "post")):
        assert {"401", "403", "429"} <= paths[path][method]["responses"].keys(), path
    v2 = paths["/v2/models/{name}/infer"]["post"]["responses"]["429"]["content"]["application/json"]["schema"]
    assert (
        v2
        == paths["/v2/models/{name}/infer"]["post"]["responses"]["401"]["content"]["application/json"][
            "schema"
        ]
    )
    assert "429" not in paths["/healthz"]["get"]["responses"]  # probes are never limited
