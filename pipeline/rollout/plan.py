"""The pure planner: an environment's `rollout:` section becomes an ordered, immutable list of actions.

The local rehearsal executes this plan against real processes, and the Kubernetes renderer turns the
same object into an Argo Rollout and its AnalysisTemplate, so the two cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import DEFAULT_MIN_EFFECT_MS, LATENCY_METRICS, AnalysisSpec, Config


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


Action = SetWeight | Pause | Analyze | Smoke | AwaitApproval | Promote


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
        for step in rollout.steps:
            if step.set_weight is not None:
                actions.append(SetWeight(step.set_weight))
            elif step.pause is not None:
                actions.append(Pause(step.pause.seconds))
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


def fast_rollback(config: Config) -> Plan:
    """Back to a release that served within `rollout.rollback_window`: all traffic at once, no steps and
    no analysis (what Argo Rollouts does within spec.rollbackWindow), then the old version drains."""
    return Plan(
        config.name,
        config.rollout.strategy,
        analysis_of(config.rollout.analysis),
        (Promote(config.rollout.scale_down_delay_seconds),),
    )


def _describe(action: Action) -> str:
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
