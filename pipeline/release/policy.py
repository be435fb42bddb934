"""The promotion policy of an environment (`promotion:`): may this release enter it now, and if not, which
clause blocks and when it would pass.

Clauses, each a `Clause` that becomes a check of the promote stage (and of the report):
- `promotion.from`: the release served the environment named there (alias history), and was not rolled back;
- `promotion.soak_hours`: it served there for that long, the same model version and image digest;
- `promotion.allow` / `promotion.deny[i]`: the weekly windows, read in `promotion.time_zone`;
- `freeze`: a registered-model tag `freeze.<env>` a person sets without a commit (`pipeline freeze`);
- `promotion.error_budget`: the share of the environment's error budget left (Prometheus).

Pure but for the readings handed in (`Readings`): the clock is a parameter, so every clause is tested
at the times it changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.config import Config
from pipeline.config.models import WEEKDAYS, TimeWindowSpec
from pipeline.release.history import served
from pipeline.stage import Check, CheckResult, Comparator

LOOKAHEAD_DAYS = 8
"""How far ahead the next open window is searched: a week of windows, and the day the search starts."""


@dataclass(frozen=True)
class Clause:
    """One clause's verdict: `passes_at` says when a blocking clause would pass (None: when a person acts
    or the measured value recovers; `when` says which)."""

    name: str
    passed: bool
    detail: str
    passes_at: datetime | None = None
    when: str = ""
    value: float | None = None
    comparator: Comparator | None = None
    bound: float | None = None
    """A measured clause's value and bound (its check then shows them; they agree with `passed`)."""

    def check(self) -> Check:
        note = self.detail if self.passed else f"{self.detail}; passes {self.pass_text()}"
        if self.value is not None and self.comparator is not None and self.bound is not None:
            return Check.bounded("promotion", self.name, self.value, self.comparator, self.bound, note=note)
        result: CheckResult = "pass" if self.passed else "fail"
        return Check(scope="promotion", metric=self.name, value=None, result=result, note=note)

    def pass_text(self) -> str:
        if self.passes_at is not None:
            return f"at {self.passes_at.isoformat(timespec='minutes')}" + (
                f" ({self.when})" if self.when else ""
            )
        return self.when or "when the clause holds"


@dataclass(frozen=True)
class Readings:
    """What the clauses read outside the config: the clock, the release, the registry and Prometheus."""

    now: datetime
    version: str
    image: str | None
    source_history: Sequence[Mapping[str, Any]] = ()
    """Alias moves of `promotion.from` (empty when it has none or no clause reads it)."""
    freeze: Mapping[str, Any] | None = None
    """The `freeze.<env>` tag's record when set: reason, at, by."""
    error_budget: tuple[float, float] | str | None = None
    """(5xx answers, answers) over the SLO window, or why they could not be read; None: not configured."""


def evaluate(config: Config, readings: Readings) -> list[Clause]:
    """Every configured clause, in the order above."""
    promotion = config.promotion
    clauses = []
    if promotion.from_ is not None:
        clauses += _source_clauses(config, readings)
    if promotion.allow or promotion.deny:
        clauses += window_clauses(config, readings.now)
    clauses.append(_freeze_clause(config, readings.freeze))
    if promotion.error_budget is not None:
        clauses.append(error_budget_clause(config, readings.error_budget))
    return clauses


def blocking(clauses: Sequence[Clause]) -> Clause | None:
    return next((clause for clause in clauses if not clause.passed), None)


# --- from and soak ----------------------------------------------------------------------------------------


def _same_release(image: str | None, other: str | None) -> bool:
    return image is None or other is None or image == other


