"""`python -m model_service --model-dir DIR [--host H] [--port P] [--workers N]`.

Checks the card and the model before binding a port (refusing to start with a one-line reason), then runs
uvicorn with the app factory. With several workers it gives prometheus_client a temporary multiprocess
directory, so one /metrics covers every worker, and removes it on exit.
"""

import argparse
import functools
import os
import shutil
import signal
import socket
import sys
import tempfile
from types import FrameType

import uvicorn
from pydantic import ValidationError

from model_service.card import load_card
from model_service.errors import StartupError
from model_service.http import GuardedHttpToolsProtocol, HttpLimits
from model_service.runtime import OnnxModel
from model_service.settings import ENV_PREFIX, ServiceSettings, unknown_variables

EXIT_REFUSED = 2
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _parse(argv: list[str] | None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        prog="python -m model_service",
        description="Serve one exported model (model.json + model.onnx). Other settings: MODEL_SERVICE_* "
        "variables, see docs/service.md.",
    )
    parser.add_argument(
        "--model-dir", help="folder with model.json and the ONNX file (MODEL_SERVICE_MODEL_DIR)"
    )
    parser.add_argument("--host", help="interface to bind (MODEL_SERVICE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (MODEL_SERVICE_PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (MODEL_SERVICE_WORKERS, default 1)")
    return {key: value for key, value in vars(parser.parse_args(argv)).items() if value is not None}


def _settings_error(error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    where = f"{ENV_PREFIX}{field.upper()}: " if field else ""
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}{first['msg']}{more}"


def _refuse(reason: str) -> int:
    sys.stderr.write(f"model_service: refusing to start: {reason}\n")
    return EXIT_REFUSED


def _port_in_use(host: str, port: int) -> str | None:
    """A one-line reason when the address cannot be bound (uvicorn would log a traceback-like error and
    exit 1); bound and released at once, with the same SO_REUSEADDR as uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return (
                f"{ENV_PREFIX}PORT: cannot bind {host}:{port}: {exc.strerror}; "
                "stop what holds it or choose another port (--port)"
            )
    return None


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises SIGTERM after its graceful shutdown; end with status 0 rather than killed-by-signal.
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    overrides = _parse(argv)
    unknown = unknown_variables(os.environ)
    if unknown is not None:
        return _refuse(unknown)
    try:
        settings = ServiceSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        return _refuse(_settings_error(exc))
    try:
        OnnxModel(load_card(settings.model_dir))  # verifies the card, the sha256 and the model's signature
    except StartupError as exc:
        return _refuse(str(exc))
    in_use = _port_in_use(settings.host, settings.port)
    if in_use is not None:
        return _refuse(in_use)
    # Workers build their settings from the environment (app factory), so CLI values go there too.
    for key, value in overrides.items():
        os.environ[f"{ENV_PREFIX}{key.upper()}"] = str(value)
    metrics_dir = None
    if settings.workers > 1 and _MULTIPROC_ENV not in os.environ:
        metrics_dir = tempfile.mkdtemp(prefix="model-service-metrics-")
        os.environ[_MULTIPROC_ENV] = metrics_dir
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    limits = HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
    )
    try:
        uvicorn.run(
            "model_service.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            access_log=False,  # the service writes its own JSON line per request
            # Nothing here reads the client address, so X-Forwarded-* rewriting would be work for nothing;
            # and no Server header advertising the software.
            proxy_headers=False,
            server_header=False,
            log_level="warning",
            timeout_graceful_shutdown=settings.graceful_timeout_s,
            lifespan="on",
            # httptools with the head limits and read deadlines uvicorn lacks (model_service/http.py).
            http=functools.partial(GuardedHttpToolsProtocol, limits=limits),  # type: ignore[arg-type]
            timeout_keep_alive=settings.keep_alive_timeout_s,
            loop=settings.event_loop,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
