"""wrk as the load generator: run it with benchmarks/post_row.lua and parse what it prints."""

from __future__ import annotations

import os
import re
import resource
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "post_row.lua"
INSTALL_HINT = "apt-get update && apt-get install -y wrk  (Debian/Ubuntu; with sudo when not root)"

_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTALS = re.compile(r"^BENCH requests=(\d+) duration_us=(\d+)", re.MULTILINE)
_ERRORS = re.compile(
    r"^BENCH errors connect=(\d+) read=(\d+) write=(\d+) status=(\d+) timeout=(\d+)", re.MULTILINE
)
_LATENCY = re.compile(r"^BENCH latency_us p50=(\d+) p95=(\d+) p99=(\d+) max=(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    loadgen_cpu_s: float = 0.0
    """CPU seconds wrk itself used (user + system), from the kernel's accounting of the child."""

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def parse(output: str) -> WrkResult:
    """Parse wrk's stdout with the BENCH lines that post_row.lua's done() hook prints."""
    totals, errors, latency = _TOTALS.search(output), _ERRORS.search(output), _LATENCY.search(output)
    if totals is None or errors is None or latency is None:
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise ValueError(f"wrk output lacks the BENCH lines of {SCRIPT.name}: {tail!r}")
    requests, duration_us = int(totals[1]), int(totals[2])
    duration_s = duration_us / 1e6
    rps_line = _RPS.search(output)
    rps = float(rps_line[1]) if rps_line else (requests / duration_s if duration_s else 0.0)
    connect, read, write, status, timeout = (int(group) for group in errors.groups())
    p50, p95, p99, worst = (int(group) / 1000 for group in latency.groups())
    return WrkResult(
        requests=requests,
        duration_s=duration_s,
        rps=rps,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=worst,
        non_2xx=status,
        socket_errors=connect + read + write + timeout,
    )


def run(
    wrk: str,
    url: str,
    body_file: Path,
    *,
    connections: int,
    duration_s: float,
    headers: Mapping[str, str] | None = None,
    threads: int = 1,
) -> WrkResult:
    """One wrk run posting the body of `body_file` to `url`; its own CPU time is measured too."""
    command: Sequence[str] = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "5s",
        "-s",
        str(SCRIPT),
        *(arg for key, value in (headers or {}).items() for arg in ("-H", f"{key}: {value}")),
        url,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "BENCH_BODY_FILE": str(body_file)},
        timeout=duration_s + 60,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    result = parse(done.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkResult(**{**result.__dict__, "loadgen_cpu_s": round(cpu, 3)})
