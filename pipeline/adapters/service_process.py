"""Run the reference service as a real process on 127.0.0.1, for the stages that need one.

The service is a separate program (`python -m model_service`); this module only starts it with the
environment's settings, waits for /readyz, and stops it with everything it started.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.adapters.processes import READY_TIMEOUT_S, free_port, started_process
from pipeline.config import Config, ConfigError


@dataclass(frozen=True)
class ServiceProcess:
    url: str
    """The API: inference, metadata, probes (what users and the traffic splitter reach)."""
    metrics_url: str
    """The metrics port's address (`{metrics_url}/metrics`); the API's port never serves /metrics."""
    process: subprocess.Popen[bytes]
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)
    """Headers a client needs (the throw-away API key when auth is on)."""


def loopback_url(url: str, *, option: str, allow_remote: bool) -> str:
    """`url` without a trailing slash; a ConfigError (a usage error) unless it is http(s) on a loopback
    address or `allow_remote` confirms that the target may receive this machine's traffic."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    if parsed.scheme not in {"http", "https"} or not host:
        raise ConfigError(f"{option} {url!r}: expected a URL like http://127.0.0.1:8000")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not allow_remote:
        msg = (
            f"{option} {url}: {host} is not a loopback address; pass --allow-remote to confirm that this "
            "target may receive the traffic"
        )
        raise ConfigError(msg)
    return url.rstrip("/")


def service_settings(config: Config) -> dict[str, str]:
    """MODEL_SERVICE_* variables from the `service:` section (pure: no keys, no secrets).

    Shared by local runs and the Kubernetes ConfigMap (pipeline/deploy/render.py), so the two cannot disagree."""
    spec = config.service
    return {
        "MODEL_SERVICE_ENVIRONMENT": config.name,
        "MODEL_SERVICE_WORKERS": str(spec.workers),
        "MODEL_SERVICE_INTRA_OP_THREADS": str(spec.intra_op_threads),
        "MODEL_SERVICE_MAX_IN_FLIGHT": str(spec.max_in_flight),
        "MODEL_SERVICE_MAX_ROWS": str(spec.max_rows),
        "MODEL_SERVICE_MAX_BODY_BYTES": str(spec.max_body_bytes),
        **drift_settings(config),
        **breaker_settings(config),
        **identity_settings(config),
    }


def identity_settings(config: Config) -> dict[str, str]:
    """`service.jwt` and `service.rate_limit` as MODEL_SERVICE_* variables: no secrets (the provider's keys
    are public), so they go in the ConfigMap too."""
    spec = config.service
    settings: dict[str, str] = {}
    if spec.jwt is not None:
        jwt = spec.jwt
        settings |= {
            "MODEL_SERVICE_JWT_ISSUER": jwt.issuer,
            "MODEL_SERVICE_JWT_AUDIENCE": jwt.audience,
            "MODEL_SERVICE_JWT_ALGORITHMS": ",".join(jwt.algorithms),
            "MODEL_SERVICE_JWT_KEYS_TTL_S": f"{jwt.keys_ttl_seconds:g}",
            "MODEL_SERVICE_JWT_MAX_LIFETIME_S": str(jwt.max_token_lifetime_seconds),
        }
        if jwt.jwks_url is not None:
            settings["MODEL_SERVICE_JWT_JWKS_URL"] = jwt.jwks_url
        else:
            settings["MODEL_SERVICE_JWT_OIDC_DISCOVERY"] = "true"
        if jwt.scope_prefix:
            settings["MODEL_SERVICE_JWT_SCOPE_PREFIX"] = jwt.scope_prefix
    limit = spec.rate_limit
    if limit is not None:
        settings["MODEL_SERVICE_RATE_LIMIT_RPS"] = f"{limit.requests_per_second:g}"
        if limit.burst is not None:
            settings["MODEL_SERVICE_RATE_LIMIT_BURST"] = str(limit.burst)
        if limit.clients:
            own = {client: [c.requests_per_second, c.burst] for client, c in sorted(limit.clients.items())}
            settings["MODEL_SERVICE_RATE_LIMIT_CLIENTS"] = json.dumps(own, separators=(",", ":"))
    return settings


