"""Execute a plan against a traffic router and the versions' own metrics; decide promote or abort.

The engine knows no processes, ports or Caddy: it sees the narrow protocols below, so every decision
path is unit-testable with fakes and the same engine serves any backend that can set a weight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.rollout.analysis import Scrape, Window, judge, window
from pipeline.rollout.plan import (
    Action,
    Analysis,
    Analyze,
    AwaitApproval,
    Pause,
    Plan,
    Promote,
    SetHeaderRoute,
    SetWeight,
    Smoke,
)
from pipeline.stage import Check

POLL_S = 0.25
PREVIEW_TRAFFIC_TIMEOUT_S = 30


class TrafficRouter(Protocol):
    def set_weight(self, weight: int) -> None:
        """Send `weight` percent of user traffic to the new version."""

    def set_header_route(self, name: str, patterns: Mapping[str, str]) -> None:
        """Send requests whose every header in `patterns` matches its RE2 pattern (HeaderMatch.pattern) to
        the new version whatever the weight; no patterns: remove the route `name`."""

    def alive(self) -> bool: ...


class Versions(Protocol):
    """What the engine can observe and do to the two versions."""

    def scrape(self) -> tuple[Scrape | None, Scrape | None]:
        """Cumulative counters of (stable, new); None for a version that does not answer."""

    def new_alive(self) -> bool: ...

    def smoke(self, requests: int) -> list[str]:
        """Send predictions straight to the new version; return what went wrong (empty: all good)."""

    def preview_traffic(self, on: bool) -> None:
        """Start or stop test traffic aimed at the new version alone (blue-green preview analysis)."""

    def retire_stable(self) -> None:
        """Stop the old version once it has drained."""


class Aborted(Exception):
    """Raised inside the engine to end the rollout; the message is the decision's reason."""


@dataclass
class Event:
    at_s: float
    step: int
    action: str
    weight: int
    detail: str = ""
    stable: dict[str, Any] | None = None
    new: dict[str, Any] | None = None
    verdict: str | None = None
    checks: list[str] | None = None
    """Every bound applied in an analysis window, with its result and numbers."""


@dataclass
class Outcome:
    status: Literal["promoted", "aborted"]
    reason: str
    strategy: str
    events: list[Event] = field(default_factory=list)
    aborted_at_s: float | None = None
    checks: list[Check] = field(default_factory=list)
    """Per smoke test and analysis step: what it counted against its limit, and why (the windows' reasons)."""

    @property
    def failures(self) -> list[str]:
        return [] if self.status == "promoted" else [self.reason]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events": [asdict(e) for e in self.events]}