def _source_clauses(config: Config, readings: Readings) -> list[Clause]:
    source, soak = config.promotion.from_, config.promotion.soak_hours
    release = f"version {readings.version}" + (f" ({readings.image})" if readings.image else "")
    stretches = [
        stretch
        for stretch in served(readings.source_history)
        if stretch.version == readings.version and _same_release(readings.image, stretch.image)
    ]
    if not stretches:
        return [
            Clause(
                "from",
                False,
                f"{release} never served {source}",
                when=f"once it served {source}: promote it there first (`python -m pipeline promote --env {source}`)",
            )
        ]
    last = stretches[-1]
    if last.ended_by == "rollback":
        return [
            Clause(
                "from",
                False,
                f"{release} was rolled back from {source} at {last.end}",
                when=f"once it served {source} again without a rollback",
            )
        ]
    clauses = [
        Clause("from", True, f"{release} served {source} from {last.start.isoformat(timespec='minutes')}")
    ]
    if soak:
        hours = last.duration(readings.now).total_seconds() / 3600
        if hours >= soak:
            clauses.append(
                Clause(
                    "soak_hours",
                    True,
                    f"served {source} {hours:.1f} h",
                    value=hours,
                    comparator=">=",
                    bound=soak,
                )
            )
        elif last.end is None:
            passes_at = last.start + timedelta(hours=soak)
            clauses.append(
                Clause(
                    "soak_hours",
                    False,
                    f"served {source} {hours:.1f} h of {soak:g} h",
                    passes_at=passes_at,
                    when=f"if it still serves {source} then",
                    value=hours,
                    comparator=">=",
                    bound=soak,
                )
            )
        else:
            clauses.append(
                Clause(
                    "soak_hours",
                    False,
                    f"served {source} {hours:.1f} h of {soak:g} h, then was replaced",
                    when=f"after it serves {source} again for {soak:g} h",
                    value=hours,
                    comparator=">=",
                    bound=soak,
                )
            )
    return clauses


# --- windows ----------------------------------------------------------------------------------------------


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def in_window(local: datetime, window: TimeWindowSpec) -> bool:
    """Whether the local time `local` is inside `window` (an overnight window belongs to the day it opens)."""
    start, end = _minutes(window.start), _minutes(window.end)
    minute = local.hour * 60 + local.minute + local.second / 60
    day = WEEKDAYS[local.weekday()]
    if start < end:
        return day in window.days and start <= minute < end
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    return (day in window.days and minute >= start) or (yesterday in window.days and minute < end)


def is_open(config: Config, moment: datetime) -> bool:
    """Allowed (no allow windows, or inside one) and inside no deny window."""
    local = moment.astimezone(ZoneInfo(config.promotion.time_zone))
    allow, deny = config.promotion.allow, config.promotion.deny
    return (not allow or any(in_window(local, w) for w in allow)) and not any(
        in_window(local, w) for w in deny
    )


def _boundaries(config: Config, now: datetime) -> Iterator[datetime]:
    """Every time a window opens or closes from a day before `now` to LOOKAHEAD_DAYS after, sorted."""
    zone = ZoneInfo(config.promotion.time_zone)
    today = now.astimezone(zone).date()
    moments = set()
    for offset in range(-1, LOOKAHEAD_DAYS + 1):
        day = today + timedelta(days=offset)
        for window in [*config.promotion.allow, *config.promotion.deny]:
            for clock in (window.start, window.end):
                moments.add(_at(day, clock, zone))
    return iter(sorted(moment for moment in moments if moment > now))


def _at(day: date, clock: str, zone: ZoneInfo) -> datetime:
    if clock == "24:00":
        return datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=zone)
    hours, minutes = clock.split(":")
    return datetime.combine(day, time(int(hours), int(minutes)), tzinfo=zone)


def next_open(config: Config, now: datetime) -> datetime | None:
    """The first moment from `now` a promotion is allowed; None when none is within LOOKAHEAD_DAYS."""
    if is_open(config, now):
        return now
    return next((moment for moment in _boundaries(config, now) if is_open(config, moment)), None)


