"""The servers under test: how each starts, where it answers, what it is fed, what it costs in memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from pipeline.adapters.processes import free_port, spawn, stop
from pipeline.errors import StageError

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 180.0
"""From process start to the first 200: kserve's spawned workers alone take 10-30 s on a loaded machine."""
POLL_INTERVAL_S = 0.02
PORTS = ("{port}", "{grpc_port}", "{metrics_port}")
"""Placeholders in a server's command and environment, each replaced by a free port at every start."""


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
    """How to start one server. It is ready when its first form's body gets a 200 (the first prediction),
    and the time from spawning the command to that answer is its start-up time."""

    key: str
    workers: int
    command: list[str]
    forms: tuple[Form, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    versions: Mapping[str, str] = field(default_factory=dict)
    """Versions of the packages that make up the server (peers: their venv's)."""


@dataclass(frozen=True)
class Running:
    url: str
    process: subprocess.Popen[bytes]
    startup_s: float
    """Seconds from spawning the command to the first 200 answer to the first form's body."""
    first_answer: bytes


def clean_environment(**extra: str) -> dict[str, str]:
    """The environment minus any MODEL_SERVICE_* / PROMETHEUS_MULTIPROC_* setting: servers run as shipped.

    The interpreter's folder goes first on PATH: `mlflow models serve` runs `uvicorn` from PATH."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MODEL_SERVICE_", "PROMETHEUS_MULTIPROC"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return {**env, **extra}


def with_ports(text: str, ports: Mapping[str, int]) -> str:
    for placeholder, port in ports.items():
        text = text.replace(placeholder, str(port))
    return text


@contextmanager
def running(server: Server, log_path: Path) -> Iterator[Running]:
    """Start the server on free ports in its own session; yield once its first form's body is answered
    with 200, with the time that took; stop it and everything it started on the way out."""
    ports = {placeholder: free_port() for placeholder in PORTS}
    command = [with_ports(part, ports) for part in server.command]
    env = clean_environment(**{key: with_ports(value, ports) for key, value in server.env.items()})
    url = f"http://127.0.0.1:{ports['{port}']}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = spawn(command, env=env, stdout=log, cwd=server.cwd)
    try:
        first = server.forms[0]
        answer = _first_answer(process, url + first.path, first, log_path, what=server.key)
        yield Running(url, process, round(time.perf_counter() - started, 2), answer)
    finally:
        stop(process)


def _first_answer(
    process: subprocess.Popen[bytes], url: str, form: Form, log_path: Path, *, what: str
) -> bytes:
    """Post `body` every POLL_INTERVAL_S until it gets a 200 (refused connections and loading-time errors
    are retried); StageError with the last error and the log's tail when the process exits or time is up."""
    deadline = time.perf_counter() + READY_TIMEOUT_S
    last_error = "no answer"
    while True:
        try:
            return post(url, form.body, form.headers, timeout=5)
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}: {exc.read()[:200]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        if process.poll() is not None:
            tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
            raise StageError(f"{what} exited with {process.returncode} before answering: {tail}")
        if time.perf_counter() > deadline:
            tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-2:])
            raise StageError(
                f"{what} gave no 200 to the benchmark's body within {READY_TIMEOUT_S:.0f} s "
                f"(last: {last_error}); its log ends: {tail}"
            )
        time.sleep(POLL_INTERVAL_S)


def post(url: str, body: bytes, headers: Mapping[str, str] | None = None, timeout: float = 30) -> bytes:
    """One request with a JSON body (and `headers`); the answer's body when the status is 200, HTTPError
    otherwise."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if response.status != 200:
            raise urllib.error.HTTPError(url, response.status, "not 200", response.headers, None)
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


def cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time (user + system) used so far by each process of the server's tree, by process id."""
    root = psutil.Process(pid)
    out = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            out[process.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return out


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the tree used between two readings (a process started in between counts from zero)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
