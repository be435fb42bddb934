"""JWT from an issuer's key set (JWKS, OIDC discovery) against a local key server on loopback: per-route
scopes, rotation, an outage, algorithm confusion; and the NumericDate claims a signed token may carry.

The key server is a real HTTP server (tests/_oidc.py); the service is the in-process app (TestClient)."""

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError
from starlette.testclient import TestClient

from model_service.operations.auth import Authenticator
from model_service.operations.logs import JsonLog
from model_service.operations.settings import ServiceSettings
from model_service.protocol.errors import Unauthorized
from tests._oidc import AUDIENCE, KeyServer

SECRET = "x" * 32
PROBES = ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")


@pytest.fixture
def issuer_client(make_client: Callable[..., TestClient], keys: KeyServer) -> Callable[..., TestClient]:
    def make(**overrides: Any) -> TestClient:
        settings = {
            "jwt_oidc_discovery": True,
            "jwt_issuer": keys.issuer,
            "jwt_audience": AUDIENCE,
            **overrides,
        }
        return make_client(**settings)

    return make


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_scopes_per_route(
    issuer_client: Callable[..., TestClient], keys: KeyServer, rows: list[list[float]]
) -> None:
    """RFC 6750 3.1: no or a bad token is 401 with `WWW-Authenticate: Bearer`; a valid token without the
    route's scope is 403 `insufficient_scope`, naming the scope. `scope` is space-separated (RFC 9068
    2.2.3); `scp` a list (Okta) or a string (Entra ID)."""
    client = issuer_client()
    body = {"instances": rows[:1]}
    predict_only = _bearer(keys.token("k1", scope="predict"))
    assert client.post("/v1/predict", json=body, headers=predict_only).status_code == 200
    refused = client.get("/v1/model", headers=predict_only)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert "needs scope 'model:read'" in refused.json()["error"]["message"]
    assert refused.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="model:read"'
    assert client.get("/v2/models/any", headers=predict_only).status_code == 403
    reader = _bearer(keys.token("k1", scp=["model:read"]))
    assert client.get("/v1/model", headers=reader).status_code == 200
    assert client.post("/v1/predict", json=body, headers=reader).status_code == 403
    assert client.post("/v2/models/x/infer", json={}, headers=reader).status_code == 403
    both = _bearer(keys.token("k1", scp="model:read predict"))
    assert client.get("/v1/model", headers=both).status_code == 200
    assert client.post("/v1/predict", json=body, headers=both).status_code == 200
    no_scope = _bearer(keys.token("k1"))
    assert client.post("/v1/predict", json=body, headers=no_scope).status_code == 403
    for headers in ({}, _bearer("not.a.token"), _bearer(keys.token("k1", aud="other", scope="predict"))):
        answer = client.post("/v1/predict", json=body, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"] == "Bearer"
    for path in PROBES:
        assert client.get(path).status_code == 200


def test_feedback_needs_its_scope(issuer_client: Callable[..., TestClient], keys: KeyServer) -> None:
    client = issuer_client()
    body = {"labels": [{"request_id": "1a2b-0", "label": 1}]}
    refused = client.post("/v1/feedback", json=body, headers=_bearer(keys.token("k1", scope="predict")))
    assert refused.status_code == 403
    assert "needs scope 'feedback'" in refused.json()["error"]["message"]
    allowed = client.post("/v1/feedback", json=body, headers=_bearer(keys.token("k1", scope="feedback")))
    assert allowed.status_code == 404  # past auth; this service has no capture to join labels to
    assert allowed.json()["error"]["code"] == "capture_off"


def test_scope_prefix(
    issuer_client: Callable[..., TestClient], keys: KeyServer, rows: list[list[float]]
) -> None:
    client = issuer_client(jwt_scope_prefix="api://model/")
    body = {"instances": rows[:1]}
    assert (
        client.post("/v1/predict", json=body, headers=_bearer(keys.token("k1", scope="predict"))).status_code
        == 403
    )
    good = _bearer(keys.token("k1", scope="api://model/predict"))
    assert client.post("/v1/predict", json=body, headers=good).status_code == 200


def test_rotation_is_one_refetch(
    issuer_client: Callable[..., TestClient], keys: KeyServer, rows: list[list[float]]
) -> None:
    client = issuer_client(jwt_keys_min_refetch_s=0)
    body = {"instances": rows[:1]}
    assert keys.fetches == 1  # at start-up
    assert (
        client.post("/v1/predict", json=body, headers=_bearer(keys.token("k1", scope="predict"))).status_code
        == 200
    )
    keys.rotate("k2")
    fresh = _bearer(keys.token("k2", scope="predict"))
    assert client.post("/v1/predict", json=body, headers=fresh).status_code == 200
    assert keys.fetches == 2  # the unknown kid waited for one refetch
    for _ in range(3):
        assert client.post("/v1/predict", json=body, headers=fresh).status_code == 200
    assert keys.fetches == 2  # known now: no more fetches
    withdrawn = client.post("/v1/predict", json=body, headers=_bearer(keys.token("k1", scope="predict")))
    assert withdrawn.status_code == 401
    assert "unknown key id 'k1'" in withdrawn.json()["error"]["message"]


def test_unknown_kids_do_not_flood_the_issuer(
    issuer_client: Callable[..., TestClient], keys: KeyServer, rows: list[list[float]]
) -> None:
    client = issuer_client(jwt_keys_min_refetch_s=3600)
    keys.add_key("stranger", publish=False)
    for _ in range(20):
        answer = client.post(
            "/v1/predict",
            json={"instances": rows[:1]},
            headers=_bearer(keys.token("stranger", scope="predict")),
        )
        assert answer.status_code == 401
    assert keys.fetches == 1  # the start-up fetch only: refetches wait MODEL_SERVICE_JWT_KEYS_MIN_REFETCH_S


def test_outage_keeps_cached_keys(
    issuer_client: Callable[..., TestClient], keys: KeyServer, rows: list[list[float]]
) -> None:
    client = issuer_client(jwt_keys_ttl_s=0.001, jwt_keys_min_refetch_s=0)
    body = {"instances": rows[:1]}
    token = _bearer(keys.token("k1", scope="predict"))
    assert client.post("/v1/predict", json=body, headers=token).status_code == 200
    keys.add_key("k2", publish=False)
    later = _bearer(keys.token("k2", scope="predict"))
    keys.stop()
    for _ in range(5):  # each request finds the set stale and tries a refresh, which fails
        assert client.post("/v1/predict", json=body, headers=token).status_code == 200
    refused = client.post("/v1/predict", json=body, headers=later)
    assert refused.status_code == 401
    assert "unknown key id 'k2'" in refused.json()["error"]["message"]


def test_no_keys_at_all(
    make_client: Callable[..., TestClient], keys: KeyServer, rows: list[list[float]]
) -> None:
    """The issuer down from the start: the service starts, and every token is refused, saying why."""
    issuer = keys.issuer
    token = _bearer(keys.token("k1", scope="predict"))
    keys.stop()
    client = make_client(
        jwt_oidc_discovery=True, jwt_issuer=issuer, jwt_audience=AUDIENCE, jwt_keys_min_refetch_s=0
    )
    assert client.get("/readyz").status_code == 200
    refused = client.post("/v1/predict", json={"instances": rows[:1]}, headers=token)
    assert refused.status_code == 401
    assert "no signing keys could be fetched yet" in refused.json()["error"]["message"]


def test_discovery_must_name_the_issuer(
    make_client: Callable[..., TestClient], keys: KeyServer, rows: list[list[float]]
) -> None:
    """OpenID Connect Discovery 1.0, 4.3: the document's `issuer` must be the issuer it was fetched for."""
    client = make_client(jwt_oidc_discovery=True, jwt_issuer=f"{keys.issuer}/", jwt_audience=AUDIENCE)
    token = _bearer(keys.token("k1", scope="predict", iss=f"{keys.issuer}/"))
    assert client.post("/v1/predict", json={"instances": rows[:1]}, headers=token).status_code == 401
    assert keys.fetches == 0


def test_algorithms_allow_listed(
    make_client: Callable[..., TestClient], keys: KeyServer, rows: list[list[float]]
) -> None:
    """RFC 8725 2.1 and 3.1: `none` is refused, and so is an HS256 token whose secret is the published RSA
    key (algorithm confusion) or an `oct` key slipped into the set; each key verifies its own algorithm."""
    shared = b"s" * 32
    keys.extra_jwks.append(
        {"kty": "oct", "kid": "shared", "k": base64.urlsafe_b64encode(shared).rstrip(b"=").decode()}
    )
    keys.add_key("ec1", kind="EC")
    client = make_client(jwt_jwks_url=keys.jwks_url, jwt_audience=AUDIENCE, jwt_algorithms="RS256,ES256")
    body = {"instances": rows[:1]}
    claims = {"sub": "x", "aud": AUDIENCE, "exp": int(time.time()) + 60, "scope": "predict"}
    public_pem = (
        keys.private["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    def call(token: str) -> int:
        return client.post("/v1/predict", json=body, headers=_bearer(token)).status_code

    assert call(keys.token("k1", scope="predict")) == 200
    assert call(keys.token("ec1", scope="predict")) == 200
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"kid": "k1"})
    assert call(unsigned) == 401
    hmac_with_public_key = _hs256(claims, public_pem, kid="k1")
    assert call(hmac_with_public_key) == 401
    assert call(_hs256(claims, shared, kid="shared")) == 401
    # an RS256 header on the EC key's kid: the key verifies ES256 only
    forged = keys.token("k1", scope="predict")
    _, payload, signature = forged.split(".")
    swapped = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"ec1","typ":"JWT"}').rstrip(b"=").decode()
    assert call(f"{swapped}.{payload}.{signature}") == 401


