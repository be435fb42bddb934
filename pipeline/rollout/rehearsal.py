"""The local rehearsal: stable and candidate as real service processes, Caddy splitting live Locust
traffic between them (their API ports only), and the plan executed by the engine with analysis from each
version's /metrics on its metrics port.

Whatever happens (abort, a dead process, Caddy failing, Ctrl-C), every process started here is
stopped on the way out, and after an abort the stable version was serving 100 % of the traffic.

Over 400 lines on purpose: the processes, Caddy and the traffic are started and stopped in one frame, so
the promise above (everything stopped, stable at 100 % after an abort) is checked in one place.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pipeline.adapters import registry
from pipeline.adapters.caddy import CaddySplitter
from pipeline.adapters.processes import signals_deferred, stop
from pipeline.adapters.service_process import (
    FALLBACK_DIR_ENV,
    ServiceProcess,
    running_versions,
)
from pipeline.artifacts import ModelDir, inputs_key, service_code
from pipeline.config import PREDICTION_SHIFT_METRICS, Config, ConfigError
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.release.compatibility import same_requests
from pipeline.rollout.analysis import EMPTY, Scrape, for_task, scrape
from pipeline.rollout.engine import Outcome, execute
from pipeline.rollout.plan import Analyze, Pause, Plan, Promote, fast_rollback, plan
from pipeline.stage import Check, Reuse, StageResult, reusable
from pipeline.workspace import Workspace, write_json

TIMELINE_FILE = "timeline.json"
CHART_FILE = "timeline.png"
TRAFFIC_START_TIMEOUT_S = 30
TRAFFIC_MARGIN_S = 60
"""Extra Locust run time beyond the plan's own length; the traffic is stopped when the rollout ends."""
PROXY_RESET_ERRORS = ("HTTPConnectionClosed", "ConnectionResetError", "RemoteDisconnected")
"""Locust's names for a connection dropped before an answer: what a splitter reload does."""
FAULTS = {
    "latency": "MODEL_SERVICE_FAULT_LATENCY_MS",
    "errors": "MODEL_SERVICE_FAULT_ERROR_RATIO",
    "shift": "MODEL_SERVICE_FAULT_INVERT_SCORES",
}
LATENCY_SHARE = "MODEL_SERVICE_FAULT_LATENCY_RATIO"


class LoadGenerator(Protocol):
    """Background user traffic against one URL (adapters.locust.LocustTraffic)."""

    def start(
        self, url: str, headers: Mapping[str, str], report_dir: Path, *, duration_s: float
    ) -> subprocess.Popen[bytes]: ...

    def stop(self, process: subprocess.Popen[bytes]) -> None: ...


@dataclass(frozen=True, kw_only=True)
class RolloutResult(StageResult):
    environment: str
    outcome: Outcome | None
    """What the engine decided; None when an earlier rehearsal of the same inputs was reused."""
    restored_after_s: float | None = None
    """Seconds from the rehearsal's start (processes, splitter, users) until the new version took all
    traffic: for a rollback, the time to restore; None when it did not."""
    switched_after_s: float | None = None
    """The part of `restored_after_s` the plan took (its steps and analysis; a fast rollback has none)."""


REUSE: Reuse = "pass"
"""A rehearsal measures this machine too: a pass stands for the same inputs, a failure is rehearsed again."""


def parse_fault(text: str, environment: str) -> dict[str, str]:
    """`latency=200ms` (every request), `latency=3ms@0.08` (8 % of requests: tail noise), `errors=0.2` or
    `shift` (scores inverted: healthy by HTTP, different predictions) → the candidate's MODEL_SERVICE_FAULT_*
    settings."""
    if environment == "prod":
        raise ConfigError("--candidate-fault is refused for prod: faults are for rehearsals")
    if text == "shift":
        return {FAULTS["shift"]: "true"}
    kind, _, value = text.partition("=")
    if kind not in FAULTS or kind == "shift" or not value:
        raise ConfigError(
            f"--candidate-fault {text!r}: expected latency=<ms>ms, latency=<ms>ms@<share>, errors=<ratio> "
            "or shift, e.g. errors=0.2 or latency=3ms@0.08"
        )
    value, at, share = value.partition("@") if kind == "latency" else (value, "", "")
    number = value.removesuffix("ms") if kind == "latency" else value
    parsed, parsed_share = _number(text, number), _number(text, share) if at else 1.0
    if kind == "errors" and not 0 < parsed <= 1:
        raise ConfigError(f"--candidate-fault {text!r}: an error ratio is between 0 and 1")
    if not 0 < parsed_share <= 1:
        raise ConfigError(f"--candidate-fault {text!r}: the share of delayed requests is between 0 and 1")
    settings = {FAULTS[kind]: f"{parsed:g}"}
    return settings | {LATENCY_SHARE: f"{parsed_share:g}"} if at else settings


