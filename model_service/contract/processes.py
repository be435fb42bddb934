"""A process' CPU, memory and descriptors, read from /proc (Linux): the metrics port exports them for every
process of the service (model_service/server/process_metrics.py) and the load test measures the service it
started with them (pipeline/adapters/process_usage.py), so the two read the same figures. Standard library
only, like the rest of the contract.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcessSample:
    """One process' readings."""

    pid: int
    ppid: int
    cpu_seconds: float
    resident_bytes: int
    virtual_bytes: int
    start_time: float
    open_fds: int
    max_fds: float


def _boot_time(proc: Path) -> float:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def _stat_fields(proc: Path, pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses): field 3 onwards."""
    text = (proc / str(pid) / "stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _max_fds(proc: Path, pid: int) -> float:
    for line in (proc / str(pid) / "limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return float("inf") if soft == "unlimited" else float(soft)
    return float("nan")


def read_process(pid: int, proc: Path = PROC) -> ProcessSample:
    """One process' readings (proc(5): utime and stime are fields 14-15, starttime 22, vsize 23, rss 24)."""
    fields = _stat_fields(proc, pid)
    return ProcessSample(
        pid=pid,
        ppid=int(fields[1]),
        cpu_seconds=(int(fields[11]) + int(fields[12])) / _TICKS,
        resident_bytes=int(fields[21]) * _PAGE,
        virtual_bytes=int(fields[20]),
        start_time=_boot_time(proc) + int(fields[19]) / _TICKS,
        open_fds=sum(1 for _ in (proc / str(pid) / "fd").iterdir()),
        max_fds=_max_fds(proc, pid),
    )


def children(pid: int, proc: Path = PROC) -> list[int]:
    """The pids whose parent is `pid`."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(_stat_fields(proc, int(entry.name))[1]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return sorted(found)
