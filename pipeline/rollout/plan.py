"""The pure planner: an environment's `rollout:` section becomes an ordered, immutable list of actions.

The local rehearsal executes this plan against real processes, and the Kubernetes renderer turns the
same object into an Argo Rollout and its AnalysisTemplate, so the two cannot disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pipeline.config import DEFAULT_MIN_EFFECT_MS, LATENCY_METRICS, AnalysisSpec, Config, ConfigError
from pipeline.config.models import HeaderRouteSpec

SHADOW_ROUTE = "shadow"
"""The managed route the cluster's shadow mirror uses (pipeline/deploy/shadow.py): no header route takes it."""
RE2_REFUSED = re.compile(r"\(\?<?[=!]|\\[1-9]")
"""Lookarounds and backreferences: Python's `re` takes them, RE2 (Gateway implementations, Caddy) does not."""


@dataclass(frozen=True)
class Threshold:
    """A bound on one metric of the new version: absolute, or relative to the stable version."""

    metric: str
    max: float | None
    max_vs_stable: float | None
    min_effect_ms: float = 0.0
    """Latency vs stable: the smallest difference that counts as slower."""


@dataclass(frozen=True)
class Analysis:
    """How a version is judged: `count` conclusive windows of `interval_seconds`, aborting past
    `failure_limit` failed or `inconclusive_limit` inconclusive ones (each inconclusive window is retried)."""

    interval_seconds: int
    count: int
    failure_limit: int
    min_requests: int
    thresholds: tuple[Threshold, ...]
    inconclusive_limit: int = 0
    min_predictions: int = 1
    significance_level: float = 0.01

    @property
    def longest_seconds(self) -> int:
        """How long one analysis step can last: every window, retries of inconclusive ones included."""
        return (self.count + self.inconclusive_limit) * self.interval_seconds


@dataclass(frozen=True)
class SetWeight:
    """Send `weight` percent of user traffic to the new version."""

    weight: int


@dataclass(frozen=True)
class Pause:
    seconds: int


@dataclass(frozen=True)
class HeaderMatch:
    """A request header's value matched `exact`ly, by `prefix` or by a whole-value `regex` (RE2)."""

    header: str
    kind: Literal["exact", "prefix", "regex"]
    value: str

    def describe(self) -> str:
        return (
            f"{self.header}: {self.value}"
            if self.kind == "exact"
            else f"{self.header} {self.kind} {self.value}"
        )

    def pattern(self) -> str:
        """The whole value's RE2 pattern (what a local router matches): exact and prefix values escaped, a
        regex anchored at both ends."""
        if self.kind == "regex":
            return f"^(?:{self.value})$"
        return f"^{re.escape(self.value)}{'$' if self.kind == 'exact' else ''}"


@dataclass(frozen=True)
class SetHeaderRoute:
    """Requests carrying every header of `match` go to the new version whatever the weight (Argo's
    setHeaderRoute); an empty `match` removes the route `name`. The rollout's end removes them all."""

    name: str
    match: tuple[HeaderMatch, ...]

    def describe(self) -> str:
        if not self.match:
            return f"remove header route {self.name}"
        headers = " and ".join(m.describe() for m in self.match)
        return f"header route {self.name}: requests with {headers} go to the new version"


@dataclass(frozen=True)
class Analyze:
    """Judge the new version (`target`: the canary under user traffic, or the preview under test traffic)."""

    target: str
    analysis: Analysis


@dataclass(frozen=True)
class Smoke:
    """Send `requests` predictions straight to the preview; any failure aborts."""

    requests: int


@dataclass(frozen=True)
class AwaitApproval:
    """A person promotes (blue-green with auto-promotion off)."""


@dataclass(frozen=True)
class Promote:
    """All traffic to the new version at once, then stop the old one after `scale_down_delay_seconds`."""

    scale_down_delay_seconds: int


Action = SetWeight | Pause | Analyze | Smoke | AwaitApproval | Promote | SetHeaderRoute


@dataclass(frozen=True)
class Plan:
    environment: str
    strategy: str
    analysis: Analysis
    actions: tuple[Action, ...]

    def describe(self) -> list[str]:
        """One line per action, for people and logs."""
        return [f"{n}. {_describe(action)}" for n, action in enumerate(self.actions, start=1)]


def analysis_of(spec: AnalysisSpec) -> Analysis:
    return Analysis(
        interval_seconds=spec.interval_seconds,
        count=spec.count,
        failure_limit=spec.failure_limit,
        min_requests=spec.min_requests,
        thresholds=tuple(
            Threshold(
                metric,
                bound.max,
                bound.max_vs_stable,
                _min_effect_ms(metric, bound.min_effect_ms),
            )
            for metric, bound in spec.metrics.items()
        ),
        inconclusive_limit=spec.inconclusive_limit,
        min_predictions=spec.min_predictions,
        significance_level=spec.significance_level,
    )


def _min_effect_ms(metric: str, configured: float | None) -> float:
    if metric not in LATENCY_METRICS:
        return 0.0
    return DEFAULT_MIN_EFFECT_MS if configured is None else configured


