"""What the gate and the rollout do with a release's compatibility: compare with the champion on the rows
it can read, say loudly what a breaking release breaks, and roll it out by the plan `rollout.breaking`
names, never by a canary that would send old requests to a model that refuses them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.ml.scoring import better_delta
from pipeline.release.compatibility import LEVELS, Compatibility
from pipeline.stage import Check

LEVEL_SCALE = "0 same, 1 additive, 2 breaking"


def projected_rows(evaluation: dict[str, Any], features: Sequence[str]) -> list[list[Any]] | None:
    """The evaluation rows cut to `features`, in that order (another version's own), by name; None when
    a feature is not in the rows."""
    index = {name: i for i, name in enumerate(evaluation["features"])}
    if any(name not in index for name in features):
        return None
    columns = [index[name] for name in features]
    return [[row[i] for i in columns] for row in evaluation["rows"]]


def checks_for(
    config: Config,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    *,
    against: str = "champion",
    scope: str = "",
) -> list[Check]:
    """Every configured check of `gates.metrics`, in config order; a missing value fails (never a silent
    pass). A delta is positive when the candidate is better, whichever way the metric improves.

    The gate compares a candidate with the champion; `pipeline evaluate` compares a version's live
    metrics with its own offline evaluation (`against="offline"`, each version's checks under `scope`)."""
    checks: list[Check] = []
    for metric, bounds in config.gates.metrics.items():
        value = candidate.get(metric)
        name = f"{scope} {metric}" if scope else metric
        if bounds.min is not None:
            checks.append(Check.bounded(name, "", value, ">=", bounds.min))
        if bounds.max is not None:
            checks.append(Check.bounded(name, "", value, "<=", bounds.max))
        if bounds.vs_champion is None or champion is None:
            continue
        old = champion.get(metric)
        delta = better_delta(metric, value, old) if value is not None and old is not None else None
        versus = "" if old is None else f"{_shown(value)} vs {against} {old:.4g}"
        if bounds.vs_champion.min_delta is not None:
            limit = bounds.vs_champion.min_delta
            checks.append(Check.bounded(name, f"delta vs {against}", delta, ">=", limit, note=versus))
        if bounds.vs_champion.min_relative_delta is not None:
            relative = delta / abs(old) if delta is not None and old else None
            limit = bounds.vs_champion.min_relative_delta
            checks.append(
                Check.bounded(name, f"relative delta vs {against}", relative, ">=", limit, note=versus)
            )
    return checks


def _shown(value: float | None) -> str:
    return "no value" if value is None else f"{value:.4g}"


def compatibility_check(config: Config, compatibility: Compatibility) -> Check:
    """The candidate's level against the champion, bounded by what the environment rolls out:
    `rollout.breaking: refuse` allows additive at most."""
    bound = LEVELS.index("additive") if config.rollout.breaking == "refuse" else LEVELS.index("breaking")
    value = LEVELS.index(compatibility.level)
    note = f"{compatibility.summary()} ({LEVEL_SCALE})"
    if value > bound:
        note += "; rollout.breaking is refuse: release it under a new model.name"
    return Check.bounded(
        "compatibility", f"vs v{compatibility.against}", value, "<=", bound, digits=1, note=note
    )


def say_compatibility(config: Config, compatibility: Compatibility, reporter: Reporter) -> None:
    """Every change a client would notice; for a breaking release, loudly, with what to do and the plan."""
    if not compatibility.breaking:
        for change in compatibility.changes:
            reporter.note(f"{change.level}: {change.line()}")
        return
    reporter.warn(
        f"BREAKING release for {config.name}: clients of version {compatibility.against} send requests "
        "this model refuses or reads otherwise"
    )
    for change in compatibility.changes:
        reporter.warn(f"  {change.level}: {change.line()}")
    reporter.warn(f"  {breaking_plan(config)}")


def breaking_plan(config: Config) -> str:
    if config.rollout.breaking == "refuse":
        return (
            f"rollout.breaking is refuse for {config.name}: this release does not replace the one serving; "
            "release it under a new model.name (a service beside the old one) or restore what it breaks"
        )
    return (
        f"rollout.breaking is blue-green for {config.name}: the rollout checks the preview, then moves every "
        "client at once (no canary), so clients must send the new requests from the switch on"
    )


def rollout_config(config: Config, compatibility: Compatibility | None) -> Config:
    """The config whose `rollout` a release is rolled out with: the environment's own, or the plan
    `rollout.breaking` names for a breaking release."""
    return release_rollout(config, breaking=compatibility is not None and compatibility.breaking)


def release_rollout(config: Config, *, breaking: bool) -> Config:
    """`config` with the rollout a release takes: blue-green for a breaking one (its preview analysed only
    where analysis traffic reaches a preview), else unchanged."""
    if not breaking or config.rollout.strategy == "blue-green":
        return config
    raw = config.model_dump(mode="json", by_alias=True)
    raw["rollout"]["strategy"] = "blue-green"
    preview = raw["rollout"]["blue_green"]
    preview["preview_analysis"] = preview["preview_analysis"] and config.deploy.analysis_traffic.enabled
    return Config.model_validate(raw)
