"""`python -m benchmarks.soak` (`nox -s soak`): mixed traffic for minutes, with slow and hostile clients
now and then, against one service process on 127.0.0.1; RSS and open file descriptors must stay flat
and no answer may be a server error.

Traffic: wrk (8 connections, each waiting PACE_MS after every answer, one row per /v1/predict) in 30 s
segments: load with headroom, never an overload the service should shed. Every 10 s a burst of v2
requests, malformed and wrong-typed bodies, probes, an oversized head, and slow clients (a trickled head
and a trickled body) that the service must drop; each of those has one expected status. Samples of RSS
(launcher and workers), of the server's open descriptors, and of how long its processes waited for a
CPU are taken every 10 s; the first minute is warm-up. The serving process's CPU and run-queue times are
also read every 20 ms, so that each shed 503 can be checked against what the process did just before:
waiting for a CPU that other load had (the machine's doing), or running (the service's own).

Over 400 lines on purpose: the traffic, the hostile clients and the samplers run in one timeline that
the verdict reads.
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from benchmarks.run import _model
from model_service.operations.settings import ServiceSettings
from pipeline.adapters.service_process import ServiceProcess, running_service
from pipeline.config import load_config
from pipeline.console import Reporter
from pipeline.workspace import Workspace

WARMUP_S = 60.0
SAMPLE_EVERY_S = 10.0
SEGMENT_S = 30
CONNECTIONS = 8
PACE_MS = 2
"""Each wrk connection waits this long after every answer: at most 8 / 2 ms = 4,000 requests/s, about
half of what one worker serves on a free core, so the service has headroom and should not shed."""
RSS_BOUND_MB = 20.0
"""Largest growth of resident memory after warm-up (max - first sample) before the soak fails."""
FD_BOUND = 10
"""Largest growth of open descriptors after warm-up (slow clients in flight at a sample account for some)."""
SHED_BOUND = 1e-3
"""Most 503 `overloaded` answers per answer (1 in 1,000). With headroom the service sheds only when other
load keeps its process off the CPU for most of the queueing-delay bound (each such shed must show it, see
`Shed`); more than this many means the machine was too busy for the soak to say anything."""
QUEUE_DELAY_BOUND_S = ServiceSettings.model_fields["max_queue_delay_ms"].default / 1000
"""The service sheds a request that waited this long for its event loop (MODEL_SERVICE_MAX_QUEUE_DELAY_MS)."""
SCHED_EVERY_S = 0.02
SHED = "shed"
"""Key of 503 `overloaded` answers (load shedding with Retry-After), counted apart from other statuses."""
STATUS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) answers = {} end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("SOAK_BODY_FILE")):read("*a")
local pace = tonumber(os.getenv("SOAK_PACE_MS"))
function delay() return pace end
function response(status, headers, body)
  local key = tostring(status)
  if status == 503 and body:find('"overloaded"', 1, true) then key = "shed" end
  answers[key] = (answers[key] or 0) + 1
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for key, n in pairs(t:get("answers")) do io.write(string.format("answers %s %d\\n", key, n)) end
  end
  local e = summary.errors
  io.write(string.format("socket errors %d\\n", e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class Sample:
    t_s: float
    rss_mb: float
    fds: int
    run_queue_ms: float
    """Time the server's processes waited for a CPU since the previous sample."""
    load1: float


@dataclass
class Traffic:
    """What the clients saw. `answers` is keyed by status, with SHED for 503 `overloaded`."""

    answers: Counter[str] = field(default_factory=Counter)
    socket_errors: int = 0
    unexpected: list[str] = field(default_factory=list)
    """Burst requests answered otherwise than expected (a shed is not unexpected: it is counted as one)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    """The slow clients' answers arrive on other threads."""

    def expect(self, what: str, expected: int, status: int, body: bytes) -> None:
        key = SHED if status == 503 and b'"overloaded"' in body else str(status)
        with self.lock:
            self.answers[key] += 1
            if key not in (SHED, str(expected)):
                self.unexpected.append(f"{what}: {status} (expected {expected})")


