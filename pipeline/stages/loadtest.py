"""loadtest: Locust headless against the service with the exported model, gated by the env's SLOs.

The service is started here on 127.0.0.1 (or `host` names one already running). Locust runs as a
separate process with `loadtests/locustfile.py`, its profile passed in a JSON file. The gate reads
Locust's final JSON stats (the CSV lags by about a second of traffic) and computes percentiles from
their response-time histograms. Missing data (no requests, a route never hit) fails.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.adapters import registry
from pipeline.adapters.service_process import running_service
from pipeline.config import Config, LoadTestSpec, SloBounds
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.stages.export import CARD_FILE, EVAL_FILE, exported_model
from pipeline.stages.register import REGISTRATION_FILE
from pipeline.workspace import Workspace, read_json, write_json

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"
HOST_READY_TIMEOUT_S = 10.0
"""How long a service given with `--host` has to answer /readyz."""
PROGRESS_INTERVAL_S = 3.0
"""How often the live view prints a line while Locust runs."""
LOCUST_GRACE_S = 60.0
"""Time Locust gets beyond the profile's duration to start, stop its users and write its reports."""
API_KEY_VARIABLE = "LOADTEST_API_KEY"
"""With `--host` and auth on, the API key to send (the stage makes its own for a service it starts)."""
TOTAL = "total"
GATE_FILE = "gate.json"
STATS_FILE = "stats.json"

Status = Literal["pass", "fail"]


@dataclass(frozen=True)
class RouteStats:
    requests: int
    failures: int
    p95_ms: float | None
    p99_ms: float | None
    error_ratio: float | None
    rps: float | None


@dataclass(frozen=True)
class SloCheck:
    scope: str
    metric: str
    value: float | None
    comparator: Literal["<=", ">="]
    bound: float
    passed: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def failure(self) -> str:
        if self.value is None:
            return f"{self.scope} {self.metric}: no requests were measured"
        broken = ">" if self.comparator == "<=" else "<"
        return f"{self.scope} {self.metric} {self.value:.4g} {broken} bound {self.bound:g}"


@dataclass(frozen=True)
class LoadTestResult:
    environment: str
    run_id: str
    url: str
    status: Status
    checks: list[SloCheck]
    stats: dict[str, RouteStats]
    report_dir: Path
    failures: list[str] = field(default_factory=list)


# --- the gate: pure functions of Locust's JSON stats -------------------------------------------


def percentile(histogram: Mapping[int, int], quantile: float) -> float | None:
    """Nearest-rank percentile of a {response time ms: count} histogram; None when it is empty."""
    count = sum(histogram.values())
    if count == 0:
        return None
    rank = max(1, math.ceil(round(quantile * count, 9)))  # round: 0.95 * 100 must be rank 95, not 96
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


def summarize(entries: Sequence[Mapping[str, Any]], routes: Sequence[str]) -> dict[str, RouteStats]:
    """Per-route and total stats from Locust's `--json-file` entries; every route in `routes` appears."""
    starts = [float(e["start_time"]) for e in entries if e["num_requests"]]
    ends = [float(e["last_request_timestamp"]) for e in entries if e["num_requests"]]
    window = max(ends) - min(starts) if starts else 0.0

    def stats(selected: Sequence[Mapping[str, Any]]) -> RouteStats:
        histogram: dict[int, int] = {}
        for entry in selected:
            for value, count in entry["response_times"].items():
                histogram[int(value)] = histogram.get(int(value), 0) + int(count)
        requests = sum(int(e["num_requests"]) for e in selected)
        failures = sum(int(e["num_failures"]) for e in selected)
        return RouteStats(
            requests=requests,
            failures=failures,
            p95_ms=percentile(histogram, 0.95),
            p99_ms=percentile(histogram, 0.99),
            error_ratio=failures / requests if requests else None,
            rps=requests / window if requests and window > 0 else None,
        )

    out = {TOTAL: stats(entries)}
    for route in routes:
        out[route] = stats([e for e in entries if e["name"] == route])
    return out


def _bound_checks(scope: str, values: RouteStats, bounds: SloBounds) -> list[SloCheck]:
    limits: list[tuple[str, float | None, Literal["<=", ">="], float | None]] = [
        ("p95_ms", values.p95_ms, "<=", bounds.p95_ms),
        ("p99_ms", values.p99_ms, "<=", bounds.p99_ms),
        ("error_ratio", values.error_ratio, "<=", bounds.max_error_ratio),
        ("rps", values.rps, ">=", bounds.min_rps),
    ]
    checks: list[SloCheck] = []
    for metric, value, comparator, bound in limits:
        if bound is None:
            continue
        passed = value is not None and (value <= bound if comparator == "<=" else value >= bound)
        checks.append(SloCheck(scope, metric, value, comparator, bound, passed))
    return checks


