"""loadtest: Locust headless against the service with the exported model, gated by the env's SLOs.

The service is started here on 127.0.0.1 (or `host` names one already running). Locust runs as a
separate process with `loadtests/locustfile.py`, its profile passed in a JSON file. The gate reads
Locust's final JSON stats (the CSV lags by about a second of traffic) and computes percentiles from
their response-time histograms. Missing data (no requests, a route never hit) fails.
"""

from __future__ import annotations

import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.adapters import registry
from pipeline.adapters.locust import LOCUSTFILE, PROFILE_FILE, STATS_FILE, chart, locust_profile, run_locust
from pipeline.adapters.process_usage import Usage, sampled_usage
from pipeline.adapters.service_process import loopback_url, running_service
from pipeline.artifacts import ModelDir, inputs_key, service_code
from pipeline.config import Config, LoadTestSpec, SloBounds
from pipeline.console import Reporter
from pipeline.deploy.sizing import Sizing, suggest
from pipeline.errors import StageError
from pipeline.quality.join import capture_directory
from pipeline.quality.replay import captured_rows
from pipeline.stage import Check, Comparator, Reuse, StageContext, StageResult, checked_status, reusable
from pipeline.workspace import Workspace, read_json, write_json

HOST_READY_TIMEOUT_S = 10.0
"""How long a service given with `--host` has to answer /readyz."""
API_KEY_VARIABLE = "LOADTEST_API_KEY"
"""With `--host` and auth on, the API key to send (the stage makes its own for a service it starts)."""
TOKEN_VARIABLE = "LOADTEST_TOKEN"
"""With `--host` and auth `jwt`, the bearer token to send."""
TOTAL = "total"
GATE_FILE = "gate.json"
REUSE: Reuse = "pass"
"""A load test measures this machine too: a pass stands for the same inputs, a failure is measured again."""


@dataclass(frozen=True)
class RouteStats:
    requests: int
    failures: int
    p95_ms: float | None
    p99_ms: float | None
    error_ratio: float | None
    rps: float | None


@dataclass(frozen=True, kw_only=True)
class LoadTestResult(StageResult):
    environment: str
    url: str
    stats: dict[str, RouteStats]
    report_dir: Path
    sizing: Sizing | None = None
    """The service's CPU and peak RSS per 1,000 requests and a suggested `deploy.resources`; None when the
    service was not started here (`--host`)."""

    def record(self) -> dict[str, Any]:
        """gate.json: what the report and a person read afterwards."""
        return {
            "environment": self.environment,
            "url": self.url,
            "status": self.status,
            "checks": [asdict(check) for check in self.checks],
            "stats": {scope: asdict(values) for scope, values in self.stats.items()},
            "report_dir": str(self.report_dir),
            "failures": self.failures,
            "sizing": asdict(self.sizing) if self.sizing is not None else None,
        }


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


def _bound_checks(scope: str, values: RouteStats, bounds: SloBounds) -> list[Check]:
    limits: list[tuple[str, float | None, Comparator, float | None]] = [
        ("p95_ms", values.p95_ms, "<=", bounds.p95_ms),
        ("p99_ms", values.p99_ms, "<=", bounds.p99_ms),
        ("error_ratio", values.error_ratio, "<=", bounds.max_error_ratio),
        ("rps", values.rps, ">=", bounds.min_rps),
    ]
    return [
        Check.bounded(scope, metric, value, comparator, bound)
        for metric, value, comparator, bound in limits
        if bound is not None
    ]


def slo_checks(spec: LoadTestSpec, stats: Mapping[str, RouteStats]) -> list[Check]:
    """Every SLO in config order, plus one `requests >= 1` check per scope so missing data fails."""
    empty = RouteStats(0, 0, None, None, None, None)
    scopes: list[tuple[str, SloBounds | None]] = [
        (TOTAL, spec.slo.total),
        *((route, spec.slo.routes.get(route)) for route in spec.traffic.weights),
    ]
    checks: list[Check] = []
    for scope, bounds in scopes:
        values = stats.get(scope, empty)
        checks.append(Check.bounded(scope, "requests", float(values.requests), ">=", 1))
        if bounds is not None:
            checks.extend(_bound_checks(scope, values, bounds))
    return checks


