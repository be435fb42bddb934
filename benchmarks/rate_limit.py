"""What the per-client rate limit costs: the token bucket's `take` per call (microbenchmark), and the
service's throughput under wrk with auth alone against auth plus a limit no client reaches, in interleaved
rounds (`python -m benchmarks.rate_limit --model-dir artifacts/<model>/<version>`; docs/bench.md).

The limit is set far above what wrk sends, so every request pays the bucket's bookkeeping and none is
refused: the ratio is the limit's cost, not its effect (errors, if any, are the service shedding load or
sockets timing out on a busy machine; each round prints them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import timeit
from collections.abc import Sequence
from pathlib import Path

from benchmarks import wrk
from benchmarks.servers import REPO, Form, Server, running
from model_service.operations.rate_limit import RateLimiter
from pipeline.console import Reporter

API_KEY = "bench-key"
UNREACHED_RPS = "1000000"
"""Requests per second per client no wrk run here comes near: the limit is consulted, never refuses."""


def take_cost_us(clients: int, calls: int = 200_000) -> float:
    """Microseconds per `take`, cycling over `clients` distinct ids (1: the hot bucket)."""
    limiter = RateLimiter(1e9, 1_000_000_000, max_clients=max(clients, 1))
    ids = [f"key:{n:012x}" for n in range(clients)]
    for client in ids:
        limiter.take(client)
    cycle = ids * (calls // clients)
    take = limiter.take
    best = min(timeit.repeat(lambda: [take(c) for c in cycle], number=1, repeat=5))
    return best / len(cycle) * 1e6


def _server(model_dir: Path, key: str, limited: bool) -> Server:
    row = json.loads((model_dir / "eval.json").read_bytes())["rows"][0]
    form = Form(
        "v1", "/v1/predict", json.dumps({"instances": [row]}).encode(), (32,), headers={"X-API-Key": API_KEY}
    )
    env = {"MODEL_SERVICE_API_KEY_SHA256": hashlib.sha256(API_KEY.encode()).hexdigest()}
    if limited:
        env |= {
            "MODEL_SERVICE_RATE_LIMIT_RPS": UNREACHED_RPS,
            "MODEL_SERVICE_RATE_LIMIT_BURST": UNREACHED_RPS,
        }
    command = [sys.executable, "-m", "model_service", "--model-dir", str(model_dir), "--port", "{port}"]
    command += ["--metrics-port", "{metrics_port}"]
    return Server(key, 1, command, (form,), env=env, cwd=REPO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rate_limit", description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True, help="an exported model folder")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    reporter = Reporter()
    wrk_path = shutil.which("wrk")
    if wrk_path is None:
        reporter.error(f"wrk is not installed; install it with:\n\n    {wrk.INSTALL_HINT}\n")
        return 2
    reporter.line(
        f"RateLimiter.take: {take_cost_us(1):.3f} µs per call (one client), "
        f"{take_cost_us(10_000):.3f} µs (10,000 clients in turn)"
    )
    servers = {
        name: _server(args.model_dir, name, limited)
        for name, limited in (("auth", False), ("auth+limit", True))
    }
    rps: dict[str, list[float]] = {name: [] for name in servers}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for round_number in range(args.rounds):
            for name, server in servers.items():
                form = server.forms[0]
                body_file = folder / "body.json"
                body_file.write_bytes(form.body)
                with running(server, folder / f"{name}-{round_number}.log") as live:
                    wrk.run(
                        wrk_path,
                        live.url + form.path,
                        body_file,
                        connections=args.connections,
                        duration_s=1.0,
                        headers=form.headers,
                    )  # warm-up
                    result = wrk.run(
                        wrk_path,
                        live.url + form.path,
                        body_file,
                        connections=args.connections,
                        duration_s=args.duration,
                        headers=form.headers,
                    )
                rps[name].append(result.rps)
                reporter.line(
                    f"round {round_number + 1} {name:>10}: {result.rps:8.0f} requests/s, p99 {result.p99_ms:.2f} ms, "
                    f"{result.errors} errors"
                )
    base, limited = statistics.median(rps["auth"]), statistics.median(rps["auth+limit"])
    reporter.line(f"median requests/s: auth {base:.0f}, auth+limit {limited:.0f}; ratio {limited / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
