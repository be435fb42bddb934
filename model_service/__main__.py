"""`python -m model_service --model-dir DIR [--host H] [--port P] [--metrics-port M] [--workers N]`.

Checks the card and the model before binding a port (refusing to start with a one-line reason), then runs
uvicorn with the app factory. It gives prometheus_client a temporary multiprocess directory (removed on
exit), where every worker writes its values, and starts the metrics process
(model_service/server/metrics_server.py) on the metrics port, which reads them all: one /metrics for every
worker, never on the API's port.
"""

import argparse
import dataclasses
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from types import FrameType

import uvicorn
from pydantic import ValidationError

from model_service.contract.capture import LIVE_QUALITY_FILE, capture_dir_problem
from model_service.model.runtime import OnnxModel, load_card
from model_service.model.signature import verify_model_signature
from model_service.operations.logs import LOG_CONFIG
from model_service.operations.settings import ENV_PREFIX, ServiceSettings, unknown_variables
from model_service.protocol.errors import StartupError
from model_service.server.http import GuardedHttpToolsProtocol, HttpLimits, raise_descriptor_limit

EXIT_REFUSED = 2
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# uvicorn's loop factories by MODEL_SERVICE_EVENT_LOOP: asyncio with a listening socket per worker.
_LOOP_FACTORIES = {"asyncio": "model_service.server.event_loop:new_event_loop", "uvloop": "uvloop"}


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
    parser.add_argument("--port", type=int, help="port of the API (MODEL_SERVICE_PORT, default 8000)")
    parser.add_argument(
        "--metrics-port", type=int, help="port of /metrics (MODEL_SERVICE_METRICS_PORT, default 9000)"
    )
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


def _bind(host: str, port: int, variable: str, option: str) -> socket.socket | str:
    """A listening socket on the address, or a one-line reason when it cannot be bound (uvicorn would log
    a traceback-like error and exit 1); with the same SO_REUSEADDR as uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        return (
            f"{ENV_PREFIX}{variable}: cannot bind {host}:{port}: {exc.strerror}; "
            f"stop what holds it or choose another port ({option})"
        )
    sock.listen(socket.SOMAXCONN)
    return sock


def _check_folders(settings: ServiceSettings) -> None:
    """`StartupError` when a model folder setting names a file (reading `FILE/model.json` would raise
    NotADirectoryError, a traceback rather than a reason), or the capture's folder cannot be written (each
    worker would fail at start with a traceback)."""
    for variable, option, folder in (
        ("MODEL_DIR", " (--model-dir)", settings.model_dir),
        ("FALLBACK_DIR", "", settings.fallback_dir),
    ):
        if folder is not None and folder.exists() and not folder.is_dir():
            raise StartupError(
                f"{ENV_PREFIX}{variable}{option}: {folder} is a file; name the folder that holds model.json "
                "and the ONNX file"
            )
    problem = capture_dir_problem(settings.capture_dir) if settings.capture_dir is not None else None
    if problem is not None:
        raise StartupError(
            f"{ENV_PREFIX}CAPTURE_DIR: cannot capture in {problem}; mount a writable folder there or unset it"
        )


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
        _check_folders(settings)
        # The card, the model's signature (MODEL_SERVICE_SIGNATURES), the ONNX sha256 against the card and the
        # registry's record (MODEL_SERVICE_EXPECTED_SHA256), the model's inputs and outputs.
        card = load_card(settings.model_dir)
        verify_model_signature(settings.model_dir, settings.signatures, settings.signing_public_keys)
        OnnxModel(card, registered_sha256=settings.expected_sha256)
    except StartupError as exc:
        return _refuse(str(exc))
    api = _bind(settings.host, settings.port, "PORT", "--port")
    if isinstance(api, str):
        return _refuse(api)
    api.close()  # only a check: uvicorn binds it again
    metrics_socket = _bind(settings.host, settings.metrics_port, "METRICS_PORT", "--metrics-port")
    if isinstance(metrics_socket, str):
        return _refuse(metrics_socket)
    # Workers build their settings from the environment (app factory), so CLI values go there too.
    for key, value in overrides.items():
        os.environ[f"{ENV_PREFIX}{key.upper()}"] = str(value)
    metrics_dir = None
    if _MULTIPROC_ENV not in os.environ:
        # Before the app (and prometheus_client) is imported: the value class is chosen at import.
        metrics_dir = tempfile.mkdtemp(prefix="model-service-metrics-")
        os.environ[_MULTIPROC_ENV] = metrics_dir
    limits = HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_pipelined=settings.max_pipelined,
        max_connections=settings.max_connections,
    )
    # The metrics process and the workers inherit it; each keeps its connections below it (http.py).
    raise_descriptor_limit()
    metrics_process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "model_service.server.metrics_server",
            "--fd",
            str(metrics_socket.fileno()),
            "--launcher-pid",
            str(os.getpid()),
            # Passed rather than read from the environment: the settings' imports would double its memory.
            "--http-limits",
            json.dumps(dataclasses.asdict(limits)),
            "--keep-alive-timeout-s",
            str(settings.keep_alive_timeout_s),
            # The capture's live-quality gauges (pipeline evaluate), appended to /metrics when present.
            *(["--textfile", str(settings.capture_dir / LIVE_QUALITY_FILE)] if settings.capture_dir else []),
        ],
        pass_fds=(metrics_socket.fileno(),),
    )
    metrics_socket.close()  # the metrics process holds its own copy
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
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
            log_config=LOG_CONFIG,  # uvicorn's and asyncio's lines in the JSON log, tracebacks as a field
            timeout_graceful_shutdown=settings.graceful_timeout_s,
            lifespan="on",
            # httptools with the head limits and read deadlines uvicorn lacks (model_service/server/http.py).
            http=functools.partial(GuardedHttpToolsProtocol, limits=limits),  # type: ignore[arg-type]
            timeout_keep_alive=settings.keep_alive_timeout_s,
            loop=_LOOP_FACTORIES[settings.event_loop],
        )
    finally:
        # The workers are gone: nothing is left to scrape. It ignores SIGTERM (scrapes go on while they drain).
        metrics_process.kill()
        metrics_process.wait()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