def fallback_setting(config: Config, stable: ModelDir, candidate: ModelDir) -> dict[str, str]:
    """MODEL_SERVICE_FALLBACK_DIR for the candidate as the image would bake it: the stable version for
    `service.fallback.source: previous` (none on a first deploy), the named export (a sibling folder)
    for `export`."""
    fallback = config.service.fallback
    if fallback is None:
        return {}
    if fallback.source == "export":
        assert fallback.version is not None  # the config's validator
        return {FALLBACK_DIR_ENV: str(candidate.path.parent / fallback.version)}
    if stable.path == candidate.path or same_requests(candidate.read_card(), stable.read_card()) is not None:
        return {}  # the service refuses a fallback that cannot answer its requests (a breaking release)
    return {FALLBACK_DIR_ENV: str(stable.path)}


def _number(text: str, number: str) -> float:
    try:
        return float(number)
    except ValueError:
        raise ConfigError(f"--candidate-fault {text!r}: {number!r} is not a number") from None


def plan_seconds(rehearsal: Plan) -> float:
    """How long the plan takes at least: the traffic must outlast it."""
    total = 0.0
    for action in rehearsal.actions:
        if isinstance(action, Pause):
            total += action.seconds
        elif isinstance(action, Analyze):
            total += action.analysis.longest_seconds
        elif isinstance(action, Promote):
            total += action.scale_down_delay_seconds
    return total


