"""Run the reference service as a real process on 127.0.0.1, for the stages that need one.

The service is a separate program (`python -m model_service`); this module only starts it with the
environment's settings, waits for /readyz, and stops it with everything it started.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

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
    }


FALLBACK_DIR_ENV = "MODEL_SERVICE_FALLBACK_DIR"


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
    config: Config, api_key: str | None = None, **extra: str
) -> tuple[dict[str, str], dict[str, str]]:
    """MODEL_SERVICE_* variables for this environment, and the client headers they imply.

    With auth on, the service accepts `api_key`, or a throw-away key made here."""
    spec = config.service
    env = {**service_settings(config), **extra}
    headers: dict[str, str] = {}
    if spec.auth == "api-key":
        key = api_key or secrets.token_urlsafe(24)
        env["MODEL_SERVICE_API_KEY_SHA256"] = hashlib.sha256(key.encode()).hexdigest()
        headers["Authorization"] = f"Bearer {key}"
    return env, headers


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
) -> Iterator[ServiceProcess]:
    """Start the service on `model_dir`, yield once /readyz answers 200, stop it on the way out.

    `settings` adds MODEL_SERVICE_* variables (e.g. fault injection for a rehearsal). The process gets its
    own session so that stopping it also stops its workers, whatever happens in the `with` body.
    """
    port = port or free_port()
    while metrics_port is None or metrics_port == port:
        metrics_port = free_port()
    env_vars, headers = service_environment(config, api_key, **dict(settings or {}))
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