def _hs256(claims: dict[str, Any], secret: bytes, *, kid: str) -> str:
    """An HS256 token with any bytes as the secret (PyJWT refuses a PEM as an HMAC key, an attacker does not)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = {"alg": "HS256", "kid": kid, "typ": "JWT"}
    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature)}"


@pytest.mark.parametrize(
    ("claim", "form"),
    [
        ("exp", "string"),
        ("exp", "float"),
        ("exp", "huge"),
        ("exp", "far"),
        ("nbf", "string"),
        ("nbf", "float"),
        ("iat", "string"),
        ("iat", "float"),
        ("iat", "negative"),
    ],
)
def test_dates_must_be_integers_in_range(
    make_client: Callable[..., TestClient], rows: list[list[float]], claim: str, form: str
) -> None:
    """Signed with the real key, each is refused: RFC 7519 2 defines NumericDate as a JSON number (issuers
    send integers), and PyJWT reads these claims through int(), which takes "1999999999", 1.9e9 and 10**30;
    an `exp` beyond MODEL_SERVICE_JWT_MAX_LIFETIME_S is a token that (nearly) never expires."""
    client = make_client(jwt_hs256_secret=SECRET, jwt_max_lifetime_s=3600)
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "ci", "exp": now + 60, "iat": now, "nbf": now, "scope": "predict"}
    good = jwt.encode(claims, SECRET, algorithm="HS256")
    assert client.post("/v1/predict", json={"instances": rows[:1]}, headers=_bearer(good)).status_code == 200
    value = claims[claim]
    claims[claim] = {
        "string": str(value),
        "float": value + 0.5,
        "huge": 10**30,
        "far": now + 7200,
        "bool": True,
        "negative": -5,
    }[form]
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    answer = client.post("/v1/predict", json={"instances": rows[:1]}, headers=_bearer(token))
    assert answer.status_code == 401, answer.text
    assert f"{claim} must be an integer" in answer.text or "tokens may live at most 3600 s" in answer.text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"jwt_jwks_url": "https://idp.example/jwks", "jwt_algorithms": "HS256"},
            "HS\\* and none are refused",
        ),
        ({"jwt_jwks_url": "https://idp.example/jwks", "jwt_algorithms": "RS256,none"}, "got none"),
        ({"jwt_jwks_url": "http://idp.example/jwks"}, "expected an https URL"),
        ({"jwt_oidc_discovery": True}, "needs MODEL_SERVICE_JWT_ISSUER"),
        ({"jwt_oidc_discovery": True, "jwt_issuer": "http://idp.example"}, "expected an https URL"),
        (
            {"jwt_oidc_discovery": True, "jwt_issuer": "https://i", "jwt_jwks_url": "https://i/jwks"},
            "not both",
        ),
        ({"jwt_jwks_url": "https://i/jwks", "jwt_hs256_secret": SECRET}, "keep one"),
        ({"rate_limit_clients": {"sub:a": [0, 1]}}, "requests_per_second > 0"),
    ],
)
def test_bad_settings_are_refused(model_dir: Path, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ServiceSettings(model_dir=model_dir, **settings)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_verified_token_is_remembered_until_it_expires(model_dir: Path) -> None:
    """A client sends the same token until it expires: its signature is verified once, its expiry on every
    request (on the authenticator's clock, here a fake one)."""
    clock = Clock()
    settings = ServiceSettings(model_dir=model_dir, jwt_hs256_secret=SECRET)
    auth = Authenticator(settings, JsonLog(), clock=clock)
    exp = int(clock.now) + 60
    token = jwt.encode({"sub": "ci", "exp": exp, "scope": "predict"}, SECRET, algorithm="HS256").encode()

    async def call() -> str:
        return (await auth.authenticate(b"Bearer " + token, None)).client

    assert asyncio.run(call()) == "sub:ci"
    assert asyncio.run(call()) == "sub:ci"  # remembered
    clock.now = exp  # RFC 7519 4.1.4: "on or after" exp it must not be accepted
    with pytest.raises(Unauthorized, match="expired"):
        asyncio.run(call())
    clock.now = exp - 10
    early = jwt.encode(
        {"sub": "ci", "exp": exp, "nbf": exp - 5, "scope": "predict"}, SECRET, algorithm="HS256"
    )
    with pytest.raises(Unauthorized, match="not valid yet"):
        asyncio.run(auth.authenticate(f"Bearer {early}".encode(), None))