def slo_checks(spec: LoadTestSpec, stats: Mapping[str, RouteStats]) -> list[SloCheck]:
    """Every SLO in config order, plus one `requests >= 1` check per scope so missing data fails."""
    empty = RouteStats(0, 0, None, None, None, None)
    scopes: list[tuple[str, SloBounds | None]] = [
        (TOTAL, spec.slo.total),
        *((route, spec.slo.routes.get(route)) for route in spec.traffic.weights),
    ]
    checks: list[SloCheck] = []
    for scope, bounds in scopes:
        values = stats.get(scope, empty)
        checks.append(SloCheck(scope, "requests", float(values.requests), ">=", 1, values.requests >= 1))
        if bounds is not None:
            checks.extend(_bound_checks(scope, values, bounds))
    return checks


# --- guard rails and the target --------------------------------------------------------------


def check_target(url: str, *, allow_remote: bool) -> str:
    """The base URL without a trailing slash; refuses anything but loopback unless `allow_remote`."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise StageError(f"--host {url!r}: expected a URL like http://127.0.0.1:8000")
    host = parsed.hostname
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not allow_remote:
        msg = (
            f"--host {url}: {host} is not a loopback address; a load test sends real traffic, so pass "
            "--allow-remote to confirm that this target may receive it"
        )
        raise StageError(msg)
    return url.rstrip("/")


def _wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
        time.sleep(0.2)
    msg = (
        f"the service at {url} was not ready within {timeout:.0f}s ({url}/readyz: {problem}); "
        "start it, or drop --host to let the stage start one on the exported model"
    )
    raise StageError(msg)


@contextmanager
def _target(
    config: Config,
    model_dir: Path,
    *,
    report_dir: Path,
    reporter: Reporter,
    host: str | None,
    allow_remote: bool,
    service_settings: Mapping[str, str] | None,
) -> Iterator[tuple[str, dict[str, str]]]:
    """(URL, headers) of the service under test: the one given, or one started here and stopped after."""
    if host is not None:
        url = check_target(host, allow_remote=allow_remote)
        headers: dict[str, str] = {}
        if config.service.auth == "api-key":
            key = os.environ.get(API_KEY_VARIABLE)
            if not key:
                msg = f"service.auth is 'api-key' for {config.name}: set {API_KEY_VARIABLE} to a key the service at {url} accepts"
                raise StageError(msg)
            headers["Authorization"] = f"Bearer {key}"
        _wait_ready(url, HOST_READY_TIMEOUT_S)
        reporter.note(f"target {url} (given with --host)")
        yield url, headers
        return
    with running_service(config, model_dir, report_dir / "service.log", settings=service_settings) as service:
        reporter.note(f"started the service on {model_dir.name} at {service.url}")
        yield service.url, dict(service.headers)


# --- the stage -------------------------------------------------------------------------------


def loadtest(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    host: str | None = None,
    allow_remote: bool = False,
    service_settings: Mapping[str, str] | None = None,
) -> LoadTestResult:
    version, model_dir = exported_model(config, workspace, reporter)
    if not LOCUSTFILE.is_file():
        raise StageError(f"{LOCUSTFILE} is missing; the load test needs the repository's loadtests/ folder")
    spec = config.loadtest
    run_id = workspace.run_id
    report_dir = workspace.run_dir(config) / "loadtest"
    report_dir.mkdir(parents=True, exist_ok=True)
    profile_path = report_dir / "profile.json"
    write_json(profile_path, locust_profile(config, model_dir))
    reporter.note(
        f"profile {spec.profile.shape}: {spec.profile.users} users, {spec.profile.duration_s:g}s; "
        f"routes {', '.join(spec.traffic.weights)}"
    )

    target = _target(
        config,
        model_dir,
        report_dir=report_dir,
        reporter=reporter,
        host=host,
        allow_remote=allow_remote,
        service_settings=service_settings,
    )
    with target as (url, headers):
        _run_locust(url, headers, profile_path, report_dir, spec, reporter=reporter)

    entries = read_json(report_dir / STATS_FILE)
    stats = summarize(entries, list(spec.traffic.weights))
    checks = slo_checks(spec, stats)
    failures = [c.failure() for c in checks if not c.passed]
    status: Status = "fail" if failures else "pass"
    reporter.table(
        ["metric", "value", "comparator", "bound", "result"],
        [(f"{c.scope} {c.metric}", c.value, c.comparator, c.bound, c.verdict) for c in checks],
    )
    result = LoadTestResult(config.name, run_id, url, status, checks, stats, report_dir, failures)
    write_json(
        report_dir / GATE_FILE,
        {**asdict(result), "report_dir": str(report_dir), "artifact_version": version},
    )
    _chart(report_dir)
    reporter.note(f"report: {report_dir / 'report.html'} (chart {report_dir / 'chart.png'})")
    _tag_registry(config, workspace, model_dir, version, status, reporter=reporter, tag=host is None)
    reporter.note(f"loadtest {status.upper()}: {len(checks) - len(failures)}/{len(checks)} checks passed")
    return result


def locust_profile(config: Config, model_dir: Path) -> dict[str, Any]:
    """What the locustfile reads: the environment's profile and traffic, and the model's evaluation rows."""
    evaluation = read_json(model_dir / EVAL_FILE)
    card = read_json(model_dir / CARD_FILE)
    spec = config.loadtest
    return {
        "environment": config.name,
        "model_name": card["name"],
        "input_name": card["onnx"]["input"]["name"],
        "features": evaluation["features"],
        "rows": evaluation["rows"],
        "profile": spec.profile.model_dump(mode="json"),
        "traffic": spec.traffic.model_dump(mode="json"),
    }


def locust_command(url: str, report_dir: Path) -> list[str]:
    """Locust headless on the locustfile against `url`, writing its reports into `report_dir`."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--only-summary",
        # Locust would exit 1 on any failed request; the SLO gate below decides instead.
        "--exit-code-on-error",
        "0",
        "--json-file",
        str(report_dir / Path(STATS_FILE).stem),
        "--html",
        str(report_dir / "report.html"),
        "--csv",
        str(report_dir / "locust"),
        "--csv-full-history",
    ]


