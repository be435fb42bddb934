"""Real processes: `python -m model_service` on 127.0.0.1 with free ports, always stopped afterwards."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests._oidc import keys  # noqa: F401 - a fixture (the local OIDC key server): pytest finds it here
from tests._service_models import (  # noqa: F401 - fixtures: pytest finds them in this module
    iris_model_dir,
    mixed_model_dir,
    mixed_strict_model_dir,
    regression_model_dir,
)

START_TIMEOUT_S = 30


@pytest.fixture(scope="session")
def model_dir(plain_model_dir: Path) -> Path:
    return plain_model_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(**settings: object) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SERVICE_", "PROMETHEUS_MULTIPROC"))
    }
    env.update({f"MODEL_SERVICE_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def _run_service(model_dir: Path, *args: str, **settings: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "model_service", "--model-dir", str(model_dir), *args]
    return subprocess.run(
        command, env=service_env(**settings), capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def run_service() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the CLI to completion (for start-up refusals): run_service(model_dir, *args, **settings)."""
    return _run_service


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    metrics_url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_server(model_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers with settings as keyword arguments (`model`: another model folder); each is stopped
    in the finaliser."""
    servers: list[Server] = []

    def start(*args: str, model: Path | None = None, **settings: object) -> Server:
        port, metrics_port = free_port(), free_port()
        command = [
            sys.executable,
            "-m",
            "model_service",
            "--model-dir",
            str(model or model_dir),
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            *args,
        ]
        # The child keeps its own copy of the descriptor; ours closes at once.
        with (tmp_path / f"server-{port}.log").open("w") as log:
            process = subprocess.Popen(
                command, env=service_env(**settings), stdout=log, stderr=log, text=True
            )
        server = Server(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}")
        servers.append(server)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / f"server-{port}.log").read_text()
            try:
                if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"service not ready after {START_TIMEOUT_S}s")

    yield start
    for server in servers:
        server.stop()