@dataclass
class _Run:
    plan: Plan
    router: TrafficRouter
    versions: Versions
    reporter: Reporter
    approve: Callable[[], bool]
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    started: float = 0.0
    step: int = 0
    events: list[Event] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    header_routes: set[str] = field(default_factory=set)
    """Header routes set and not yet removed: the rollout's end removes them, as Argo removes managed routes."""

    @property
    def weight(self) -> int:
        return int(getattr(self.router, "weight", 0))

    def record(self, action: str, detail: str = "", **extra: Any) -> Event:
        event = Event(round(self.clock() - self.started, 3), self.step, action, self.weight, detail, **extra)
        self.events.append(event)
        return event

    def wait(self, seconds: float) -> None:
        """Sleep while watching both processes: a dead one ends the rollout at once."""
        deadline = self.clock() + seconds
        while (left := deadline - self.clock()) > 0:
            self.check_alive()
            self.sleep(min(POLL_S, left))
        self.check_alive()

    def check_alive(self) -> None:
        if not self.router.alive():
            raise Aborted("the traffic router (Caddy) stopped")
        if not self.versions.new_alive():
            raise Aborted("the new version's process died")

    def run(self, action: Action) -> None:
        match action:
            case SetWeight(weight):
                self.router.set_weight(weight)
                self.record("set_weight", f"{weight}% of traffic to the new version")
                self.reporter.note(f"step {self.step}: weight {weight}%")
            case SetHeaderRoute():
                self.set_header_route(action)
            case Pause(seconds):
                self.reporter.note(f"step {self.step}: pause {seconds}s at weight {self.weight}%")
                self.wait(seconds)
                self.record("pause", f"{seconds}s")
            case Smoke(requests):
                problems = self.versions.smoke(requests)
                note = problems[0] if problems else f"{requests} predictions"
                self.checks.append(
                    Check.bounded(
                        f"step {self.step} preview", "smoke failures", len(problems), "<=", 0, note=note
                    )
                )
                self.record(
                    "smoke", f"{requests} predictions to the preview", verdict="FAIL" if problems else "PASS"
                )
                if problems:
                    raise Aborted(f"preview smoke test: {problems[0]} ({len(problems)}/{requests} failed)")
                self.reporter.note(f"step {self.step}: preview answered {requests}/{requests} predictions")
            case Analyze(target, analysis):
                try:
                    if target == "preview":
                        self.versions.preview_traffic(True)
                        self.await_preview_traffic(analysis)
                    self.analyze(target, analysis)
                finally:
                    if target == "preview":
                        self.versions.preview_traffic(False)
            case AwaitApproval():
                self.record("await_approval")
                if not self.approve():
                    raise Aborted("the switch was not approved (auto-promotion is off)")
            case Promote(delay):
                self.router.set_weight(100)
                self.remove_header_routes()
                self.record("promote", "100% of traffic to the new version")
                self.reporter.note(f"step {self.step}: weight 100%; the old version drains for {delay}s")
                self.wait(delay)
                self.versions.retire_stable()
                self.record("retire_stable", "old version stopped")

    def set_header_route(self, action: SetHeaderRoute) -> None:
        self.router.set_header_route(action.name, {m.header: m.pattern() for m in action.match})
        if action.match:
            self.header_routes.add(action.name)
        else:
            self.header_routes.discard(action.name)
        self.record("set_header_route", action.describe())
        self.reporter.note(f"step {self.step}: {action.describe()}")

    def remove_header_routes(self) -> None:
        for name in sorted(self.header_routes):
            self.router.set_header_route(name, {})
        self.header_routes.clear()

    def analyze(self, target: str, analysis: Analysis) -> None:
        """Measure windows until `count` are conclusive; an inconclusive window is retried. Past
        `failure_limit` failed or `inconclusive_limit` inconclusive windows, abort."""
        scope = f"step {self.step} {target}"
        reasons: dict[str, list[str]] = {"fail": [], "inconclusive": []}
        try:
            self.measure(target, analysis, reasons)
        finally:  # also when it aborts: the step's counts say why
            limits = (
                ("fail", "failed", analysis.failure_limit),
                ("inconclusive", "inconclusive", analysis.inconclusive_limit),
            )
            for result, name, limit in limits:
                windows = reasons[result]
                self.checks.append(
                    Check.bounded(
                        scope, f"{name} windows", len(windows), "<=", limit, note="; ".join(windows)
                    )
                )

    def measure(self, target: str, analysis: Analysis, reasons: dict[str, list[str]]) -> None:
        """Windows until `count` are conclusive; each failed or inconclusive one's first reason in `reasons`."""
        conclusive = measurement = 0
        while conclusive < analysis.count:
            measurement += 1
            stable_before, new_before = self.versions.scrape()
            self.wait(analysis.interval_seconds)
            stable_after, new_after = self.versions.scrape()
            if new_before is None or new_after is None:
                raise Aborted(f"the {target} stopped answering /metrics")
            new = window(new_before, new_after)
            stable = window(stable_before, stable_after) if stable_before and stable_after else None
            verdict = judge(analysis, new, stable, label=target)
            conclusive += verdict.result != "inconclusive"
            self.record(
                "analysis",
                f"window {measurement} ({conclusive}/{analysis.count} conclusive)"
                + ("" if verdict.passed else ": " + "; ".join(verdict.reasons)),
                stable=None if stable is None else stable.as_dict(),
                new=new.as_dict(),
                verdict=verdict.result.upper(),
                checks=[f"{check.result.upper()} {check.line()}" for check in verdict.checks],
            )
            self.reporter.note(
                _progress(
                    self.step, self.weight, target, (stable, new), n=measurement, verdict=verdict.result
                )
            )
            for reason in verdict.reasons:
                self.reporter.note(f"  {verdict.result.upper()} {reason}")
            if verdict.passed:
                continue
            reasons[verdict.result].append(f"window {measurement}: {verdict.reasons[0]}")
            failed, inconclusive = len(reasons["fail"]), len(reasons["inconclusive"])
            if failed > analysis.failure_limit:
                raise Aborted(f"{verdict.reasons[0]} ({failed}/{analysis.failure_limit + 1} failed checks)")
            if inconclusive > analysis.inconclusive_limit:
                raise Aborted(
                    f"inconclusive {inconclusive} times > limit {analysis.inconclusive_limit}: "
                    f"{verdict.reasons[0]}"
                )

    def await_preview_traffic(self, analysis: Analysis) -> None:
        """Judge the preview only once its test traffic flows: Locust's start-up (seconds on a busy
        machine) is not the preview's fault, and a window without it would be 'no data'."""
        _, before = self.versions.scrape()
        deadline = self.clock() + PREVIEW_TRAFFIC_TIMEOUT_S
        while self.clock() < deadline:
            self.wait(POLL_S)
            _, now = self.versions.scrape()
            if before is None or now is None:
                raise Aborted("the preview stopped answering /metrics")
            if now.requests - before.requests >= analysis.min_requests:
                return
        raise Aborted(f"no test traffic reached the preview within {PREVIEW_TRAFFIC_TIMEOUT_S}s")


