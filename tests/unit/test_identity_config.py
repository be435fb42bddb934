"""`service.auth: jwt` and `service.rate_limit` from the environment YAML: validated, turned into the
service's settings (ConfigMap and local runs), a local run's own token, and the in-cluster load Job's token."""

from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from model_service.operations.settings import ServiceSettings
from pipeline.adapters.service_process import local_token, service_environment, service_settings
from pipeline.config import ConfigError, load_config
from pipeline.deploy import release_file, render

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "environments"
ISSUER = "https://login.example.com/tenant"
JWT = [
    "service.auth=jwt",
    f"service.jwt.issuer={ISSUER}",
    "service.jwt.audience=api://model-service",
]


def _as_the_service_reads(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], model_dir: Path
) -> ServiceSettings:
    """The settings the service builds from these variables, as in the pod or a local run."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return ServiceSettings(model_dir=model_dir)


def test_jwt_settings_from_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config("staging", CONFIG_DIR, [*JWT, "service.jwt.scope_prefix=api://model/"])
    settings = service_settings(config)
    assert settings["MODEL_SERVICE_JWT_ISSUER"] == ISSUER
    assert settings["MODEL_SERVICE_JWT_AUDIENCE"] == "api://model-service"
    assert settings["MODEL_SERVICE_JWT_OIDC_DISCOVERY"] == "true"  # no jwks_url: discovery
    assert settings["MODEL_SERVICE_JWT_ALGORITHMS"] == "RS256"
    assert settings["MODEL_SERVICE_JWT_SCOPE_PREFIX"] == "api://model/"
    assert "MODEL_SERVICE_JWT_JWKS_URL" not in settings
    accepted = _as_the_service_reads(monkeypatch, settings, tmp_path)  # the ConfigMap's, in the pod
    assert accepted.jwt_oidc_discovery and accepted.jwt_algorithms == ("RS256",)
    direct = service_settings(
        load_config("staging", CONFIG_DIR, [*JWT, f"service.jwt.jwks_url={ISSUER}/keys"])
    )
    assert direct["MODEL_SERVICE_JWT_JWKS_URL"] == f"{ISSUER}/keys"
    assert "MODEL_SERVICE_JWT_OIDC_DISCOVERY" not in direct


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["service.auth=jwt"], "auth 'jwt' needs service.jwt"),
        ([*JWT[1:]], "service.jwt is read only with auth 'jwt'"),
        ([*JWT[:1], "service.jwt.issuer=http://idp.example", "service.jwt.audience=a"], "service.jwt.issuer"),
        ([*JWT, "service.jwt.algorithms=[HS256]"], "service.jwt.algorithms.0"),
        ([*JWT, "service.jwt.algorithms=[none]"], "service.jwt.algorithms.0"),
        (["service.rate_limit.requests_per_second=0"], "service.rate_limit.requests_per_second"),
        (
            [
                "service.rate_limit.requests_per_second=5",
                "service.rate_limit.clients={alice: {requests_per_second: 1, burst: 1}}",
            ],
            "service.rate_limit: .*clients: 'alice' is no client id",
        ),
    ],
)
def test_bad_identity_config_is_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("staging", CONFIG_DIR, overrides)


def test_rate_limit_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(
        "prod",
        CONFIG_DIR,
        [
            "service.rate_limit.requests_per_second=50",
            "service.rate_limit.burst=100",
            "service.rate_limit.clients={'sub:batch-job': {requests_per_second: 500, burst: 1000}}",
        ],
    )
    settings = service_settings(config)
    assert settings["MODEL_SERVICE_RATE_LIMIT_RPS"] == "50"
    assert settings["MODEL_SERVICE_RATE_LIMIT_BURST"] == "100"
    parsed = _as_the_service_reads(monkeypatch, settings, tmp_path)
    assert (parsed.rate_limit_rps, parsed.rate_limit_burst) == (50.0, 100)
    assert parsed.rate_limit_clients == {"sub:batch-job": (500.0, 1000)}
    assert "MODEL_SERVICE_RATE_LIMIT_RPS" not in service_settings(load_config("prod", CONFIG_DIR))


def test_a_local_run_signs_its_own_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No identity provider answers a local run: the service checks the run's own key, with the
    environment's issuer, audience and scopes."""
    config = load_config("staging", CONFIG_DIR, [*JWT, "service.jwt.max_token_lifetime_seconds=600"])
    env, headers = service_environment(config)
    assert "MODEL_SERVICE_JWT_OIDC_DISCOVERY" not in env and "MODEL_SERVICE_JWT_ALGORITHMS" not in env
    public_file = Path(env["MODEL_SERVICE_JWT_RS256_PUBLIC_KEY_FILE"])
    token = headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(
        token, public_file.read_bytes(), algorithms=["RS256"], audience="api://model-service", issuer=ISSUER
    )
    assert claims["scope"].split() == ["predict", "model:read", "feedback"]
    assert claims["exp"] - claims["iat"] == 600  # within the environment's longest lifetime
    assert _as_the_service_reads(monkeypatch, env, tmp_path).jwt_rs256_public_key_file == public_file
    assert local_token(config)[0] == public_file  # one key per pipeline process


def _load_job_env(config: Any) -> list[dict[str, Any]]:
    """Every container env entry of the rendered overlay's analysis (where the load Job lives)."""
    files = render.render_environment(config, release_file.Release(image="model-service"), ROOT)
    analysis = yaml.safe_load(files[f"k8s/overlays/{config.name}/patch-analysis.yaml"])
    return _find(analysis, "env")


def _find(node: Any, key: str) -> list[Any]:
    found: list[Any] = []
    if isinstance(node, dict):
        for k, v in node.items():
            found += v if k == key and isinstance(v, list) else _find(v, key)
    elif isinstance(node, list):
        for item in node:
            found += _find(item, key)
    return found


def test_the_load_job_reads_a_token_secret() -> None:
    config = load_config("dev", CONFIG_DIR, [*JWT, "service.jwt.loadtest_token_secret=analysis-token"])
    env = _load_job_env(config)
    assert {
        "name": "LOADTEST_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "analysis-token", "key": "token"}},
    } in env
    assert {"name": "LOADTEST_HEADERS", "value": '{"Authorization": "Bearer $(LOADTEST_TOKEN)"}'} in env
