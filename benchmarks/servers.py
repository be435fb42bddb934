"""The servers under test: how each starts, where it answers, what it is fed, what it costs in memory."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pipeline.adapters.processes import free_port, started_process

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Form:
    """One way of feeding a server: its label in the report, the path, the body, the connection counts."""

    label: str
    path: str
    body: bytes
    connections: tuple[int, ...]
    first_round_only: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    """Request headers besides the JSON Content-Type (the binary tensor data form's header length)."""


@dataclass(frozen=True)
class Server:
    key: str
    workers: int
    command: list[str]
    health: str
    forms: tuple[Form, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Running:
    url: str
    process: subprocess.Popen[bytes]


def clean_environment(**extra: str) -> dict[str, str]:
    """The environment minus any MODEL_SERVICE_* / PROMETHEUS_MULTIPROC_* setting: servers run as shipped.

    The interpreter's folder goes first on PATH: `mlflow models serve` runs `uvicorn` from PATH."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SERVICE_", "PROMETHEUS_MULTIPROC"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return {**env, **extra}


@contextmanager
def running(server: Server, log_path: Path) -> Iterator[Running]:
    """Start the server on a free port in its own session; yield once `health` answers 200; stop it all."""
    port = free_port()
    metrics_port = free_port()  # the model service's /metrics port, never a fixed one that may be taken
    command = [
        part.replace("{port}", str(port)).replace("{metrics_port}", str(metrics_port))
        for part in server.command
    ]
    url = f"http://127.0.0.1:{port}"
    env = clean_environment(**server.env)
    with started_process(
        command, env, log_path, url + server.health, what=server.key, timeout=READY_TIMEOUT_S, cwd=REPO
    ) as process:
        yield Running(url, process)


def post(url: str, body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
    """One request, to check a server answers the benchmark's body with 200 before loading it."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


@dataclass(frozen=True)
class Memory:
    rss_mb: float
    """Resident memory summed over the server's processes (launcher, master and workers)."""
    processes: int
    worker_rss_mb: float
    """Mean resident memory of the processes that do the serving (those without children)."""


def memory(pid: int) -> Memory:
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    rss: dict[int, float] = {}
    leaves = []
    for process in processes:
        try:
            rss[process.pid] = process.memory_info().rss / 2**20
            helper = any("resource_tracker" in part for part in process.cmdline())
            if not process.children() and not helper:
                leaves.append(process.pid)
        except psutil.NoSuchProcess:
            continue
    worker = sum(rss[pid] for pid in leaves) / len(leaves) if leaves else 0.0
    return Memory(round(sum(rss.values()), 1), len(rss), round(worker, 1))