def execute(
    plan: Plan,
    router: TrafficRouter,
    versions: Versions,
    reporter: Reporter,
    *,
    approve: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Run every action in order. Any failure, a dead process or an interrupt sets weight 0 at once."""
    run = _Run(plan, router, versions, reporter, approve, clock, sleep)
    run.started = clock()
    try:
        for run.step, action in enumerate(plan.actions, start=1):
            run.check_alive()
            run.run(action)
    except (Aborted, StageError) as exc:  # StageError: the router refused a weight change
        return _abort(run, str(exc))
    except (KeyboardInterrupt, SystemExit):
        _abort(run, "interrupted")
        raise
    reporter.note(f"PROMOTE {plan.environment}: every step passed")
    return Outcome("promoted", "every step passed", plan.strategy, run.events, checks=run.checks)


def _abort(run: _Run, reason: str) -> Outcome:
    weight = run.weight
    if run.router.alive():
        try:
            run.router.set_weight(0)
            run.remove_header_routes()
        except StageError as exc:
            reason = (
                f"{reason}; setting weight 0 (or removing a header route) failed too ({exc}): "
                "the rehearsal stops the splitter"
            )
    message = f"ABORT step {run.step} (weight {weight}%): {reason}"
    run.record("abort", message)
    run.reporter.note(message)
    aborted_at = run.events[-1].at_s
    return Outcome(
        "aborted", message, run.plan.strategy, run.events, aborted_at_s=aborted_at, checks=run.checks
    )


def _progress(
    step: int, weight: int, target: str, windows: tuple[Window | None, Window], *, n: int, verdict: str
) -> str:
    stable, new = windows

    def side(name: str, w: Window | None) -> str:
        if w is None:
            return f"{name} -"
        err = "-" if w.error_ratio is None else f"{w.error_ratio:.3f}"
        p95 = "-" if w.p95_ms is None else f"{w.p95_ms:.1f}ms"
        return f"{name} {w.requests} req err {err} p95 {p95}"

    total = new.requests + (stable.requests if stable else 0)
    share = f" | share {100 * new.requests / total:.0f}%" if total and target == "canary" else ""
    return (
        f"step {step} weight {weight}% | {side('stable', stable)} | {side(target, new)}{share} | "
        f"window {n} {verdict.upper()}"
    )
