"""The local rehearsal: stable and candidate as real service processes, Caddy splitting live Locust
traffic between them, and the plan executed by the engine with analysis from each version's /metrics.

Whatever happens (abort, a dead process, Caddy failing, Ctrl-C), every process started here is
stopped on the way out, and after an abort the stable version was serving 100 % of the traffic.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.adapters import registry
from pipeline.adapters.caddy import CaddySplitter
from pipeline.adapters.service_process import ServiceProcess, running_service, stop
from pipeline.config import PREDICTION_SHIFT_METRICS, Config, ConfigError
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.rollout.analysis import EMPTY, Scrape, scrape
from pipeline.rollout.engine import Outcome, execute
from pipeline.rollout.plan import Analyze, Pause, Plan, Promote, plan
from pipeline.stages import loadtest, promote
from pipeline.stages.export import CARD_FILE, EVAL_FILE, exported_model
from pipeline.workspace import Workspace, read_json, write_json

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


@dataclass(frozen=True)
class RolloutResult:
    environment: str
    status: str
    """'pass' when promoted, 'fail' when aborted (the CLI stops `run` on 'fail')."""
    outcome: Outcome
    report_dir: Path

    @property
    def failures(self) -> list[str]:
        return self.outcome.failures


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

    def __init__(
        self,
        stable: ServiceProcess,
        candidate: ServiceProcess,
        config: Config,
        model_dir: Path,
        report_dir: Path,
    ) -> None:
        self.stable, self.candidate = stable, candidate
        self.config, self.model_dir, self.report_dir = config, model_dir, report_dir
        self.preview: subprocess.Popen[bytes] | None = None

    def scrape(self) -> tuple[Scrape | None, Scrape | None]:
        stable = scrape(self.stable.url, self.stable.headers) if self.stable.process.poll() is None else None
        return stable, scrape(self.candidate.url, self.candidate.headers)

    def new_alive(self) -> bool:
        return self.candidate.process.poll() is None

    def smoke(self, requests: int) -> list[str]:
        rows = read_json(self.model_dir / EVAL_FILE)["rows"]
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
            self.preview = start_traffic(
                self.config,
                self.model_dir,
                self.candidate.url,
                self.candidate.headers,
                self.report_dir / "preview-traffic",
                duration_s=plan_seconds(plan(self.config)) + TRAFFIC_MARGIN_S,
            )
        elif not on and self.preview is not None:
            stop_traffic(self.preview)
            self.preview = None

    def retire_stable(self) -> None:
        stop(self.stable.process)


def start_traffic(
    config: Config, model_dir: Path, url: str, headers: dict[str, str], report_dir: Path, *, duration_s: float
) -> subprocess.Popen[bytes]:
    """Locust with the environment's users and payloads, at a constant load for `duration_s`, in the background."""
    report_dir.mkdir(parents=True, exist_ok=True)
    profile = loadtest.locust_profile(config, model_dir)
    profile["profile"] = {**profile["profile"], "shape": "constant", "duration_s": duration_s}
    write_json(report_dir / "profile.json", profile)
    command = loadtest.locust_command(url, report_dir)
    env = {**os.environ, **loadtest.locust_environment(report_dir / "profile.json", headers)}
    with (report_dir / "locust.log").open("wb") as log:
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_traffic(process: subprocess.Popen[bytes]) -> None:
    """SIGINT lets Locust stop its users and write its final stats; stop() escalates if it hangs."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop(process)


def stable_model_dir(config: Config, workspace: Workspace) -> tuple[Path, str] | None:
    """The folder and registry version of the version serving the environment (alias `<env>`), if any."""
    mlflow = registry.client(config, workspace)
    serving = registry.alias_version(mlflow, config.model.name, config.alias)
    if serving is None:
        return None
    artifact_version = registry.version_tags(serving).get("artifact_version", f"v{serving.version}")
    directory = workspace.version_dir(config, artifact_version)
    if not (directory / CARD_FILE).is_file():
        registry.download_version(mlflow, serving, directory)
    return directory, str(serving.version)


def rollout(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    candidate_fault: str | None = None,
    approve: bool = False,
    promote_on_success: bool = False,
) -> RolloutResult:
    """Rehearse the environment's plan; with `promote_on_success` (the stage run alone), a promoted
    candidate also gets alias `<env>` (inside `run`, the promote stage that follows does it)."""
    fault = parse_fault(candidate_fault, config.name) if candidate_fault else {}
    artifact_version, candidate_dir = exported_model(config, workspace, reporter)
    serving = stable_model_dir(config, workspace)
    if serving is None:
        # A first deploy has nothing to shift traffic from; rehearsing the plan with the candidate on both
        # sides still proves the mechanics (processes, splitter, analysis) before anything is promoted.
        reporter.warn(
            f"first deploy to {config.name}: no version holds alias {config.alias!r}; "
            "the candidate plays the stable side too, so this rehearses the mechanics, not a comparison"
        )
        serving = candidate_dir, "none"
    stable_dir, stable_version = serving
    rehearsal = plan(config)
    report_dir = workspace.run_dir(config) / "rollout"
    report_dir.mkdir(parents=True, exist_ok=True)
    same = " (the same model: a rehearsal of the mechanics)" if stable_dir == candidate_dir else ""
    reporter.note(
        f"stable: version {stable_version} ({stable_dir.name}); candidate: {candidate_dir.name}{same}"
    )
    if fault:
        reporter.warn(f"the candidate runs with injected faults: {fault}")
    without_profile = [
        name
        for name, folder in (("stable", stable_dir), ("candidate", candidate_dir))
        if "reference" not in read_json(folder / CARD_FILE)
    ]
    if without_profile and any(t.metric in PREDICTION_SHIFT_METRICS for t in rehearsal.analysis.thresholds):
        reporter.warn(
            f"the {' and '.join(without_profile)} card has no reference profile (exported before drift "
            "monitoring): the prediction-shift checks cannot compare the versions in this rollout"
        )
    reporter.note(f"{rehearsal.strategy} plan for {config.name}:")
    for line in rehearsal.describe():
        reporter.note(f"  {line}")

    # With auth on, both versions accept the same throw-away key, so traffic through the proxy works.
    api_key = secrets.token_urlsafe(24)
    with ExitStack() as stack:
        stable = stack.enter_context(
            running_service(config, stable_dir, report_dir / "stable.log", api_key=api_key)
        )
        candidate = stack.enter_context(
            running_service(
                config, candidate_dir, report_dir / "candidate.log", settings=fault, api_key=api_key
            )
        )
        splitter = CaddySplitter.start(_dial(stable.url), _dial(candidate.url), report_dir)
        stack.callback(splitter.stop)
        headers = candidate.headers
        traffic = start_traffic(
            config,
            candidate_dir,
            splitter.url,
            headers,
            report_dir / "traffic",
            duration_s=plan_seconds(rehearsal) + TRAFFIC_MARGIN_S,
        )
        stack.callback(stop_traffic, traffic)
        _wait_for_traffic(stable, rehearsal.analysis.min_requests, traffic)
        versions = LocalVersions(stable, candidate, config, candidate_dir, report_dir)
        stack.callback(versions.preview_traffic, False)
        reporter.note(
            f"live traffic through Caddy at {splitter.url} (Locust, {config.loadtest.profile.users} users)"
        )
        started = time.time()
        outcome = execute(rehearsal, splitter, versions, reporter, approve=lambda: approve)

    status = "pass" if outcome.status == "promoted" else "fail"
    timeline = {
        "environment": config.name,
        "strategy": rehearsal.strategy,
        "plan": rehearsal.describe(),
        "stable": {"registry_version": stable_version, "artifact_version": stable_dir.name},
        "candidate": {"artifact_version": artifact_version, "fault": fault},
        "user_requests": user_request_counts(
            report_dir / "traffic", None if outcome.aborted_at_s is None else started + outcome.aborted_at_s
        ),
        **outcome.as_dict(),
    }
    write_json(report_dir / TIMELINE_FILE, timeline)
    chart(timeline, report_dir / CHART_FILE)
    reporter.note(f"timeline: {report_dir / TIMELINE_FILE} (chart {report_dir / CHART_FILE})")
    _tag(config, workspace, candidate_dir, status, reporter)
    if status == "pass" and promote_on_success:
        if (candidate_dir / "registration.json").is_file():
            promote.promote(config, workspace, reporter)
        else:
            reporter.note("the candidate is not registered; alias unchanged (run register, then promote)")
    return RolloutResult(config.name, status, outcome, report_dir)


def _wait_for_traffic(stable: ServiceProcess, requests: int, traffic: subprocess.Popen[bytes]) -> None:
    """Start the plan only once user traffic flows, so the first window is not judged on Locust's start-up."""
    baseline = scrape(stable.url, stable.headers) or EMPTY
    deadline = time.monotonic() + TRAFFIC_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if traffic.poll() is not None:
            raise StageError(f"Locust exited with {traffic.returncode} before the rollout began; see its log")
        now = scrape(stable.url, stable.headers)
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


def _tag(config: Config, workspace: Workspace, candidate_dir: Path, status: str, reporter: Reporter) -> None:
    registration = candidate_dir / "registration.json"
    if not registration.is_file():
        reporter.note("the candidate is not registered; no registry tag written")
        return
    model_version = read_json(registration)["model_version"]
    mlflow = registry.client(config, workspace)
    for key in ("rollout", f"rollout.{config.name}"):
        mlflow.set_model_version_tag(config.model.name, model_version, key, status)
    reporter.note(f"tagged version {model_version}: rollout={status}")