@dataclass(frozen=True)
class Shed:
    """A 503 in the request log, and what the serving process did in the queueing-delay bound before it."""

    ts: float
    """time.time() of the answer."""
    cpu_s: float
    """Time the serving process ran on a CPU in that window."""
    run_queue_s: float
    """Time it was runnable but waited for a CPU: other load on the machine had the cores."""
    window_s: float
    """The window the two figures cover: the sched samples around the bound before the answer."""

    @property
    def descheduled(self) -> bool:
        """The process waited for a CPU for at least half the window: the wait was the machine's, not the
        service's own work."""
        return self.run_queue_s >= self.window_s / 2


def judge(samples: Sequence[Sample], traffic: Traffic, sheds: Sequence[Shed]) -> list[str]:
    """The soak's failures, each naming the figure and its bound; empty when it passed."""
    steady = [sample for sample in samples if sample.t_s >= WARMUP_S] or list(samples[-2:])
    failures = []
    rss_growth = max(s.rss_mb for s in steady) - steady[0].rss_mb
    if rss_growth > RSS_BOUND_MB:
        failures.append(f"RSS grew {rss_growth:.1f} MB after warm-up > {RSS_BOUND_MB:g} MB")
    fd_growth = max(s.fds for s in steady) - steady[0].fds
    if fd_growth > FD_BOUND:
        failures.append(f"open descriptors grew by {fd_growth} after warm-up > {FD_BOUND}")
    errors = {key: n for key, n in traffic.answers.items() if key != SHED and int(key) >= 500}
    if errors:
        failures.append(f"server errors {errors} > 0 (a shed 503 `overloaded` is counted apart)")
    total = sum(traffic.answers.values())
    shed = traffic.answers[SHED]
    if shed > SHED_BOUND * total:
        failures.append(f"shed {shed} of {total} answers > {SHED_BOUND:g} of them: the machine is too busy")
    own = sum(1 for one in sheds if not one.descheduled)
    if own:
        failures.append(f"{own} 503s while the service had its CPU (not waiting for one) > 0")
    if traffic.socket_errors:
        failures.append(f"wrk socket errors (connect, read, write, timeout) {traffic.socket_errors} > 0")
    failures.extend(f"unexpected answer: {what}" for what in traffic.unexpected)
    return failures


def sheds_in_log(
    log_lines: Iterable[str], sched: Sequence[tuple[float, int, int]], bound_s: float
) -> list[Shed]:
    """Each 503 of the service log with the serving process's CPU and run-queue time over the `bound_s`
    before it, from `sched` samples (time.time(), CPU ns, run-queue ns) in time order."""
    sched_times = [sample[0] for sample in sched]
    found = []
    for line in log_lines:
        if '"event":"request"' not in line or '"status":503' not in line:
            continue
        ts = json.loads(line)["ts"]
        first = sched[max(0, bisect.bisect_right(sched_times, ts - bound_s) - 1)]
        last = sched[min(len(sched) - 1, bisect.bisect_left(sched_times, ts))]
        found.append(
            Shed(ts, (last[1] - first[1]) / 1e9, (last[2] - first[2]) / 1e9, max(last[0] - first[0], bound_s))
        )
    return found


def _server_stats(pid: int) -> tuple[float, int, int]:
    """RSS in MB, open descriptors and run-queue wait in ns, summed over the launcher and its workers."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    run_queue = sum(_schedstat(p.pid)[1] for p in processes)
    return sum(p.memory_info().rss for p in processes) / 2**20, sum(p.num_fds() for p in processes), run_queue


def _schedstat(pid: int) -> tuple[int, int]:
    """Nanoseconds the process's main thread ran on a CPU, and waited runnable for one."""
    cpu, waited, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(cpu), int(waited)


def _watch_scheduling(pid: int, stop: threading.Event, out: list[tuple[float, int, int]]) -> None:
    while not stop.is_set():
        cpu, waited = _schedstat(pid)
        out.append((time.time(), cpu, waited))
        stop.wait(SCHED_EVERY_S)


@dataclass(frozen=True)
class BurstTarget:
    model: str
    """The model's name in the v2 routes."""
    row: list[float]