def window_clauses(config: Config, now: datetime) -> list[Clause]:
    """`allow` (inside an allowed window) and each `deny[i]` (outside it), with the next open moment."""
    promotion = config.promotion
    zone = ZoneInfo(promotion.time_zone)
    local = now.astimezone(zone)
    shown = f"{local.strftime('%a %H:%M')} {promotion.time_zone}"
    opens = next_open(config, now)
    when = (
        ""
        if opens is not None
        else f"never within {LOOKAHEAD_DAYS} days: promotion.allow and promotion.deny leave no time open"
    )
    opens_local = None if opens is None else opens.astimezone(zone)
    clauses = []
    if promotion.allow:
        inside = any(in_window(local, w) for w in promotion.allow)
        clauses.append(
            Clause(
                "allow",
                inside,
                f"{shown} is {'inside' if inside else 'outside'} the allowed windows ({_listed(promotion.allow)})",
                passes_at=opens_local,
                when=when,
            )
        )
    for i, window in enumerate(promotion.deny):
        inside = in_window(local, window)
        clauses.append(
            Clause(
                f"deny[{i}]",
                not inside,
                f"{shown} is {'inside' if inside else 'outside'} the denied window {_listed([window])}",
                passes_at=opens_local,
                when=when,
            )
        )
    return clauses


def _listed(windows: Sequence[TimeWindowSpec]) -> str:
    return "; ".join(f"{','.join(w.days)} {w.start}-{w.end}" for w in windows)


# --- freeze and error budget ------------------------------------------------------------------------------

FREEZE_TAG = "freeze.{env}"


def freeze_tag(environment: str) -> str:
    return FREEZE_TAG.format(env=environment)


def _freeze_clause(config: Config, freeze: Mapping[str, Any] | None) -> Clause:
    tag = freeze_tag(config.name)
    if freeze is None:
        return Clause("freeze", True, f"registry tag {tag} unset")
    return Clause(
        "freeze",
        False,
        f"frozen by registry tag {tag} (set {freeze.get('at', '?')} by {freeze.get('by', '?')}: {freeze.get('reason', '')})",
        when=f"when a person lifts it: `python -m pipeline freeze --env {config.name} --lift`",
    )


def error_budget_clause(config: Config, reading: tuple[float, float] | str | None) -> Clause:
    """The share of the budget left: 1 - 5xx / (SLO error ratio x answers) over the window."""
    spec = config.promotion.error_budget
    assert spec is not None  # evaluate() asks only when configured
    slo = config.loadtest.slo.total.max_error_ratio
    if isinstance(reading, str) or reading is None or slo is None:
        why = reading if isinstance(reading, str) else "loadtest.slo.total.max_error_ratio is unset (the SLO)"
        return Clause(
            "error_budget",
            False,
            f"the error budget could not be read: {why}",
            when="once Prometheus answers (promotion.error_budget.prometheus_url), or the clause is removed",
        )
    errors, answers = reading
    budget = slo * answers
    remaining = 1.0 if budget == 0 else 1 - errors / budget
    detail = (
        f"{remaining:.1%} of the {spec.window_days}-day budget left ({errors:.0f} 5xx of {answers:.0f} answers, "
        f"SLO error ratio {slo:g})"
    )
    return Clause(
        "error_budget",
        remaining >= spec.min_remaining,
        detail,
        when=f"when {spec.min_remaining:.0%} is left again (errors older than {spec.window_days} days leave the window)",
        value=remaining,
        comparator=">=",
        bound=spec.min_remaining,
    )


def error_budget_queries(config: Config) -> tuple[str, str]:
    """PromQL of the 5xx answers and all answers to predictions over the SLO window: the selector of the
    SLO alerts (k8s/base/prometheusrule.yaml) in this environment's namespace."""
    spec = config.promotion.error_budget
    assert spec is not None
    selector = f'namespace="{config.deploy.namespace}",route="/v1/predict"'
    window = f"{spec.window_days}d"
    return (
        f'sum(increase(model_service_requests_total{{{selector},status=~"5.."}}[{window}]))',
        f"sum(increase(model_service_requests_total{{{selector}}}[{window}]))",
    )
