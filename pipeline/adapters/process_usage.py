"""What a process tree (the service the load test started: its launcher, workers and metrics process)
used while something ran: CPU seconds and the peak of its summed resident memory, sampled from /proc with
the readings the metrics port exports (model_service/contract/processes.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from model_service.contract.processes import ProcessSample, children, read_process

SAMPLE_INTERVAL_S = 0.2
"""How often the tree's memory is summed: a peak shorter than this can be missed (say so in reports)."""


@dataclass(frozen=True)
class Usage:
    """CPU seconds spent and the largest summed RSS seen, over `processes` distinct pids."""

    cpu_seconds: float
    peak_rss_bytes: int
    processes: int
    samples: int


def tree(pid: int) -> list[ProcessSample]:
    """`pid` and every descendant still alive, read once."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            found.append(read_process(current))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        pending.extend(children(current))
    return found


@dataclass
class _Sampler:
    root: int
    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    peak_rss: int = 0
    samples: int = 0

    def sample(self, *, baseline: bool = False) -> None:
        readings = tree(self.root)
        for reading in readings:
            # A process born during the run counts from zero; one alive at the start from its reading then.
            self.first.setdefault(reading.pid, reading.cpu_seconds if baseline else 0.0)
            self.last[reading.pid] = reading.cpu_seconds
        self.peak_rss = max(self.peak_rss, sum(reading.resident_bytes for reading in readings))
        self.samples += 1

    def usage(self) -> Usage:
        cpu = sum(self.last[pid] - self.first[pid] for pid in self.last)
        return Usage(cpu, self.peak_rss, len(self.last), self.samples)


@contextmanager
def sampled_usage(pid: int, interval_s: float = SAMPLE_INTERVAL_S) -> Iterator[list[Usage]]:
    """Sample the tree under `pid` while the body runs; the yielded list holds its Usage afterwards. The CPU
    of a process that exits mid-run counts up to its last sample."""
    sampler = _Sampler(pid)
    sampler.sample(baseline=True)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            sampler.sample()

    thread = threading.Thread(target=loop, name="process-usage", daemon=True)
    thread.start()
    result: list[Usage] = []
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        sampler.sample()
        result.append(sampler.usage())
