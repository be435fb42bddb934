"""`python -m benchmarks.soak` (`nox -s soak`): mixed traffic for minutes, with slow and hostile clients
now and then, against one service process on 127.0.0.1; RSS and open file descriptors must stay flat
and no answer may be a 5xx.

Traffic: wrk (4 connections: load, not an overload the service would shed; one row per /v1/predict)
in 30 s segments; every 10 s a burst of v2 requests, malformed and wrong-typed bodies, probes, an
oversized head, and slow clients (a trickled head and a trickled body) that the service must drop.
Samples of RSS (launcher and workers) and of the server's open descriptors are taken every 10 s; the
first minute is warm-up.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from benchmarks.run import _model
from pipeline.adapters.service_process import running_service
from pipeline.config import load_config
from pipeline.console import Reporter
from pipeline.workspace import Workspace

WARMUP_S = 60.0
SAMPLE_EVERY_S = 10.0
SEGMENT_S = 30
RSS_BOUND_MB = 20.0
"""Largest growth of resident memory after warm-up (max - first sample) before the soak fails."""
FD_BOUND = 10
"""Largest growth of open descriptors after warm-up (slow clients in flight at a sample account for some)."""
STATUS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("SOAK_BODY_FILE")):read("*a")
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do io.write(string.format("status %d %d\\n", status, n)) end
  end
  io.write(string.format("timeouts %d\\n", summary.errors.timeout))
end
"""


def _server_stats(pid: int) -> tuple[float, int]:
    """RSS in MB and open descriptors, summed over the launcher and its workers."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes) / 2**20, sum(p.num_fds() for p in processes)


def _slow_and_hostile(
    url: str, metrics_url: str, name: str, rows: list[list[float]], statuses: Counter[int]
) -> None:
    """One burst of the odd clients; statuses of the answers that come over HTTP go into `statuses`."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    v2 = {"inputs": [{"name": "input", "shape": [1, len(rows[0])], "datatype": "FP32", "data": rows[0]}]}
    with httpx.Client(base_url=url, timeout=15) as client:
        for body in (v2, {**v2, "outputs": []}, {"inputs": [{**v2["inputs"][0], "datatype": ["FP32"]}]}):
            statuses[client.post(f"/v2/models/{name}/infer", json=body).status_code] += 1
        statuses[
            client.post("/v1/predict", content=b"{", headers={"content-type": "application/json"}).status_code
        ] += 1
        for path in ("/healthz", "/readyz"):
            statuses[client.get(path).status_code] += 1
        statuses[client.get(f"{metrics_url}/metrics").status_code] += 1  # a scrape, on the metrics port
    trickled_head = socket.create_connection(address, timeout=30)
    trickled_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    trickled_body = socket.create_connection(address, timeout=30)
    trickled_body.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    with socket.create_connection(address, timeout=30) as oversized:
        oversized.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536)
        statuses[int(oversized.recv(64).split(b" ")[1])] += 1

    def wait_for_drop() -> None:  # the service must answer 408 and close both, whatever happens here
        for sock in (trickled_head, trickled_body):
            with sock:
                answer = sock.recv(64)
                statuses[int(answer.split(b" ")[1]) if answer else 0] += 1

    threading.Thread(target=wait_for_drop, daemon=True).start()


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
    name = json.loads((model_dir / "model.json").read_text())["name"]
    statuses: Counter[int] = Counter()
    samples: list[tuple[float, float, int]] = []
    timeouts = 0
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        tmp = Path(scratch)
        (tmp / "body.json").write_text(json.dumps({"instances": rows[:1]}))
        (tmp / "status.lua").write_text(STATUS_LUA)
        log = Workspace(workdir).reports / "soak" / f"service-{time.strftime('%Y%m%dT%H%M%S')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        reporter.note(f"service log: {log}")
        with running_service(config, model_dir, log) as service:
            began = time.monotonic()
            end = began + args.minutes * 60
            next_sample = began
            while time.monotonic() < end:
                seconds = max(1, min(SEGMENT_S, int(end - time.monotonic())))
                load = subprocess.Popen(
                    [
                        wrk,
                        "-t1",
                        "-c4",
                        f"-d{seconds}s",
                        "--timeout",
                        "10s",
                        "-s",
                        str(tmp / "status.lua"),
                        f"{service.url}/v1/predict",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                    env={"SOAK_BODY_FILE": str(tmp / "body.json")},
                )
                segment_end = time.monotonic() + seconds
                while time.monotonic() < segment_end:
                    _slow_and_hostile(service.url, service.metrics_url, name, rows, statuses)
                    if time.monotonic() >= next_sample:
                        rss, fds = _server_stats(service.process.pid)
                        samples.append((time.monotonic() - began, rss, fds))
                        next_sample += SAMPLE_EVERY_S
                    time.sleep(max(0.0, min(SAMPLE_EVERY_S, segment_end - time.monotonic())))
                output, _ = load.communicate(timeout=60)
                for status, n in re.findall(r"^status (\d+) (\d+)$", output, re.MULTILINE):
                    statuses[int(status)] += int(n)
                timeouts += sum(int(n) for n in re.findall(r"^timeouts (\d+)$", output, re.MULTILINE))
            time.sleep(8)  # the last burst's slow clients are dropped by the deadlines
            rss, fds = _server_stats(service.process.pid)
            samples.append((time.monotonic() - began, rss, fds))
    return _verdict(reporter, samples, statuses, timeouts)


def _verdict(
    reporter: Reporter, samples: list[tuple[float, float, int]], statuses: Counter[int], timeouts: int
) -> int:
    """Print the samples and the figures; 1 when memory or descriptors grew past the bounds, or on a 5xx."""
    steady = [sample for sample in samples if sample[0] >= WARMUP_S] or samples[-2:]
    rss_growth = max(s[1] for s in steady) - steady[0][1]
    fd_growth = max(s[2] for s in steady) - steady[0][2]
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    reporter.table(
        ["t s", "RSS MB", "open fds"], [(f"{t:.0f}", f"{rss:.1f}", fds) for t, rss, fds in samples]
    )
    reporter.note(f"answers by status: {dict(sorted(statuses.items()))}; wrk timeouts: {timeouts}")
    reporter.note(
        f"after warm-up: RSS {steady[0][1]:.1f} → max {max(s[1] for s in steady):.1f} MB "
        f"(growth {rss_growth:.1f}, bound {RSS_BOUND_MB}); fds {steady[0][2]} → max "
        f"{max(s[2] for s in steady)} (growth {fd_growth}, bound {FD_BOUND}); 5xx: {server_errors}"
    )
    failed = rss_growth > RSS_BOUND_MB or fd_growth > FD_BOUND or server_errors > 0 or timeouts > 0
    if failed:
        reporter.error("soak failed: memory or descriptors grew past the bound, or a 5xx or timeout")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