def plan(config: Config) -> Plan:
    rollout = config.rollout
    analysis = analysis_of(rollout.analysis)
    actions: list[Action] = []
    if rollout.strategy == "canary":
        routes: set[str] = set()
        for index, step in enumerate(rollout.steps):
            if step.set_weight is not None:
                actions.append(SetWeight(step.set_weight))
            elif step.pause is not None:
                actions.append(Pause(step.pause.seconds))
            elif step.set_header_route is not None:
                where = f"environments/{config.name}.yaml: rollout.steps.{index}.set_header_route"
                actions.append(header_route(step.set_header_route, routes, where))
            else:
                actions.append(Analyze("canary", analysis))
    else:
        blue_green = rollout.blue_green
        actions.append(Smoke(blue_green.smoke_requests))
        if blue_green.preview_analysis:
            actions.append(Analyze("preview", analysis))
        if not blue_green.auto_promotion:
            actions.append(AwaitApproval())
    actions.append(Promote(rollout.scale_down_delay_seconds))
    return Plan(config.name, rollout.strategy, analysis, tuple(actions))


def header_route(spec: HeaderRouteSpec, routes: set[str], where: str) -> SetHeaderRoute:
    """One set_header_route step, checked against the routes set before it (`routes`, updated)."""
    if spec.name == SHADOW_ROUTE:
        raise ConfigError(f"{where}.name: {SHADOW_ROUTE!r} is the shadow mirror's route: choose another name")
    if spec.match is None:
        if spec.name not in routes:
            raise ConfigError(
                f"{where}: removes route {spec.name!r}, which no step before it sets: give `match`, or "
                "remove a route set earlier"
            )
        routes.discard(spec.name)
        return SetHeaderRoute(spec.name, ())
    # Gateway API HTTPHeaderMatch: "If multiple entries specify equivalent header names, only the first
    # entry with an equivalent name MUST be considered" (names compare case-insensitively): refused here.
    names = [match.header.lower() for match in spec.match]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.match: a header appears twice (names are case-insensitive): list it once")
    matches = []
    for match in spec.match:
        kinds: tuple[Literal["exact", "prefix", "regex"], ...] = ("exact", "prefix", "regex")
        kind = next(k for k in kinds if getattr(match.value, k) is not None)
        value = getattr(match.value, kind)
        if kind == "regex":
            try:
                re.compile(value)
            except re.error as exc:
                raise ConfigError(f"{where}.match ({match.header}): invalid regex {value!r}: {exc}") from None
            if RE2_REFUSED.search(value):
                raise ConfigError(
                    f"{where}.match ({match.header}): {value!r} uses a lookaround or backreference, which RE2 "
                    "(the Gateway's and Caddy's regex engine) lacks: rewrite it without"
                )
        matches.append(HeaderMatch(match.header, kind, value))
    routes.add(spec.name)
    return SetHeaderRoute(spec.name, tuple(matches))


def header_routes(rollout_plan: Plan) -> list[str]:
    """Every header route's name the plan sets, in order (Argo's trafficRouting.managedRoutes)."""
    names: list[str] = []
    for action in rollout_plan.actions:
        if isinstance(action, SetHeaderRoute) and action.name not in names:
            names.append(action.name)
    return names


def fast_rollback(config: Config) -> Plan:
    """Back to a release that served within `rollout.rollback_window`: all traffic at once, no steps and
    no analysis (what Argo Rollouts does within spec.rollbackWindow), then the old version drains."""
    return Plan(
        config.name,
        config.rollout.strategy,
        analysis_of(config.rollout.analysis),
        (Promote(config.rollout.scale_down_delay_seconds),),
    )


def _describe(action: Action) -> str:  # noqa: PLR0911  (one line per kind of action)
    match action:
        case SetWeight(weight):
            return f"set weight {weight}% to the new version"
        case Pause(seconds):
            return f"pause {seconds}s"
        case Analyze(target, analysis):
            bounds = ", ".join(
                " and ".join(
                    part
                    for part in (
                        f"{t.metric} <= {t.max:g}" if t.max is not None else "",
                        _describe_vs_stable(t, analysis.significance_level)
                        if t.max_vs_stable is not None
                        else "",
                    )
                    if part
                )
                for t in analysis.thresholds
            )
            return (
                f"analyse the {target}: {analysis.count} x {analysis.interval_seconds}s windows, "
                f"abort after {analysis.failure_limit + 1} failed or {analysis.inconclusive_limit + 1} "
                f"inconclusive; {bounds}"
            )
        case SetHeaderRoute():
            return action.describe()
        case Smoke(requests):
            return f"smoke-test the preview with {requests} predictions"
        case AwaitApproval():
            return "wait for a person to approve the switch"
        case Promote(delay):
            return f"promote: 100% to the new version, stop the old one after {delay}s"


def _describe_vs_stable(threshold: Threshold, significance_level: float) -> str:
    effect = f" and +{threshold.min_effect_ms:g}ms" if threshold.metric in LATENCY_METRICS else ""
    return (
        f"{threshold.metric} not above {threshold.max_vs_stable:g}x stable{effect} "
        f"with p < {significance_level:g}"
    )