class LocalVersions:
    """The two versions as the engine sees them; implements engine.Versions."""

    def __init__(  # noqa: PLR0917  (the engine's view needs both processes and what they serve)
        self,
        stable: ServiceProcess,
        candidate: ServiceProcess,
        model: ModelDir,
        traffic: LoadGenerator,
        report_dir: Path,
        traffic_seconds: float,
    ) -> None:
        self.stable, self.candidate = stable, candidate
        self.model, self.traffic, self.report_dir = model, traffic, report_dir
        self.traffic_seconds = traffic_seconds
        self.preview: subprocess.Popen[bytes] | None = None

    def scrape(self) -> tuple[Scrape | None, Scrape | None]:
        stable = scrape(self.stable.metrics_url) if self.stable.process.poll() is None else None
        return stable, scrape(self.candidate.metrics_url)

    def new_alive(self) -> bool:
        return self.candidate.process.poll() is None

    def smoke(self, requests: int) -> list[str]:
        rows = self.model.read_evaluation()["rows"]
        problems = []
        for n in range(requests):
            body = json.dumps({"instances": [rows[n % len(rows)]]}).encode()
            request = urllib.request.Request(
                f"{self.candidate.url}/v1/predict",
                data=body,
                headers={"Content-Type": "application/json", **self.candidate.headers},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if len(json.loads(response.read())["predictions"]) != 1:
                        problems.append(f"request {n + 1}: expected 1 prediction")
            except urllib.error.HTTPError as exc:
                problems.append(f"request {n + 1}: HTTP {exc.code}")
            except (urllib.error.URLError, OSError) as exc:
                problems.append(f"request {n + 1}: {exc}")
        return problems

    def preview_traffic(self, on: bool) -> None:
        if on and self.preview is None:
            self.preview = self.traffic.start(
                self.candidate.url,
                self.candidate.headers,
                self.report_dir / "preview-traffic",
                duration_s=self.traffic_seconds,
            )
        elif not on and self.preview is not None:
            self.traffic.stop(self.preview)
            self.preview = None

    def retire_stable(self) -> None:
        stop(self.stable.process)


def rollout(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    candidate: ModelDir,
    stable: tuple[ModelDir, str] | None,
    traffic: LoadGenerator,
    candidate_fault: str | None = None,
    approve: bool = False,
    fresh: bool = False,
    fast: bool = False,
) -> RolloutResult:
    """Rehearse the environment's plan from `stable` (folder, registry version; None on a first deploy)
    to `candidate`, with `traffic` as the users. Moves no alias: the caller promotes on a pass.

    When the candidate already serves the environment after a passed rehearsal of the same inputs,
    there is nothing to roll out: that verdict is reused unless `fresh` (or a fault is injected).
    `fast`: the candidate served within `rollout.rollback_window`, so it takes all traffic at once, no
    steps and no analysis (Argo's rollbackWindow)."""
    began = time.time()
    fault = parse_fault(candidate_fault, config.name) if candidate_fault else {}
    key = inputs_key(config, ("rollout", "service", "loadtest"), candidate.version, *service_code())
    previous = candidate.read_optional(candidate.verdict("rollout", config.name))
    serving = stable is not None and stable[0].path == candidate.path
    if serving and not fault and reusable(previous, key, REUSE, fresh=fresh):
        reporter.note(
            f"{candidate.version} already serves {config.name} after the rehearsal of {previous['run_id']} "
            "with the same plan and service: nothing to roll out (--fresh rehearses again)"
        )
        return RolloutResult(
            headline=f"{previous['strategy']}: already serving",
            reused=True,
            artifacts={"timeline": Path(previous["timeline"])},
            environment=config.name,
            outcome=None,
        )
    if stable is None:
        # A first deploy has nothing to shift traffic from; rehearsing the plan with the candidate on both
        # sides still proves the mechanics (processes, splitter, analysis) before anything is promoted.
        reporter.warn(
            f"first deploy to {config.name}: no version holds alias {config.alias!r}; "
            "the candidate plays the stable side too, so this rehearses the mechanics, not a comparison"
        )
        stable = candidate, "none"
    stable_dir, stable_version = stable
    rehearsal = fast_rollback(config) if fast else _plan_for_model(config, stable_dir, candidate, reporter)
    report_dir = workspace.run_dir(config) / "rollout"
    report_dir.mkdir(parents=True, exist_ok=True)
    same = " (the same model: a rehearsal of the mechanics)" if stable_dir == candidate else ""
    reporter.note(
        f"stable: version {stable_version} ({stable_dir.version}); candidate: {candidate.version}{same}"
    )
    if fault:
        reporter.warn(f"the candidate runs with injected faults: {fault}")
    without_profile = [
        name
        for name, folder in (("stable", stable_dir), ("candidate", candidate))
        if folder.read_card().reference is None
    ]
    if without_profile and any(t.metric in PREDICTION_SHIFT_METRICS for t in rehearsal.analysis.thresholds):
        reporter.warn(
            f"the {' and '.join(without_profile)} card has no reference profile (exported before drift "
            "monitoring): the prediction-shift checks cannot compare the versions in this rollout"
        )
    reporter.note(f"{rehearsal.strategy} plan for {config.name}:")
    for line in rehearsal.describe():
        reporter.note(f"  {line}")

    outcome, started = _run_plan(
        config, rehearsal, (stable_dir, candidate), fault, traffic, report_dir, reporter, approve=approve
    )

    status: Literal["pass", "fail"] = "pass" if outcome.status == "promoted" else "fail"
    promoted_at = next((event.at_s for event in outcome.events if event.action == "promote"), None)
    restored = None if promoted_at is None else round(started - began + promoted_at, 3)
    timeline = {
        "environment": config.name,
        "strategy": rehearsal.strategy,
        "plan": rehearsal.describe(),
        "stable": {"registry_version": stable_version, "artifact_version": stable_dir.version},
        "candidate": {"artifact_version": candidate.version, "fault": fault},
        "user_requests": user_request_counts(
            report_dir / "traffic", None if outcome.aborted_at_s is None else started + outcome.aborted_at_s
        ),
        "fast": fast,
        "restored_after_s": restored,
        "switched_after_s": promoted_at,
        **outcome.as_dict(),
    }
    write_json(report_dir / TIMELINE_FILE, timeline)
    chart(timeline, report_dir / CHART_FILE)
    reporter.note(f"timeline: {report_dir / TIMELINE_FILE} (chart {report_dir / CHART_FILE})")
    if not fault:
        verdict = {"status": status, "inputs": key, "run_id": workspace.run_id, "strategy": rehearsal.strategy,
                   "timeline": str(report_dir / TIMELINE_FILE)}  # fmt: skip
        write_json(candidate.verdict("rollout", config.name), verdict)
    registry.tag_registered(
        config, workspace, candidate, registry.verdict_tags("rollout", config.name, status), reporter
    )
    result = RolloutResult(
        status=status,
        headline=str(outcome.reason) if status == "fail" else f"{outcome.strategy}: promoted",
        failures=outcome.failures,  # the abort's reason, also when no step's limit was reached
        artifacts={"timeline": report_dir / TIMELINE_FILE, "chart": report_dir / CHART_FILE},
        checks=[*outcome.checks, *_user_checks(timeline["user_requests"])],
        environment=config.name,
        outcome=outcome,
        restored_after_s=restored,
        switched_after_s=promoted_at,
    )
    reporter.verdict("rollout", result)
    return result


def _user_checks(counts: Mapping[str, Any]) -> list[Check]:
    """What the simulated users saw, beside the gated checks (the analysis judges the versions' own
    metrics; the splitter's dropped connections are the rehearsal's, not a version's)."""
    if not counts:
        return []
    seen = [
        ("requests", counts["requests"], ""),
        ("failed answers", counts["failures"], ", ".join(counts["failure_kinds"])),
        (
            "dropped connections",
            counts["proxy_resets"],
            "the local splitter's config reloads, one per weight change",
        ),
    ]
    return [
        Check(scope="users", metric=metric, value=value, result="info", note=note)
        for metric, value, note in seen
    ]


def _plan_for_model(config: Config, stable: ModelDir, candidate: ModelDir, reporter: Reporter) -> Plan:
    """The environment's plan for the candidate's task: a regression has no class metrics, and its score
    PSI compares each version's predicted values in its own card's reference bins (quantiles)."""
    configured = plan(config)
    task = candidate.read_card().task
    rehearsal = for_task(configured, task)
    if task != "regression":
        return rehearsal
    dropped = sorted(
        {t.metric for t in configured.analysis.thresholds} - {t.metric for t in rehearsal.analysis.thresholds}
    )
    if dropped:
        reporter.note(f"regression model: {', '.join(dropped)} (shares of predicted classes) does not apply")
    references = [folder.read_card().reference for folder in (stable, candidate)]
    edges = [None if reference is None else reference.score.edges for reference in references]
    if edges[0] != edges[1]:
        reporter.note(
            "score_psi: the two cards' score bins differ (quantiles of each model's predictions): it compares "
            "where each version's predictions fall within its own reference, bin by bin"
        )
    return rehearsal


def _run_plan(  # noqa: PLR0917  (the rehearsal's parts, each named once)
    config: Config,
    rehearsal: Plan,
    versions_dirs: tuple[ModelDir, ModelDir],
    fault: dict[str, str],
    traffic: LoadGenerator,
    report_dir: Path,
    reporter: Reporter,
    *,
    approve: bool,
) -> tuple[Outcome, float]:
    """Start stable and candidate, Caddy in front of them and the users, execute the plan; stop all of
    it whatever happens. Returns the outcome and when the plan started (epoch seconds)."""
    stable_dir, candidate = versions_dirs
    traffic_seconds = plan_seconds(rehearsal) + TRAFFIC_MARGIN_S
    # Cleanup runs with signals held: a second signal (CI follows SIGINT with SIGTERM) must not cut it short.
    stack = ExitStack()
    try:
        stable_process, candidate_process = stack.enter_context(
            running_versions(
                config,
                stable_dir.path,
                candidate.path,
                report_dir,
                candidate_settings={**fault, **fallback_setting(config, stable_dir, candidate)},
            )
        )
        splitter = CaddySplitter.start(_dial(stable_process.url), _dial(candidate_process.url), report_dir)
        stack.callback(splitter.stop)
        users = traffic.start(
            splitter.url, candidate_process.headers, report_dir / "traffic", duration_s=traffic_seconds
        )
        stack.callback(traffic.stop, users)
        _wait_for_traffic(stable_process, rehearsal.analysis.min_requests, users)
        versions = LocalVersions(
            stable_process, candidate_process, candidate, traffic, report_dir, traffic_seconds
        )
        stack.callback(versions.preview_traffic, False)
        reporter.note(
            f"live traffic through Caddy at {splitter.url} (Locust, {config.loadtest.profile.users} users)"
        )
        started = time.time()
        outcome = execute(rehearsal, splitter, versions, reporter, approve=lambda: approve)
    finally:
        with signals_deferred():
            stack.close()
    return outcome, started


def _wait_for_traffic(stable: ServiceProcess, requests: int, traffic: subprocess.Popen[bytes]) -> None:
    """Start the plan only once user traffic flows, so the first window is not judged on Locust's start-up."""
    baseline = scrape(stable.metrics_url) or EMPTY
    deadline = time.monotonic() + TRAFFIC_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if traffic.poll() is not None:
            raise StageError(f"Locust exited with {traffic.returncode} before the rollout began; see its log")
        now = scrape(stable.metrics_url)
        if now is not None and now.requests - baseline.requests >= requests:
            return
        time.sleep(0.2)
    raise StageError(f"no user traffic reached the stable version within {TRAFFIC_START_TIMEOUT_S}s")


def _dial(url: str) -> str:
    return url.removeprefix("http://")


def user_request_counts(traffic_dir: Path, aborted_at: float | None) -> dict[str, Any]:
    """What the simulated users saw, from Locust's stats and failures files.

    `failures` are answers that failed (HTTP errors from a version or from the proxy); `proxy_resets`
    are connections the local splitter dropped while reloading its config for a weight change (Caddy
    applies every admin-API change as a config reload). They are kept apart because they are an
    artefact of the rehearsal's splitter, not of either version. `failures_after_abort` counts failed
    answers last seen after the abort (`aborted_at`, epoch seconds)."""
    stats, failures_csv = traffic_dir / "locust_stats.csv", traffic_dir / "locust_failures.csv"
    if not stats.is_file() or not failures_csv.is_file():
        return {}
    with stats.open(newline="") as handle:
        total = next((row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"), None)
    with failures_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    resets = [row for row in rows if row["Error"].startswith(PROXY_RESET_ERRORS)]
    failed = [row for row in rows if not row["Error"].startswith(PROXY_RESET_ERRORS)]
    counts: dict[str, Any] = {
        "requests": int(total["Request Count"]) if total else 0,
        "failures": sum(int(row["Occurrences"]) for row in failed),
        "proxy_resets": sum(int(row["Occurrences"]) for row in resets),
        "failure_kinds": sorted({row["Error"] for row in failed}),
    }
    if aborted_at is not None:
        counts["failures_after_abort"] = sum(
            int(row["Occurrences"])
            for row in failed
            if datetime.fromisoformat(row["Last Seen"]).timestamp() > aborted_at + 1
        )
    return counts


def chart(timeline: dict[str, Any], path: Path) -> None:
    """Traffic weight, and per-version error ratio and p95, over the rollout's time."""
    import matplotlib as mpl  # noqa: PLC0415  (slow import, only here)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    events = timeline["events"]
    figure, (weights, errors, latency) = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    weights.step([e["at_s"] for e in events], [e["weight"] for e in events], where="post", color="tab:purple")
    weights.set_ylabel("weight to new (%)")
    weights.set_ylim(-5, 105)
    windows = [e for e in events if e["action"] == "analysis"]
    for side, color in (("stable", "tab:blue"), ("new", "tab:orange")):
        points = [(e["at_s"], e[side]) for e in windows if e[side]]
        times = [t for t, _ in points]
        errors.plot(times, [w["error_ratio"] or 0 for _, w in points], "o-", color=color, label=side)
        latency.plot(times, [w["p95_ms"] or 0 for _, w in points], "o-", color=color, label=side)
    errors.set_ylabel("error ratio")
    latency.set_ylabel("p95 (ms)")
    latency.set_xlabel("seconds since the rollout started")
    errors.legend()
    for event in events:
        if event["action"] in {"abort", "promote"}:
            for axis in (weights, errors, latency):
                axis.axvline(
                    event["at_s"], color="red" if event["action"] == "abort" else "green", linestyle="--"
                )
    figure.suptitle(f"{timeline['environment']} {timeline['strategy']}: {timeline['status']}")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
