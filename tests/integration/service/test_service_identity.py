"""Identity and per-client limits on the real service process: tokens from a local OIDC-shaped key server
(tests/_oidc.py: discovery and JWKS over HTTP on loopback), its keys rotated and then the server stopped;
two tenants, one hammering, the other unaffected; the SDK waiting out a 429."""

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from model_client import Client, Retry
from pipeline.adapters.service_process import running_service
from pipeline.config import load_config
from tests._metrics import scraped_when
from tests._oidc import AUDIENCE, KeyServer
from tests.integration.service.conftest import Server

CONFIG_DIR = Path(__file__).resolve().parents[3] / "environments"
KEY_A, KEY_B, KEY_C = "tenant-a-key", "tenant-b-key", "tenant-c-key"


def _log_lines(tmp_path: Path, server: Server) -> list[dict[str, object]]:
    port = server.url.rsplit(":", 1)[1]
    text = (tmp_path / f"server-{port}.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _rows(model_dir: Path) -> list[list[float]]:
    return json.loads((model_dir / "eval.json").read_text())["rows"][:1]  # type: ignore[no-any-return]


def test_tokens_from_the_issuer_through_rotation_and_outage(
    start_server: Callable[..., Server], keys: KeyServer, model_dir: Path, tmp_path: Path
) -> None:
    server = start_server(
        jwt_oidc_discovery="true",
        jwt_issuer=keys.issuer,
        jwt_audience=AUDIENCE,
        jwt_keys_ttl_s="0.2",
        jwt_keys_min_refetch_s="0",
    )
    body = {"instances": _rows(model_dir)}

    def predict(token: str) -> httpx.Response:
        return httpx.post(f"{server.url}/v1/predict", json=body, headers={"Authorization": f"Bearer {token}"})

    assert predict(keys.token("k1", scope="predict")).status_code == 200
    refused = predict(keys.token("k1", scope="model:read"))
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="predict"'
    missing = httpx.post(f"{server.url}/v1/predict", json=body)
    assert (missing.status_code, missing.headers["www-authenticate"]) == (401, "Bearer")

    keys.rotate("k2")  # the issuer signs with a new key and withdraws the old one
    rotated = keys.token("k2", scope="predict")
    assert predict(rotated).status_code == 200
    assert predict(keys.token("k1", scope="predict")).status_code == 401

    keys.stop()  # outage: refreshes fail, the keys held keep verifying
    for _ in range(10):
        assert predict(rotated).status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    server.stop()
    events = [line["event"] for line in _log_lines(tmp_path, server)]
    assert "jwks_refresh_failed" in events
    assert events.count("jwks_refreshed") >= 2  # at start, and on the rotation


def test_one_tenant_hammering_leaves_another_served_and_the_sdk_waits(
    start_server: Callable[..., Server], model_dir: Path, tmp_path: Path
) -> None:
    digests = {key: hashlib.sha256(key.encode()).hexdigest() for key in (KEY_A, KEY_B, KEY_C)}
    # KEY_C: one request per 2 s, so a request right after one is refused, whatever the machine's pace.
    slow = json.dumps({f"key:{digests[KEY_C][:12]}": [0.5, 1]})
    server = start_server(
        api_key_sha256=",".join(digests.values()),
        rate_limit_rps="5",
        rate_limit_burst="5",
        rate_limit_clients=slow,
    )
    body = {"instances": _rows(model_dir)}
    statuses: list[int] = []
    retry_afters: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(headers={"X-API-Key": KEY_A}) as client:
            while not stop.is_set():
                answer = client.post(f"{server.url}/v1/predict", json=body)
                statuses.append(answer.status_code)
                if answer.status_code == 429:
                    retry_afters.add(answer.headers["retry-after"])

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        while statuses.count(429) < 50:  # tenant A well past its budget
            stop.wait(0.01)
        with httpx.Client(headers={"X-API-Key": KEY_B}) as other:
            served_b = [other.post(f"{server.url}/v1/predict", json=body).status_code for _ in range(3)]
        probes = [httpx.get(f"{server.url}{path}").status_code for path in ("/healthz", "/readyz")]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert served_b == [200, 200, 200]  # within B's own burst
    assert probes == [200, 200]
    assert retry_afters == {"1"}  # whole seconds (RFC 9110 10.2.3), 1/5 s rounded up
    assert statuses.count(200) >= 5  # A's burst, then its rate

    spent = httpx.post(f"{server.url}/v1/predict", json=body, headers={"X-API-Key": KEY_C})
    assert spent.status_code == 200  # C's one token
    with Client(server.url, api_key=KEY_C, timeout=30, retry=Retry(attempts=3)) as sdk:
        answer = sdk.predict(_rows(model_dir), request_id="sdk-waits-1")
    assert answer.request_id == "sdk-waits-1"
    scraped_when(server.metrics_url, 'model_service_rate_limited_total{route="/v1/predict"}')
    server.stop()
    sdk_lines = [line for line in _log_lines(tmp_path, server) if line.get("request_id") == "sdk-waits-1"]
    # refused, Retry-After waited, then served: one request id over both attempts
    assert [line["status"] for line in sdk_lines if line.get("event") == "request"] == [429, 200]


def test_a_local_run_with_auth_jwt(model_dir: Path, tmp_path: Path) -> None:
    """What the load test, the rehearsal and `serve` start for an environment with `service.auth: jwt`:
    the service checks the run's own key with the environment's issuer and audience, and the token the
    pipeline hands its clients passes every route's scope; another token does not."""
    config = load_config(
        "staging",
        CONFIG_DIR,
        ["service.auth=jwt", "service.jwt.issuer=https://login.example.com/t", "service.jwt.audience=model"],
    )
    with running_service(config, model_dir, tmp_path / "service.log") as service:
        with Client(service.url, token=service.headers["Authorization"].removeprefix("Bearer ")) as sdk:
            assert sdk.card()["name"]
            assert sdk.predict(_rows(model_dir)).predictions
        stranger = KeyServer()
        stranger.add_key("k1")
        try:
            forged = stranger.token("k1", iss="https://login.example.com/t", aud="model", scope="predict")
        finally:
            stranger.stop()
        refused = httpx.post(
            f"{service.url}/v1/predict",
            json={"instances": _rows(model_dir)},
            headers={"Authorization": f"Bearer {forged}"},
        )
        assert refused.status_code == 401
