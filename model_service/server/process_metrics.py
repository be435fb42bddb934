"""Every process of the service as Prometheus series on the metrics port, read from /proc (Linux).

prometheus_client's ProcessCollector reads one process, and with several workers the metrics process
aggregates their multiprocess files only: a worker's own CPU, memory and descriptors would never reach a
scrape. So the metrics process reads each one: the launcher (with one worker, it serves the requests
itself), every child of it (the workers, uvicorn restarts included; with several workers also
multiprocessing's resource tracker) and itself. The series keep ProcessCollector's names, labelled
`process` (`launcher`, `worker`, `resource_tracker`, `metrics`) and `pid`; a pod's total is a `sum` over
them. A process that exits between the listing and the reading is left out of that scrape. The readings
themselves are the contract's (model_service/contract/processes.py), which the load test reads too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from model_service.contract.processes import PROC, ProcessSample, children, read_process

LABELS = ("process", "pid")


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