# --- guard rails and the target --------------------------------------------------------------


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
    model: ModelDir,
    *,
    report_dir: Path,
    reporter: Reporter,
    host: str | None,
    allow_remote: bool,
    service_settings: Mapping[str, str] | None,
) -> Iterator[tuple[str, dict[str, str], int | None]]:
    """(URL, headers, pid) of the service under test: the one given (no pid: not a process of ours), or one
    started here and stopped after."""
    if host is not None:
        url = loopback_url(host, option="--host", allow_remote=allow_remote)
        headers: dict[str, str] = {}
        if config.service.auth == "api-key":
            key = os.environ.get(API_KEY_VARIABLE)
            if not key:
                msg = f"service.auth is 'api-key' for {config.name}: set {API_KEY_VARIABLE} to a key the service at {url} accepts"
                raise StageError(msg)
            headers["Authorization"] = f"Bearer {key}"
        elif config.service.auth == "jwt":
            token = os.environ.get(TOKEN_VARIABLE)
            if not token:
                msg = (
                    f"service.auth is 'jwt' for {config.name}: set {TOKEN_VARIABLE} to a token with the predict "
                    f"and model:read scopes that the service at {url} accepts"
                )
                raise StageError(msg)
            headers["Authorization"] = f"Bearer {token}"
        _wait_ready(url, HOST_READY_TIMEOUT_S)
        reporter.note(f"target {url} (given with --host)")
        yield url, headers, None
        return
    with running_service(
        config, model.path, report_dir / "service.log", settings=service_settings
    ) as service:
        reporter.note(f"started the service on {model.version} at {service.url}")
        yield service.url, dict(service.headers), service.process.pid


# --- the stage -------------------------------------------------------------------------------


def loadtest(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    model: ModelDir,
    host: str | None = None,
    allow_remote: bool = False,
    service_settings: Mapping[str, str] | None = None,
    fresh: bool = False,
    rows: list[list[Any]] | None = None,
) -> LoadTestResult:
    """Load-test the service serving `model` (started here, or the one at `host`) against the SLOs, the
    users sending `rows` (the captured ones, `--from-capture`) or else the model's evaluation rows.

    A pass of the same model, service code, locustfile and settings is reused unless `fresh` (REUSE)."""
    if not LOCUSTFILE.is_file():
        raise StageError(f"{LOCUSTFILE} is missing; the load test needs the repository's loadtests/ folder")
    key = inputs_key(config, ("loadtest", "service"), model.version, *service_code(), LOCUSTFILE)
    record_path = model.verdict("loadtest", config.name)
    previous = model.read_optional(record_path)
    # What the registry tag speaks for: the model as released, on its evaluation rows.
    as_released = host is None and service_settings is None and rows is None
    if as_released and reusable(previous, key, REUSE, fresh=fresh):
        reporter.note(f"reused the load test of {previous['run_id']}: same model, service, profile and SLOs")
        result = _reused(config, previous, record_path)
        reporter.verdict("loadtest", result)
        return result
    spec = config.loadtest
    report_dir = workspace.run_dir(config) / "loadtest"
    report_dir.mkdir(parents=True, exist_ok=True)
    profile_path = report_dir / PROFILE_FILE
    profile = locust_profile(config, model)
    write_json(profile_path, profile if rows is None else {**profile, "rows": rows})
    reporter.note(
        f"profile {spec.profile.shape}: {spec.profile.users} users, {spec.profile.duration_s:g}s; "
        f"routes {', '.join(spec.traffic.weights)}"
    )

    target = _target(
        config,
        model,
        report_dir=report_dir,
        reporter=reporter,
        host=host,
        allow_remote=allow_remote,
        service_settings=service_settings,
    )
    with target as (url, headers, service_pid), _usage(service_pid) as usage:
        run_locust(url, headers, profile_path, report_dir, spec, reporter=reporter)

    entries = read_json(report_dir / STATS_FILE)
    stats = summarize(entries, list(spec.traffic.weights))
    checks = slo_checks(spec, stats)
    status = checked_status(checks)
    sizing = _sizing(config, usage, stats[TOTAL], reporter)
    result = LoadTestResult(
        status=status,
        headline=_headline(status, stats.get(TOTAL)),
        artifacts={"gate": report_dir / GATE_FILE, "chart": report_dir / "chart.png"},
        checks=checks,
        environment=config.name,
        url=url,
        stats=stats,
        report_dir=report_dir,
        sizing=sizing,
    )
    reporter.verdict("loadtest", result)
    record = {**result.record(), "run_id": workspace.run_id, "artifact_version": model.version}
    write_json(report_dir / GATE_FILE, record)
    chart(report_dir)
    reporter.note(f"report: {report_dir / 'report.html'} (chart {report_dir / 'chart.png'})")
    if as_released:
        write_json(record_path, {**record, "inputs": key})
        registry.tag_registered(
            config, workspace, model, registry.verdict_tags("loadtest", config.name, status), reporter
        )
    else:
        reporter.note("registry not tagged: --host or injected settings may not serve the model as released")
    return result