FALLBACK_DIR_ENV = "MODEL_SERVICE_FALLBACK_DIR"
CAPTURE_DIR_ENV = "MODEL_SERVICE_CAPTURE_DIR"


def capture_settings(config: Config, directory: str | Path) -> dict[str, str]:
    """The `capture:` section's service settings, capturing into `directory` (the workspace's folder
    locally, the capture volume's mount path in the cluster); none when the capture is off. The sensitive
    features are `drift.log_inputs.sensitive` (MODEL_SERVICE_LOG_INPUTS_SENSITIVE): one redaction."""
    capture = config.capture
    if not capture.enabled:
        return {}
    return {
        CAPTURE_DIR_ENV: str(directory),
        "MODEL_SERVICE_CAPTURE_SAMPLE_RATIO": f"{capture.sample_ratio:g}",
        "MODEL_SERVICE_CAPTURE_MAX_FILE_BYTES": str(capture.max_file_bytes),
        "MODEL_SERVICE_CAPTURE_MAX_FILES": str(capture.max_files),
        "MODEL_SERVICE_CAPTURE_RETENTION_DAYS": f"{capture.retention_days:g}",
        "MODEL_SERVICE_CAPTURE_LABEL_WINDOW_DAYS": f"{capture.label_window_days:g}",
    }


def breaker_settings(config: Config) -> dict[str, str]:
    """The circuit breaker's thresholds when `service.fallback` is set. Where the fallback's files are
    (MODEL_SERVICE_FALLBACK_DIR) is up to whoever places them: the image, a local run."""
    fallback = config.service.fallback
    if fallback is None:
        return {}
    breaker = fallback.breaker
    return {
        "MODEL_SERVICE_BREAKER_FAILURES": str(breaker.failures),
        "MODEL_SERVICE_BREAKER_WINDOW_S": f"{breaker.window_seconds:g}",
        "MODEL_SERVICE_BREAKER_LATENCY_BUDGET_MS": f"{breaker.latency_budget_ms:g}",
        "MODEL_SERVICE_BREAKER_OPEN_S": f"{breaker.open_seconds:g}",
        "MODEL_SERVICE_BREAKER_HALF_OPEN_PROBES": str(breaker.half_open_probes),
    }


def drift_settings(config: Config) -> dict[str, str]:
    """The `drift:` section's service settings: PSI window and opt-in input logging (sensitive fields)."""
    drift = config.drift
    settings = {
        "MODEL_SERVICE_DRIFT_WINDOW": str(drift.window_rows),
        "MODEL_SERVICE_LOG_INPUTS": "true" if drift.log_inputs.enabled else "false",
    }
    if drift.log_inputs.enabled:
        settings["MODEL_SERVICE_LOG_INPUTS_SAMPLE_RATIO"] = f"{drift.log_inputs.sample_ratio:g}"
    if drift.log_inputs.sensitive:  # the metrics' feature bins follow it too, input log on or off
        settings["MODEL_SERVICE_LOG_INPUTS_SENSITIVE"] = ",".join(
            f"{name}:{action}" for name, action in sorted(drift.log_inputs.sensitive.items())
        )
    return settings


def service_environment(
    config: Config, api_key: str | None = None, *, capture_dir: Path | None = None, **extra: str
) -> tuple[dict[str, str], dict[str, str]]:
    """MODEL_SERVICE_* variables for this environment, and the client headers they imply.

    With auth on, the service accepts `api_key`, or a throw-away key made here. `capture_dir`: capture
    into it when the environment's capture is on (`pipeline serve`); None: no capture (load tests,
    rehearsals: their traffic is no one's production)."""
    spec = config.service
    captured = capture_settings(config, capture_dir) if capture_dir is not None else {}
    env = {**service_settings(config), **captured, **extra}
    headers: dict[str, str] = {}
    if spec.auth == "api-key":
        key = api_key or secrets.token_urlsafe(24)
        env["MODEL_SERVICE_API_KEY_SHA256"] = hashlib.sha256(key.encode()).hexdigest()
        headers["Authorization"] = f"Bearer {key}"
    elif spec.auth == "jwt":
        # No identity provider answers a local run: the service checks this run's own signing key instead
        # of the provider's key set, with the environment's issuer, audience, scopes and lifetime.
        for name in ("JWKS_URL", "OIDC_DISCOVERY", "ALGORITHMS"):
            env.pop(f"MODEL_SERVICE_JWT_{name}", None)
        public_key_file, token = local_token(config)
        env["MODEL_SERVICE_JWT_RS256_PUBLIC_KEY_FILE"] = str(public_key_file)
        headers["Authorization"] = f"Bearer {token}"
    return env, headers