def _burst(url: str, metrics_url: str, target: BurstTarget, traffic: Traffic) -> threading.Thread:
    """One burst of the odd clients, each with its expected status; returns the thread that waits for the
    slow clients to be dropped (408)."""
    address = _address(url)
    name = target.model
    v2 = {
        "inputs": [{"name": "input", "shape": [1, len(target.row)], "datatype": "FP32", "data": target.row}]
    }
    client = http.client.HTTPConnection(*address, timeout=15)
    try:
        for what, method, path, body, expected in (
            ("v2 infer", "POST", f"/v2/models/{name}/infer", json.dumps(v2), 200),
            ("v2 outputs: []", "POST", f"/v2/models/{name}/infer", json.dumps({**v2, "outputs": []}), 422),
            ("v2 list as datatype", "POST", f"/v2/models/{name}/infer",
             json.dumps({"inputs": [{**v2["inputs"][0], "datatype": ["FP32"]}]}), 422),
            ("malformed JSON", "POST", "/v1/predict", "{", 400),
            ("/healthz", "GET", "/healthz", None, 200),
            ("/readyz", "GET", "/readyz", None, 200),
            ("/metrics on the API port", "GET", "/metrics", None, 404),
        ):  # fmt: skip
            client.request(method, path, body, {"content-type": "application/json"} if body else {})
            answer = client.getresponse()
            traffic.expect(what, expected, answer.status, answer.read())
    finally:
        client.close()
    scrape = http.client.HTTPConnection(*_address(metrics_url), timeout=15)
    try:
        scrape.request("GET", "/metrics")
        answer = scrape.getresponse()
        traffic.expect("/metrics on the metrics port", 200, answer.status, answer.read())
    finally:
        scrape.close()
    trickled_head = socket.create_connection(address, timeout=30)
    trickled_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    trickled_body = socket.create_connection(address, timeout=30)
    trickled_body.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    with socket.create_connection(address, timeout=30) as oversized:
        oversized.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536)
        traffic.expect("oversized head", 431, *_raw_answer(oversized))

    def wait_for_drop() -> None:  # the service must answer 408 and close both
        for what, sock in (("trickled head", trickled_head), ("trickled body", trickled_body)):
            with sock:
                traffic.expect(what, 408, *_raw_answer(sock))

    waiter = threading.Thread(target=wait_for_drop, daemon=True)
    waiter.start()
    return waiter


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def _raw_answer(sock: socket.socket) -> tuple[int, bytes]:
    """Status and bytes of an answer read until the server closes; status 0 when it sent nothing."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pass
    raw = b"".join(chunks)
    return (int(raw.split(b" ")[1]) if raw else 0), raw


class _Sampler:
    """RSS, descriptors and run-queue wait of the server, every SAMPLE_EVERY_S."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.began = time.monotonic()
        self.next = self.began
        self.run_queue = _server_stats(pid)[2]
        self.samples: list[Sample] = []

    def take(self) -> None:
        rss, fds, run_queue = _server_stats(self.pid)
        elapsed = time.monotonic() - self.began
        self.samples.append(Sample(elapsed, rss, fds, (run_queue - self.run_queue) / 1e6, os.getloadavg()[0]))
        self.run_queue = run_queue
        self.next += SAMPLE_EVERY_S


