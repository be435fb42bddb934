"""Aggregate the runs into rows and ratios; write bench.json, bench.md and bench.png; print the table.

Over 400 lines on purpose: every table and chart of docs/bench.md is written from the same rows here.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.console import Reporter
from pipeline.workspace import write_bytes, write_json

SERVICE = "model_service"
MINIMAL = "minimal"
MLFLOW_TENSOR = "mlflow (inputs)"
MLFLOW_DATAFRAME = "mlflow (dataframe_split)"
FLASK = "flask+gunicorn"
V2_ROWS = 64
"""Rows per request of the v2 forms: a batch, where the framing (JSON numbers or raw bytes) counts."""
V2_JSON = f"model_service v2 JSON ({V2_ROWS} rows)"
V2_BINARY = f"model_service v2 binary ({V2_ROWS} rows)"
CAPTURE = "model_service capture"
"""The service (2 workers) capturing answers (`--capture-ratio`, default every one), `--servers ...,capture`."""
CAPTURE_TARGET = 1.03
"""The capture's p99 should stay within 3 % of the same service without it (issue 32)."""
KSERVE_V2 = "kserve (v2)"
KSERVE_V1 = "kserve (v1)"
MLSERVER = "mlserver (v2)"
BENTOML = "bentoml"
LITSERVE = "litserve"
RATIO_CONNECTIONS = 32
PEERS = {"minimal": MINIMAL, "mlflow": MLFLOW_TENSOR, "flask": FLASK}
MODEL_SERVERS = {"kserve": KSERVE_V2, "mlserver": MLSERVER, "bentoml": BENTOML, "litserve": LITSERVE}
"""The servers a team would deploy instead, each by the form its ratio uses (kserve: the v2 protocol)."""
MODEL_SERVER_TARGET = 1.5
"""Issue 24: throughput at least 1.5 times the best model server's, at a p99 no worse than its, and a
start-up (process start to first prediction) no slower than the fastest one's."""
TARGETS = {
    "service_vs_minimal": 0.8,
    "service_vs_mlflow": 6.0,
    "service_vs_flask": 6.0,
    **{f"service_vs_{key}": MODEL_SERVER_TARGET for key in MODEL_SERVERS},
}
P99_TARGET_MS = 10.0


@dataclass(frozen=True)
class Run:
    """One wrk run of one server form at one connection count, in one round."""

    server: str
    workers: int
    connections: int
    round: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    rss_mb: float
    worker_rss_mb: float
    processes: int
    loadgen_cpu_s: float
    duration_s: float
    requests: int
    startup_s: float = 0.0
    """Seconds from spawning the server (this round's start of it) to its first 200 prediction."""
    server_cpu_s: float = 0.0
    """CPU seconds (user + system) the server's processes used during the run."""


def rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (server, workers, connections), from its best round (the most requests/s) with that
    round's latency: other work on a shared machine only ever slows a run down, so the best round is the
    closest to what the server can do (timeit reports its minimum for the same reason). Every round's
    rate and p99 stay in `rps_runs` and `p99_ms_runs`; errors are summed over all rounds."""
    groups: dict[tuple[str, int, int], list[Run]] = {}
    server_order: dict[tuple[str, int], int] = {}  # rows: servers as they ran, connections ascending
    for run in runs:
        groups.setdefault((run.server, run.workers, run.connections), []).append(run)
        server_order.setdefault((run.server, run.workers), len(server_order))
    out = []
    for (server, workers, connections), group in sorted(
        groups.items(), key=lambda item: (server_order[item[0][:2]], item[0][2])
    ):
        top = max(group, key=lambda run: run.rps)
        requests = sum(run.requests for run in group)
        cpu = sum(run.loadgen_cpu_s for run in group)
        duration = sum(run.duration_s for run in group)
        out.append(
            {
                "server": server,
                "workers": workers,
                "connections": connections,
                "rps": round(top.rps, 1),
                "p50_ms": top.p50_ms,
                "p95_ms": top.p95_ms,
                "p99_ms": top.p99_ms,
                "errors": sum(run.errors for run in group),
                "rss_mb": max(run.rss_mb for run in group),
                "rss_mb_per_worker": max(run.worker_rss_mb for run in group),
                "processes": max(run.processes for run in group),
                "rps_runs": [round(run.rps, 1) for run in group],
                "rps_mean": round(sum(run.rps for run in group) / len(group), 1),
                "p99_ms_runs": [run.p99_ms for run in group],
                "loadgen_cpu_cores": round(cpu / duration, 2) if duration else 0.0,
                "loadgen_cpu_us_per_request": round(cpu / requests * 1e6, 1) if requests else 0.0,
                "server_cpu_us_per_request": round(top.server_cpu_s / top.requests * 1e6, 1)
                if top.requests
                else 0.0,
                "startup_s": min(run.startup_s for run in group),
                "startup_s_runs": [run.startup_s for run in group],
            }
        )
    return out


def best(table: Sequence[dict[str, Any]], server: str) -> dict[str, Any] | None:
    """The fastest configuration of `server` at RATIO_CONNECTIONS connections."""
    candidates = [r for r in table if r["server"] == server and r["connections"] == RATIO_CONNECTIONS]
    return max(candidates, key=lambda r: r["rps"], default=None)


def ratios(
    table: Sequence[dict[str, Any]], runs: Sequence[Run]
) -> tuple[dict[str, float | None], dict[str, list[float]]]:
    """The best service configuration (its best row) vs each peer at RATIO_CONNECTIONS connections (mlflow:
    its fastest form, the tensor body), paired by round: each round's service run over the peer's run of
    the same round, then the median over rounds. Runs of one round are minutes apart at most, so a slower
    stretch of the shared machine hits both sides of a pair, where best-of-rounds on each side could pair
    one server's quiet stretch with the other's busy one. Returns (ratios, each round's ratio)."""
    service = best(table, SERVICE)
    out: dict[str, float | None] = {}
    per_round: dict[str, list[float]] = {}
    for name, peer in {**PEERS, **MODEL_SERVERS}.items():
        key = f"service_vs_{name}"
        other = best(table, peer)
        if service is None or other is None:
            out[key] = None
            continue
        ours, theirs = _rps_by_round(runs, service), _rps_by_round(runs, other)
        paired = [ours[r] / theirs[r] for r in sorted(ours.keys() & theirs.keys()) if theirs[r]]
        per_round[key] = [round(value, 3) for value in paired]
        out[key] = round(statistics.median(paired), 2) if paired else None
    return out, per_round


def _rps_by_round(runs: Sequence[Run], row: dict[str, Any]) -> dict[int, float]:
    """requests/s per round of the runs behind one table row."""
    return {
        run.round: run.rps
        for run in runs
        if (run.server, run.workers, run.connections) == (row["server"], row["workers"], row["connections"])
    }


def v2_binary_vs_json(table: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The v2 infer route with a batch as binary tensor data against the same batch as JSON, at
    RATIO_CONNECTIONS connections (None when `v2` did not run)."""
    as_json, binary = best(table, V2_JSON), best(table, V2_BINARY)
    if as_json is None or binary is None:
        return None
    return {
        "rows_per_request": V2_ROWS,
        "json_rps": as_json["rps"],
        "binary_rps": binary["rps"],
        "json_p99_ms": as_json["p99_ms"],
        "binary_p99_ms": binary["p99_ms"],
        "ratio": round(binary["rps"] / as_json["rps"], 2) if as_json["rps"] else None,
    }


def capture_vs_off(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The service with 2 workers capturing every answer against the same without a capture, per connection
    count: each side's best round, the p99 of each round paired with the other side's of the same round
    (their ratio's median: a busy stretch of a shared machine hits both sides of a pair) and the server's
    CPU per request, the steadiest figure on a busy machine (None when `capture` did not run)."""
    out = []
    for on in (r for r in table if r["server"] == CAPTURE):
        off = next(
            (
                r
                for r in table
                if (r["server"], r["workers"], r["connections"]) == (SERVICE, 2, on["connections"])
            ),
            None,
        )
        if off is None:
            continue
        paired = [a / b for a, b in zip(on["p99_ms_runs"], off["p99_ms_runs"], strict=False) if b]
        out.append(
            {
                "connections": on["connections"],
                "off_rps": off["rps"],
                "on_rps": on["rps"],
                "off_p99_ms": off["p99_ms"],
                "on_p99_ms": on["p99_ms"],
                "off_p99_ms_runs": off["p99_ms_runs"],
                "on_p99_ms_runs": on["p99_ms_runs"],
                "p99_ratio_median": round(statistics.median(paired), 3) if paired else None,
                "p99_target": CAPTURE_TARGET,
                "off_cpu_us_per_request": off["server_cpu_us_per_request"],
                "on_cpu_us_per_request": on["server_cpu_us_per_request"],
            }
        )
    return out or None


def _capture_lines(result: dict[str, Any]) -> list[str]:
    return [
        f"capture, {c['connections']} connections: p99 per round {c['on_p99_ms_runs']} ms vs "
        f"{c['off_p99_ms_runs']} ms without (median of the paired ratios {c['p99_ratio_median']}, target <= "
        f"{c['p99_target']}); best round {c['on_rps']:,.0f} vs {c['off_rps']:,.0f} req/s; server CPU "
        f"{c['on_cpu_us_per_request']} vs {c['off_cpu_us_per_request']} µs per request"
        for c in result.get("capture_vs_off") or ()
    ]


def _v2_line(result: dict[str, Any]) -> str | None:
    v2 = result.get("v2_binary_vs_json")
    if not v2:
        return None
    return (
        f"v2 infer, {v2['rows_per_request']} rows per request at {RATIO_CONNECTIONS} connections: binary "
        f"tensor data {v2['binary_rps']:,.0f} req/s (p99 {v2['binary_p99_ms']} ms), JSON {v2['json_rps']:,.0f} "
        f"req/s (p99 {v2['json_p99_ms']} ms); binary/JSON {v2['ratio']}"
    )


def targets(
    table: Sequence[dict[str, Any]], ratio: dict[str, float | None], per_round: dict[str, list[float]]
) -> dict[str, Any]:
    service = best(table, SERVICE)
    checks: dict[str, Any] = {}
    for key, bound in TARGETS.items():
        value = ratio.get(key)
        if value is not None:
            checks[key] = {"value": value, "min": bound, "met": value >= bound, "rounds": per_round[key]}
    if service is not None:
        checks["service_p99_ms"] = {
            "value": service["p99_ms"],
            "max": P99_TARGET_MS,
            "met": service["p99_ms"] <= P99_TARGET_MS,
        }
        checks["service_errors"] = {"value": service["errors"], "max": 0, "met": service["errors"] == 0}
        checks.update(_model_server_checks(table, service))
    return checks


def _model_server_checks(table: Sequence[dict[str, Any]], service: dict[str, Any]) -> dict[str, Any]:
    """The service's p99 against the fastest model server's (at RATIO_CONNECTIONS connections), and its
    start-up time (best round) against the quickest model server's."""
    theirs = [row for row in (best(table, label) for label in MODEL_SERVERS.values()) if row is not None]
    if not theirs:
        return {}
    fastest = max(theirs, key=lambda row: row["rps"])
    quickest = min(theirs, key=lambda row: row["startup_s"])
    return {
        "service_p99_ms_vs_fastest_model_server": {
            "value": service["p99_ms"],
            "max": fastest["p99_ms"],
            "met": service["p99_ms"] <= fastest["p99_ms"],
            "against": fastest["server"],
        },
        "service_startup_s_vs_quickest_model_server": {
            "value": service["startup_s"],
            "max": quickest["startup_s"],
            "met": service["startup_s"] <= quickest["startup_s"],
            "against": quickest["server"],
            "rounds": service["startup_s_runs"],
        },
    }


ROW_RULE = "each row is the best of its rounds, with that round's latency; every round's rate at the end"
RATIO_RULE = (
    f"best {SERVICE} configuration vs each peer at {RATIO_CONNECTIONS} connections; "
    "each round's pair of runs, median over rounds"
)
HEADERS = ("server", "workers", "connections", "requests/s", "p50 ms", "p95 ms", "p99 ms", "errors")
HEADERS_MEMORY = ("RSS MB", "RSS MB/worker", "start s", "server CPU µs/req", "wrk cores")


def table_cells(
    table: Sequence[dict[str, Any]], not_run: Sequence[dict[str, str]] = (), *, rounds: bool = False
) -> list[tuple[object, ...]]:
    """The table's cells; a server that did not run is a row with its reason in the last column."""
    width = len(HEADERS) + len(HEADERS_MEMORY) + (1 if rounds else 0)
    skipped = [(item["server"], *(["-"] * (width - 2)), f"not run: {item['reason']}") for item in not_run]
    return [
        (
            r["server"],
            r["workers"],
            r["connections"],
            f"{r['rps']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p95_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            r["errors"],
            f"{r['rss_mb']:.0f}",
            f"{r['rss_mb_per_worker']:.0f}",
            " / ".join(f"{seconds:.1f}" for seconds in r["startup_s_runs"]),
            f"{r['server_cpu_us_per_request']:,.0f}",
            f"{r['loadgen_cpu_cores']:.2f}",
            *((" / ".join(f"{rps:,.0f}" for rps in r["rps_runs"]),) if rounds else ()),
        )
        for r in table
    ] + skipped


def _per_round(check: dict[str, Any]) -> str:
    against = f"against {check['against']}; " if "against" in check else ""
    return against + " / ".join(f"{value:.2f}" for value in check.get("rounds", ()))


def print_report(reporter: Reporter, result: dict[str, Any]) -> None:
    reporter.line(f"serving (wrk, one row per request; {ROW_RULE})")
    reporter.table(
        [*HEADERS, *HEADERS_MEMORY, "rounds req/s"],
        table_cells(result["rows"], result.get("not_run", ()), rounds=True),
    )
    ceiling = result["onnxruntime"]
    reporter.line("in-process onnxruntime (one thread, no HTTP)")
    reporter.table(
        ["batch", "predictions/s", "µs per call"],
        [(b["batch"], f"{b['predictions_per_s']:,.0f}", f"{b['us_per_call']:.1f}") for b in ceiling],
    )
    reporter.line(f"ratios ({RATIO_RULE})")
    reporter.table(
        ["check", "value", "bound", "result", "per round"],
        [
            (key, check["value"], f">= {check['min']}" if "min" in check else f"<= {check['max']}",
             "MET" if check["met"] else "MISSED", _per_round(check))
            for key, check in result["targets"].items()
        ],
    )  # fmt: skip
    v2 = _v2_line(result)
    if v2:
        reporter.line(v2)
    for line in _capture_lines(result):
        reporter.line(line)
    pipeline = result.get("pipeline")
    if pipeline:
        reporter.line("pipeline wall time (timed apart from the serving runs)")
        reporter.table(
            ["run", "seconds", "command", "status"],
            [(p["run"], p["seconds"], p["command"], p["status"]) for p in pipeline],
        )


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Serving benchmark {result['run_id']}",
        "",
        _machine_line(result),
        "",
        f"Rows: {ROW_RULE}.",
        "",
    ]
    headers = [*HEADERS, *HEADERS_MEMORY, "rounds req/s"]
    lines += [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *(
            "| " + " | ".join(str(c) for c in cells) + " |"
            for cells in table_cells(result["rows"], result.get("not_run", ()), rounds=True)
        ),
        "",
        f"Ratios ({RATIO_RULE}):",
        "",
        "| check | value | bound | result | per round |",
        "|---|---|---|---|---|",
    ]
    for key, check in result["targets"].items():
        bound = f">= {check['min']}" if "min" in check else f"<= {check['max']}"
        verdict = "met" if check["met"] else "MISSED"
        lines.append(f"| {key} | {check['value']} | {bound} | {verdict} | {_per_round(check)} |")
    lines += ["", "What each server is sent (one row per request):", ""]
    lines += ["| server | path | body |", "|---|---|---|"]
    for server in result.get("servers", ()):
        for form in server["forms"]:
            body = json.dumps(form["body"], separators=(",", ":"))
            lines.append(f"| {form['label']} | `{form['path']}` | `{_shortened(body)}` |")
    v2 = _v2_line(result)
    if v2:
        lines += ["", v2 + "."]
    lines += [item for line in _capture_lines(result) for item in ("", line + ".")]
    lines += [
        "",
        "In-process onnxruntime, one thread, no HTTP:",
        "",
        "| batch | predictions/s |",
        "|---|---|",
    ]
    lines += [f"| {b['batch']} | {b['predictions_per_s']:,.0f} |" for b in result["onnxruntime"]]
    if result.get("pipeline"):
        lines += ["", "Pipeline wall time (timed apart from the serving runs):", ""]
        lines += ["| run | seconds | command | status |", "|---|---|---|---|"]
        lines += [
            f"| {p['run']} | {p['seconds']} | `{p['command']}` | {p['status']} |" for p in result["pipeline"]
        ]
    lines += ["", "![requests/s](bench.png)", ""]
    return "\n".join(lines)


def _shortened(body: str, keep: int = 120) -> str:
    return body if len(body) <= keep else f"{body[:keep]}... ({len(body)} bytes)"


def _machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    return (
        f"{m['cpus']} CPUs; load average {m['loadavg_before']} before, {m['loadavg_after']} after; "
        f"{result['settings']['duration_s']} s per run, {result['settings']['rounds']} round(s), "
        f"wrk -t1, warm-up {result['settings']['warmup_s']} s per server start."
    )


def chart(table: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415  (slow import, only when writing the chart)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    pairs: set[tuple[str, int]] = {(r["server"], r["workers"]) for r in table}
    labels = sorted(pairs, key=lambda pair: -_rps(table, pair[0], pair[1], RATIO_CONNECTIONS))
    connections = sorted({r["connections"] for r in table})
    fig, ax = plt.subplots(figsize=(10, 4.8))
    width = 0.8 / len(connections)
    for i, count in enumerate(connections):
        values = [_rps(table, server, workers, count) for server, workers in labels]
        bars = ax.bar(
            [x + i * width for x in range(len(labels))], values, width, label=f"{count} connections"
        )
        ax.bar_label(bars, fmt="{:,.0f}", fontsize=7)
    ax.set_xticks([x + width * (len(connections) - 1) / 2 for x in range(len(labels))])
    ax.set_xticklabels([f"{s}\n{w} worker(s)" for s, w in labels], fontsize=8)
    ax.set_ylabel("requests/s (one row per request)")
    ax.set_title("Serving the same model: requests/s by server (wrk)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rps(table: Sequence[dict[str, Any]], server: str, workers: int, connections: int) -> float:
    return next(
        (
            r["rps"]
            for r in table
            if (r["server"], r["workers"], r["connections"]) == (server, workers, connections)
        ),
        0.0,
    )


def write(directory: Path, result: dict[str, Any]) -> None:
    """bench.json, bench.md and bench.png in `directory`; its parent's `latest` link points at it."""
    write_json(directory / "bench.json", result)
    write_bytes(directory / "bench.md", markdown(result).encode())
    chart(result["rows"], directory / "bench.png")
    latest = directory.parent / "latest"
    tmp = directory.parent / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(directory.name)
    tmp.replace(latest)


def run_dict(run: Run) -> dict[str, Any]:
    return asdict(run)
