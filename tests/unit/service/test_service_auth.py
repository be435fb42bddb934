"""Auth is off by default; API keys and JWTs (HS256, RS256) when configured; probes stay open."""

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError
from starlette.testclient import TestClient

from model_service.operations.settings import ServiceSettings

KEY = "s3cret-key"
OPEN_PATHS = ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")


def test_off_by_default(client: TestClient, rows: list[list[float]]) -> None:
    assert client.post("/v1/predict", json={"instances": rows[:1]}).status_code == 200


def test_api_key(make_client: Callable[..., TestClient], rows: list[list[float]]) -> None:
    other = hashlib.sha256(b"another").hexdigest()
    client = make_client(api_key_sha256=f"{other},{hashlib.sha256(KEY.encode()).hexdigest()}")
    body = {"instances": rows[:1]}
    assert (
        client.post("/v1/predict", json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    )
    assert client.post("/v1/predict", json=body, headers={"X-API-Key": KEY}).status_code == 200
    assert client.post("/v1/predict", json=body, headers={"X-API-Key": "another"}).status_code == 200
    for headers in (
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY}"},
    ):
        response = client.post("/v1/predict", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/model").status_code == 401
    for path in OPEN_PATHS:
        assert client.get(path).status_code == 200, path


def test_jwt_hs256(make_client: Callable[..., TestClient], rows: list[list[float]]) -> None:
    client = make_client(jwt_hs256_secret="x" * 32, jwt_audience="model-service")
    body = {"instances": rows[:1]}

    def call(token: str) -> int:
        return client.post("/v1/predict", json=body, headers={"Authorization": f"Bearer {token}"}).status_code

    now = int(time.time())
    good = {"sub": "ci", "aud": "model-service", "exp": now + 60, "scope": "predict"}
    assert call(jwt.encode(good, "x" * 32, algorithm="HS256")) == 200
    assert call(jwt.encode(good, "y" * 32, algorithm="HS256")) == 401
    assert call(jwt.encode({**good, "exp": now - 60}, "x" * 32, algorithm="HS256")) == 401
    assert call(jwt.encode({**good, "aud": "other"}, "x" * 32, algorithm="HS256")) == 401
    assert (
        call(
            jwt.encode({"sub": "ci", "aud": "model-service", "scope": "predict"}, "x" * 32, algorithm="HS256")
        )
        == 401
    )  # no exp
    assert call("not.a.token") == 401
    assert client.get("/readyz").status_code == 200


def test_jwt_rs256(make_client: Callable[..., TestClient], rows: list[list[float]], tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_file = tmp_path / "public.pem"
    public_file.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    client = make_client(jwt_rs256_public_key_file=public_file)
    token = jwt.encode(
        {"sub": "ci", "exp": int(time.time()) + 60, "scp": ["predict"]}, private, algorithm="RS256"
    )
    headers = {"Authorization": f"Bearer {token}"}
    assert client.post("/v1/predict", json={"instances": rows[:1]}, headers=headers).status_code == 200
    forged = jwt.encode({"sub": "ci", "exp": int(time.time()) + 60}, "s" * 32, algorithm="HS256")
    headers = {"Authorization": f"Bearer {forged}"}
    assert client.post("/v1/predict", json={"instances": rows[:1]}, headers=headers).status_code == 401


def test_bad_key_setting_is_refused(model_dir: Path) -> None:
    with pytest.raises(ValidationError, match="sha256 hex digests"):
        ServiceSettings(model_dir=model_dir, api_key_sha256="not-a-digest")