LOCAL_SCOPES = ("predict", "model:read", "feedback")
"""The route scopes a local run's token grants (model_service/protocol/routes.py)."""
LOCAL_TOKEN_HOURS = 12


def local_token(config: Config) -> tuple[Path, str]:
    """A throw-away RS256 key of this process (its public half in a temporary file, removed at exit) and a
    token it signs for the environment's issuer and audience with every route scope, subject
    `pipeline-local`, living 12 hours or the environment's longest token lifetime if shorter."""
    import jwt  # noqa: PLC0415  (the service's dependency group: only local runs with auth jwt need it)

    spec = config.service.jwt
    assert spec is not None, "config: auth jwt has service.jwt"
    private, public_file = _local_signing_key()
    now = int(time.time())
    lifetime = min(LOCAL_TOKEN_HOURS * 3600, spec.max_token_lifetime_seconds)
    claims = {
        "iss": spec.issuer,
        "aud": spec.audience,
        "sub": "pipeline-local",
        "iat": now,
        "exp": now + lifetime,
        "scope": " ".join(spec.scope_prefix + scope for scope in LOCAL_SCOPES),
    }
    return public_file, jwt.encode(claims, private, algorithm="RS256")


@functools.cache
def _local_signing_key() -> tuple[Any, Path]:
    """This process' RSA private key and the file holding its public half."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415  (as above)
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    folder = Path(tempfile.mkdtemp(prefix="pipeline-jwt-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_file = folder / "public.pem"
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_file.write_bytes(pem)
    return private, public_file


@contextmanager
def running_service(
    config: Config,
    model_dir: Path,
    log_path: Path,
    *,
    port: int | None = None,
    metrics_port: int | None = None,
    settings: Mapping[str, str] | None = None,
    api_key: str | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
    capture_dir: Path | None = None,
) -> Iterator[ServiceProcess]:
    """Start the service on `model_dir`, yield once /readyz answers 200, stop it on the way out.

    `settings` adds MODEL_SERVICE_* variables (e.g. fault injection for a rehearsal); `capture_dir`
    captures into that folder when the environment's capture is on (`service_environment`). The process gets its
    own session so that stopping it also stops its workers, whatever happens in the `with` body.
    """
    port = port or free_port()
    while metrics_port is None or metrics_port == port:
        metrics_port = free_port()
    env_vars, headers = service_environment(config, api_key, capture_dir=capture_dir, **dict(settings or {}))
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SERVICE_", "PROMETHEUS_MULTIPROC"))
    }
    command = [
        sys.executable,
        "-m",
        "model_service",
        "--model-dir",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
    ]
    url = f"http://127.0.0.1:{port}"
    env = {**inherited, **env_vars}
    what = f"the service on {model_dir}"
    with started_process(
        command, env, log_path, f"{url}/readyz", what=what, timeout=ready_timeout
    ) as process:
        yield ServiceProcess(url, f"http://127.0.0.1:{metrics_port}", process, log_path, headers)


@contextmanager
def running_versions(
    config: Config,
    stable: Path,
    candidate: Path,
    report_dir: Path,
    *,
    candidate_settings: Mapping[str, str] | None = None,
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """Stable and candidate as two service processes (stable.log, candidate.log in `report_dir`), the
    candidate with `candidate_settings`; both stopped on the way out. With auth on, both accept the same
    throw-away key, so traffic through a proxy in front of them works."""
    api_key = secrets.token_urlsafe(24)
    with (
        running_service(config, stable, report_dir / "stable.log", api_key=api_key) as stable_process,
        running_service(
            config, candidate, report_dir / "candidate.log", settings=candidate_settings, api_key=api_key
        ) as candidate_process,
    ):
        yield stable_process, candidate_process