def _usage(pid: int | None) -> AbstractContextManager[list[Usage]]:
    """The service's process tree sampled during the run, when this stage started it."""
    return sampled_usage(pid) if pid is not None else nullcontext([])


def _sizing(config: Config, usage: list[Usage], total: RouteStats, reporter: Reporter) -> Sizing | None:
    """What the service used per 1,000 requests and the resources that suggests, printed with the arithmetic."""
    if not usage:
        reporter.note(
            "service CPU and memory not measured: the service at --host is not a process of this stage"
        )
        return None
    measured = usage[0]
    sizing = suggest(
        config,
        requests=total.requests,
        cpu_seconds=measured.cpu_seconds,
        peak_rss_bytes=measured.peak_rss_bytes,
        measured_rps=total.rps,
    )
    if sizing is None:
        return None
    reporter.note(
        f"service: {sizing.cpu_seconds_per_1000:.3f} CPU s per 1,000 requests, peak RSS {sizing.peak_rss_mib:.0f} "
        f"Mi ({measured.processes} processes, {measured.samples} samples)"
    )
    for line in sizing.arithmetic:
        reporter.note(f"  {line}")
    configured = config.deploy.resources.model_dump()
    reporter.note(f"suggested deploy.resources: {sizing.resources()} (configured: {configured})")
    return sizing


def _headline(status: str, total: RouteStats | None) -> str:
    if total is None:
        return status.upper()
    return f"{status.upper()}: p95 {total.p95_ms} ms, {total.rps or 0:.0f} req/s, {total.failures} failed"


def _reused(config: Config, record: Mapping[str, Any], record_path: Path) -> LoadTestResult:
    checks = [Check(**check) for check in record["checks"]]
    stats = {scope: RouteStats(**values) for scope, values in record["stats"].items()}
    report_dir = Path(record["report_dir"])
    return LoadTestResult(
        status=record["status"],
        headline=_headline(record["status"], stats.get(TOTAL)),
        reused=True,
        artifacts={"gate": record_path, "chart": report_dir / "chart.png"},
        checks=checks,
        environment=config.name,
        url=record["url"],
        stats=stats,
        report_dir=report_dir,
        sizing=Sizing(**record["sizing"]) if record.get("sizing") else None,
    )


def run(ctx: StageContext) -> LoadTestResult:
    args = ctx.args
    # A target off loopback is refused before any work (training included).
    host = (
        None
        if args.host is None
        else loopback_url(args.host, option="--host", allow_remote=args.allow_remote)
    )
    model = ctx.exported_model()
    c, w, r = ctx.config, ctx.workspace, ctx.reporter
    rows = None
    if args.from_capture:
        directory = capture_directory(c.capture.directory, w.root)
        replay = captured_rows(directory, model.read_card(), c.drift.log_inputs.sensitive)
        r.note(f"the users send {replay.summary(directory)}")
        rows = replay.rows
    return loadtest(
        c, w, r, model=model, host=host, allow_remote=args.allow_remote, fresh=args.fresh, rows=rows
    )