def locust_environment(profile_path: Path, headers: Mapping[str, str]) -> dict[str, str]:
    """Variables the locustfile reads; the headers stay out of the profile file, so no key lands in a report."""
    return {"LOADTEST_PROFILE": str(profile_path), "LOADTEST_HEADERS": json.dumps(dict(headers))}


def _run_locust(
    url: str,
    headers: Mapping[str, str],
    profile_path: Path,
    report_dir: Path,
    spec: LoadTestSpec,
    *,
    reporter: Reporter,
) -> None:
    command = locust_command(url, report_dir)
    env = {**os.environ, **locust_environment(profile_path, headers)}
    log_path = report_dir / "locust.log"
    timeout = spec.profile.duration_s + LOCUST_GRACE_S
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if time.monotonic() > deadline:
                raise StageError(f"Locust did not finish within {timeout:.0f}s; log: {log_path}")
            time.sleep(PROGRESS_INTERVAL_S)
            line = live_line(report_dir / "locust_stats_history.csv", spec.profile.duration_s)
            if line:
                reporter.note(line)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0 or not (report_dir / STATS_FILE).is_file():
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
        raise StageError(f"Locust exited with {process.returncode} ({tail}); log: {log_path}")


def live_line(history: Path, duration_s: float) -> str | None:
    """The newest point of Locust's stats history as one progress line, for people watching."""
    if not history.is_file():
        return None
    with history.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("Name") == "Aggregated"]
    if len(rows) < 2:
        return None
    first, last = rows[0], rows[-1]
    elapsed = int(last["Timestamp"]) - int(first["Timestamp"])
    return (
        f"{elapsed:>3}s/{duration_s:g}s  users {last['User Count']}  {float(last['Requests/s']):.0f} req/s  "
        f"p95 {last['95%']} ms  failures {last['Total Failure Count']}"
    )


def _chart(report_dir: Path) -> None:
    """chart.png: latency percentiles and requests/s of all requests over the run."""
    import matplotlib as mpl  # noqa: PLC0415  (slow import, only here)

    mpl.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt  # noqa: PLC0415

    with (report_dir / "locust_stats_history.csv").open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]

    def column(name: str) -> list[float]:
        return [float(row[name]) if row[name] not in {"", "N/A"} else float("nan") for row in rows]

    start = float(rows[0]["Timestamp"]) if rows else 0.0
    seconds = [float(row["Timestamp"]) - start for row in rows]
    figure, (latency, throughput) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    for name in ("50%", "95%", "99%"):
        latency.plot(seconds, column(name), label=f"p{name.rstrip('%')}")
    latency.set_ylabel("response time (ms)")
    latency.legend(loc="upper left")
    latency.grid(alpha=0.3)
    throughput.plot(seconds, column("Requests/s"), label="requests/s")
    throughput.plot(seconds, column("Failures/s"), label="failures/s", color="tab:red")
    throughput.set_ylabel("per second")
    throughput.set_xlabel("seconds since start")
    throughput.legend(loc="upper left")
    throughput.grid(alpha=0.3)
    figure.suptitle(report_dir.parent.name)
    figure.tight_layout()
    figure.savefig(report_dir / "chart.png", dpi=100)
    plt.close(figure)


def _tag_registry(
    config: Config,
    workspace: Workspace,
    model_dir: Path,
    version: str,
    status: Status,
    *,
    reporter: Reporter,
    tag: bool,
) -> None:
    """Tag `loadtest` and `loadtest.<env>` on the registered version of the model under test."""
    registration_path = model_dir / REGISTRATION_FILE
    if not tag:
        reporter.note("registry not tagged: --host may serve another model than the current export")
        return
    if not registration_path.is_file():
        reporter.note(f"registry not tagged: {version} is not registered yet")
        return
    registration = read_json(registration_path)
    if registration["artifact_version"] != version:
        reporter.note(f"registry not tagged: {registration_path} is for {registration['artifact_version']}")
        return
    mlflow = registry.client(config, workspace)
    name, number = registration["model_name"], registration["model_version"]
    mlflow.set_model_version_tag(name, number, "loadtest", status)
    mlflow.set_model_version_tag(name, number, f"loadtest.{config.name}", status)
    reporter.note(f"tagged {name} version {number}: loadtest.{config.name}={status}")
