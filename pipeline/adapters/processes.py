"""Child processes that cannot outlive the pipeline, and cleanup that a second signal cannot cut short.

Every process a stage starts (services, Caddy, Locust, benchmark servers) is spawned here: in its own
session (so stopping it stops what it started) and with the kernel's parent-death signal set, so it
gets SIGTERM when the pipeline dies, even by SIGKILL. Stopping them runs with SIGINT and SIGTERM
deferred: CI runners and nox follow a SIGINT with a SIGTERM a fraction of a second later, which would
otherwise interrupt the cleanup half-way and leave processes listening.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, Any

from pipeline.errors import StageError

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_SHIELDED = (signal.SIGINT, signal.SIGTERM)


def die_with_parent() -> None:
    """Ask the kernel to send this process SIGTERM when its parent dies (Linux; a no-op elsewhere).

    Called in each child before it runs its program, and by `python -m pipeline` for itself, so that
    killing nox (or the CI step) alone also stops the pipeline, which then stops its children."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    prctl = getattr(libc, "prctl", None)
    if prctl is not None and prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0 and os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)  # the parent died before the request took effect


def spawn(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout: IO[Any] | int | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session, tied to this process's life (see the module docstring)."""
    return subprocess.Popen(
        list(command),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        start_new_session=True,
        preexec_fn=die_with_parent,  # noqa: PLW1509  (no threads start processes here)
    )


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then deliver the first one that came."""
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in _SHIELDED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            os.kill(os.getpid(), received[0])


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group (a service drains), then SIGKILL what is left after `timeout`."""
    if process.poll() is not None:
        return
    with signals_deferred():
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            process.wait()


def answers(url: str) -> bool:
    """True when `url` answers 200 right now."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def started_process(
    command: list[str],
    env: Mapping[str, str],
    log_path: Path,
    ready_url: str,
    *,
    what: str,
    timeout: float = READY_TIMEOUT_S,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `command` (output to `log_path`), yield once `ready_url` answers 200, and stop it with
    everything it started on the way out, whatever happens in the `with` body."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = spawn(command, env=env, stdout=log, cwd=cwd)
    try:
        deadline = time.monotonic() + timeout
        while not answers(ready_url):
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise StageError(f"{what} exited with {process.returncode}: {' | '.join(tail)}")
            if time.monotonic() > deadline:
                raise StageError(f"{what} was not ready within {timeout:.0f}s; log: {log_path}")
            time.sleep(0.1)
        yield process
    finally:
        stop(process)
