"""Every process of the service as Prometheus series on the metrics port, read from /proc (Linux).

prometheus_client's ProcessCollector reads one process, and with several workers the metrics process
aggregates their multiprocess files only: a worker's own CPU, memory and descriptors would never reach a
scrape. So the metrics process reads each one: the launcher (with one worker, it serves the requests
itself), every child of it (the workers, uvicorn restarts included; with several workers also
multiprocessing's resource tracker) and itself. The series keep ProcessCollector's names, labelled
`process` (`launcher`, `worker`, `resource_tracker`, `metrics`) and `pid`; a pod's total is a `sum` over them. A process that exits between the listing and the reading is left out of that scrape.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PROC = Path("/proc")
LABELS = ("process", "pid")
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


def _role(pid: int, proc: Path) -> str:
    """A child of the launcher: this process, multiprocessing's resource tracker, or a worker."""
    if pid == os.getpid():
        return "metrics"
    try:
        command = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        command = b""
    return "resource_tracker" if b"multiprocessing.resource_tracker" in command else "worker"


def service_processes(launcher_pid: int, proc: Path = PROC) -> list[tuple[str, ProcessSample]]:
    """(role, readings) of the launcher, its children and this process; a process gone meanwhile is left out."""
    own = os.getpid()
    roles = [("launcher", launcher_pid)] + [(_role(pid, proc), pid) for pid in children(launcher_pid, proc)]
    if own != launcher_pid and own not in {pid for _, pid in roles}:
        roles.append(("metrics", own))
    samples = []
    for role, pid in roles:
        try:
            samples.append((role, read_process(pid, proc)))
        except (OSError, ValueError, IndexError):
            continue
    return samples


class ServiceProcessCollector(Collector):
    """ProcessCollector's series for every process of the service, labelled by role and pid."""

    def __init__(self, launcher_pid: int, proc: Path = PROC) -> None:
        self.launcher_pid = launcher_pid
        self.proc = proc

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        samples = service_processes(self.launcher_pid, self.proc)
        cpu = CounterMetricFamily(
            "process_cpu_seconds", "User and system CPU time spent, in seconds.", labels=LABELS
        )
        families = {
            "resident_bytes": GaugeMetricFamily(
                "process_resident_memory_bytes", "Resident memory size, in bytes.", labels=LABELS
            ),
            "virtual_bytes": GaugeMetricFamily(
                "process_virtual_memory_bytes", "Virtual memory size, in bytes.", labels=LABELS
            ),
            "start_time": GaugeMetricFamily(
                "process_start_time_seconds", "Start time since the Unix epoch, in seconds.", labels=LABELS
            ),
            "open_fds": GaugeMetricFamily("process_open_fds", "Open file descriptors.", labels=LABELS),
            "max_fds": GaugeMetricFamily(
                "process_max_fds", "Most open file descriptors allowed.", labels=LABELS
            ),
        }
        for role, sample in samples:
            labels = [role, str(sample.pid)]
            cpu.add_metric(labels, sample.cpu_seconds)
            for field, family in families.items():
                family.add_metric(labels, float(getattr(sample, field)))
        yield cpu
        yield from families.values()