def _drive(
    wrk: str, service: ServiceProcess, scratch: Path, *, minutes: float, burst: BurstTarget, sampler: _Sampler
) -> Traffic:
    """wrk in segments, a burst of odd clients and a sample every SAMPLE_EVERY_S, for `minutes`."""
    traffic = Traffic()
    waiters = []
    end = sampler.began + minutes * 60
    while time.monotonic() < end:
        seconds = max(1, min(SEGMENT_S, int(end - time.monotonic())))
        load = subprocess.Popen(
            [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s",
             "-s", str(scratch / "status.lua"), f"{service.url}/v1/predict"],
            stdout=subprocess.PIPE,
            text=True,
            env={"SOAK_BODY_FILE": str(scratch / "body.json"), "SOAK_PACE_MS": str(PACE_MS)},
        )  # fmt: skip
        segment_end = time.monotonic() + seconds
        while time.monotonic() < segment_end:
            waiters.append(_burst(service.url, service.metrics_url, burst, traffic))
            if time.monotonic() >= sampler.next:
                sampler.take()
            time.sleep(max(0.0, min(SAMPLE_EVERY_S, segment_end - time.monotonic())))
        output, _ = load.communicate(timeout=60)
        with traffic.lock:
            for key, n in re.findall(r"^answers (\w+) (\d+)$", output, re.MULTILINE):
                traffic.answers[key] += int(n)
            traffic.socket_errors += sum(
                int(n) for n in re.findall(r"^socket errors (\d+)$", output, re.MULTILINE)
            )
    for waiter in waiters:  # the last burst's slow clients are dropped by the read deadlines
        waiter.join(timeout=30)
    sampler.take()
    return traffic


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default: 10)")
    parser.add_argument("--env", default="dev", help="environment whose model is served (default: dev)")
    parser.add_argument("--workdir", type=Path, default=Path(), help="workspace root (default: .)")
    args = parser.parse_args(argv)
    reporter = Reporter()
    wrk = shutil.which("wrk")
    if wrk is None:
        reporter.error("wrk is not installed (Debian package `wrk`)")
        return 2
    workdir = args.workdir.resolve()
    config = load_config(args.env, workdir / "environments")
    with reporter.stage("soak: model", config.name):
        model_dir = _model(config, Workspace(workdir), reporter)
    rows = json.loads((model_dir / "eval.json").read_text())["rows"]
    burst = BurstTarget(json.loads((model_dir / "model.json").read_text())["name"], rows[0])
    sched: list[tuple[float, int, int]] = []
    load_before = os.getloadavg()
    log = Workspace(workdir).reports / "soak" / f"service-{time.strftime('%Y%m%dT%H%M%S')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    reporter.note(f"service log: {log}")
    with (
        tempfile.TemporaryDirectory(prefix="soak-") as scratch,
        running_service(config, model_dir, log) as service,
    ):
        (Path(scratch) / "body.json").write_text(json.dumps({"instances": rows[:1]}))
        (Path(scratch) / "status.lua").write_text(STATUS_LUA)
        stop = threading.Event()
        # With one worker (dev) uvicorn serves in the launcher's main thread.
        watcher = threading.Thread(
            target=_watch_scheduling, args=(service.process.pid, stop, sched), daemon=True
        )
        watcher.start()
        sampler = _Sampler(service.process.pid)
        try:
            traffic = _drive(wrk, service, Path(scratch), minutes=args.minutes, burst=burst, sampler=sampler)
        finally:
            stop.set()
            watcher.join()
    with log.open() as lines:
        sheds = sheds_in_log(lines, sched, QUEUE_DELAY_BOUND_S)
    _report(reporter, sampler.samples, traffic, sheds, load_before)
    failures = judge(sampler.samples, traffic, sheds)
    for failure in failures:
        reporter.error(f"soak failed: {failure}")
    return 1 if failures else 0


def _report(
    reporter: Reporter,
    samples: Sequence[Sample],
    traffic: Traffic,
    sheds: Sequence[Shed],
    load_before: tuple[float, float, float],
) -> None:
    reporter.table(
        ["t s", "RSS MB", "open fds", "run-queue wait ms", "load 1 min"],
        [
            (f"{s.t_s:.0f}", f"{s.rss_mb:.1f}", s.fds, f"{s.run_queue_ms:.0f}", f"{s.load1:.1f}")
            for s in samples
        ],
    )
    reporter.note(
        f"answers by status: {dict(sorted(traffic.answers.items()))}; wrk socket errors: {traffic.socket_errors}"
    )
    steady = [s for s in samples if s.t_s >= WARMUP_S] or list(samples[-2:])
    reporter.note(
        f"after warm-up: RSS {steady[0].rss_mb:.1f} → max {max(s.rss_mb for s in steady):.1f} MB "
        f"(bound +{RSS_BOUND_MB:g}); fds {steady[0].fds} → max {max(s.fds for s in steady)} "
        f"(bound +{FD_BOUND}); shed {traffic.answers[SHED]} (bound {SHED_BOUND:g} of answers)"
    )
    reporter.note(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}, after: "
                  f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    if sheds:
        reporter.note(
            f"503s in the service log: {len(sheds)}, {sum(one.descheduled for one in sheds)} of them with the "
            f"process waiting for a CPU for most of the {QUEUE_DELAY_BOUND_S * 1000:g} ms before"
        )
        reporter.table(
            ["at (UTC)", "window ms", "on CPU ms", "waiting for a CPU ms"],
            [
                (time.strftime("%H:%M:%S", time.gmtime(one.ts)) + f".{int(one.ts % 1 * 1000):03d}",
                 f"{one.window_s * 1000:.0f}", f"{one.cpu_s * 1000:.0f}", f"{one.run_queue_s * 1000:.0f}")
                for one in sheds
            ],
        )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
