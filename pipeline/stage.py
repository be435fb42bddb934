"""The stage contract: every stage returns a `StageResult` (or a subclass adding its own fields).

The runner reads `status` and `failures` to decide whether the run goes on, the summary and the report
read `headline`, `reused` and `artifacts`; nobody reads a stage's internals.

A stage is registered once, as a `Stage` row in `pipeline.stages.STAGES`: its name, help, command-line
options and the `run(ctx)` function of its module. The command line and the runner are built from that table.
"""

from __future__ import annotations

import argparse
import importlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeGuard

if TYPE_CHECKING:
    from pipeline.artifacts import ModelDir
    from pipeline.config import Config
    from pipeline.console import Reporter
    from pipeline.workspace import Workspace

Status = Literal["pass", "warn", "fail"]
"""`warn`: a gate failed but its mode lets the release through; the run goes on and says so."""

Comparator = Literal["<=", ">="]
CheckResult = Literal["pass", "warn", "fail", "inconclusive", "info"]
"""`warn`: within the bound but past a warning level (drift); `inconclusive`: too little data to judge
(the rollout judge measures again); `info`: reported beside the gated checks, with no bound of its own."""

_BROKEN = {"<=": ">", ">=": "<"}
_BOUND_NAME = {"<=": "max", ">=": "min"}
CHECK_COLUMNS = ("check", "value", "comparator", "bound", "result", "note")
"""The columns of every checks table: a stage's output, the summary and the report."""


@dataclass(frozen=True, kw_only=True)
class Check:
    """One measured value against one bound: what every stage prints and returns, and the report shows."""

    scope: str
    """What was measured: a gated metric, a route or `total`, a feature, the canary, an analysis step."""
    metric: str = ""
    """The statistic, when the scope alone does not name it: `delta vs champion`, `p95_ms`, `psi`."""
    value: float | None
    """None: nothing was measured, which is reported as `no data` (and fails unless `result` says otherwise)."""
    comparator: Comparator | None = None
    bound: float | None = None
    """None (no comparator either) for an `info` check."""
    result: CheckResult
    """Set by the stage: a judge may weigh more than value and bound (an effect floor, a rank test)."""
    unit: str = ""
    digits: int = 4
    """Significant digits the value is shown with."""
    note: str = ""
    """What value and bound alone do not say: a warning level, a p-value, why no value was measured."""

    @classmethod
    def bounded(
        cls,
        scope: str,
        metric: str,
        value: float | None,
        comparator: Comparator,
        bound: float,
        *,
        unit: str = "",
        digits: int = 4,
        note: str = "",
    ) -> Check:
        """The check whose result is its value against its bound alone: `pass` or `fail` (no value fails)."""
        result: CheckResult = "pass" if _holds(value, comparator, bound) else "fail"
        return cls(
            scope=scope,
            metric=metric,
            value=value,
            comparator=comparator,
            bound=bound,
            result=result,
            unit=unit,
            digits=digits,
            note=note,
        )

    @property
    def name(self) -> str:
        return f"{self.scope} {self.metric}" if self.metric else self.scope

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    @property
    def failed(self) -> bool:
        return self.result == "fail"

    def shown(self) -> str:
        if self.value is None:
            return "-"
        whole = float(self.value).is_integer() and abs(self.value) < 1e15  # counts: 12000, not 1.2e+04
        return f"{self.value:.0f}{self.unit}" if whole else f"{self.value:.{self.digits}g}{self.unit}"

    def line(self) -> str:
        """`roc_auc 0.912 < min 0.93`: the value, how it stands to its bound (the comparator when it
        holds, its negation when not), then the note."""
        if self.value is None:
            return f"{self.name}: {self.note or 'no data'}"
        text = f"{self.name} {self.shown()}"
        if self.comparator is not None and self.bound is not None:
            relation = (
                self.comparator
                if _holds(self.value, self.comparator, self.bound)
                else _BROKEN[self.comparator]
            )
            text += f" {relation} {_BOUND_NAME[self.comparator]} {self.bound:g}{self.unit}"
        return f"{text}: {self.note}" if self.note else text

    def row(self) -> tuple[str, ...]:
        """The check's row under CHECK_COLUMNS."""
        bound = "-" if self.bound is None else f"{self.bound:g}{self.unit}"
        return (self.name, self.shown(), self.comparator or "-", bound, self.result.upper(), self.note)


_CHECK_FIELDS = {item.name for item in fields(Check)}


def _holds(value: float | None, comparator: Comparator, bound: float) -> bool:
    return value is not None and (value <= bound if comparator == "<=" else value >= bound)


def checked_status(checks: Sequence[Check], *, warn_only: bool = False) -> Status:
    """`fail` when a check failed (`warn` when the stage's mode lets failures through), else `pass`."""
    if not any(check.failed for check in checks):
        return "pass"
    return "warn" if warn_only else "fail"


def result_line(status: Status, checks: Sequence[Check]) -> str:
    """`PASS 7/7 checks`, `FAIL 5/7 checks, 1 warn`: the line a stage prints last and its headline opens with."""
    gated = [check for check in checks if check.result != "info"]
    passed = sum(check.result == "pass" for check in gated)
    others = Counter(check.result for check in gated if check.result not in {"pass", "fail"})
    extra = "".join(f", {count} {result}" for result, count in sorted(others.items()))
    return f"{status.upper()} {passed}/{len(gated)} checks{extra}"


Reuse = Literal["any", "pass"]
"""Which stored verdict of the same inputs a stage may reuse: `any` when the verdict is a function of
its inputs (the gate scores fixed files: a failure stands too), `pass` when it is a measurement on this
machine (a load test, a rehearsal: a failure may be the machine's, so it is measured again)."""


def reusable(
    record: Mapping[str, Any] | None, inputs: str, reuse: Reuse, *, fresh: bool
) -> TypeGuard[Mapping[str, Any]]:
    """Whether `record`, a stored verdict, stands for a new one: the same `inputs` (a content key, see
    `artifacts.inputs_key`), checks in today's shape, a status the stage's `reuse` accepts, not `fresh`."""
    if fresh or record is None or record.get("inputs") != inputs:
        return False
    if any(set(check) != _CHECK_FIELDS for check in record.get("checks", [])):
        return False  # written before every stage's checks had one shape: judge again
    return reuse == "any" or record.get("status") == "pass"


@dataclass(frozen=True, kw_only=True)
class StageResult:
    status: Status = "pass"
    headline: str
    """The one figure a reviewer looks at first, e.g. `PASS 7/7 checks vs champion v3`."""
    failures: list[str] = field(default_factory=list)
    """Each failed check's line (filled from `checks` when not given); empty when the stage passed."""
    reused: bool = False
    """True when valid artifacts of the same inputs were found and nothing was redone."""
    artifacts: dict[str, Path] = field(default_factory=dict)
    """What the stage wrote (or reused), by name: the report links them."""
    checks: list[Check] = field(default_factory=list)
    """What the stage measured against its bounds, in the order it checked them."""

    def __post_init__(self) -> None:
        if not self.failures:  # frozen: set once here, so every stage words its failures alike
            object.__setattr__(self, "failures", [check.line() for check in self.checks if check.failed])

    @property
    def result_line(self) -> str:
        return result_line(self.status, self.checks)


class StageContext(Protocol):
    """What a stage's `run` is handed (the runner implements it)."""

    config: Config
    workspace: Workspace
    reporter: Reporter
    args: argparse.Namespace
    """The stage's own command-line options (their defaults inside `run`), and `fresh`."""
    whole_run: bool
    """True inside `run` (the whole pipeline): a stage that cannot run here is skipped, not an error."""

    @property
    def model(self) -> ModelDir:
        """The folder the current config, data and code map to."""

    def exported_model(self) -> ModelDir:
        """The current export; trains and exports first when there is none."""

    def served_model(self) -> ModelDir:
        """The version holding alias `<env>`, else the current export."""

    def fallback_model(self, model: ModelDir) -> ModelDir | None:
        """The model `service.fallback` serves next to `model`, if any."""

    def run_stage(self, name: str, **args: Any) -> StageResult | None:
        """Run another stage as this one's follow-up (e.g. promote after a rehearsal), options overridden."""


@dataclass(frozen=True)
class Option:
    """One command-line option of a stage: `argparse.add_argument`'s arguments, as data."""

    flags: tuple[str, ...]
    settings: dict[str, Any]
    sets: str | None = None
    """A config key the option overrides for this run (e.g. `rollout.strategy`), applied when the config loads."""

    def dest(self) -> str:
        return str(self.settings.get("dest") or self.flags[0].lstrip("-").replace("-", "_"))


def option(*flags: str, sets: str | None = None, **settings: Any) -> Option:
    return Option(flags, settings, sets)


StageRun = Callable[[StageContext], "StageResult | None"]


@dataclass(frozen=True)
class Stage:
    """One row of the stage table: everything the command line, the runner and `run` know of a stage."""

    name: str
    help: str
    run: str
    """`module:function` taking a `StageContext`; imported only when the stage runs (the ML libraries are slow)."""
    options: tuple[Option, ...] = ()
    exclusive: tuple[tuple[str, ...], ...] = ()
    """Groups of option flags of which at most one may be given."""
    fresh: bool = False
    """Takes `--fresh`: the stage reuses valid results of the same inputs unless told otherwise."""
    in_run: bool = False
    """Part of `run`, the whole pipeline (in table order)."""
    recorded: bool = True
    """Framed, recorded and reported as a stage; False for `serve`, which runs until Ctrl-C."""

    def function(self) -> StageRun:
        module, _, name = self.run.partition(":")
        function: StageRun = getattr(importlib.import_module(module), name)
        return function

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        grouped = {flag: group for group in self.exclusive for flag in group}
        groups: dict[tuple[str, ...], Any] = {}
        for item in self.options:
            group = grouped.get(item.flags[0])
            if group is not None and group not in groups:
                groups[group] = parser.add_mutually_exclusive_group()
            (parser if group is None else groups[group]).add_argument(*item.flags, **item.settings)

    def defaults(self, **overrides: Any) -> argparse.Namespace:
        """The options as `run` sees them when the stage was not named on the command line."""
        values = {
            item.dest(): item.settings.get(
                "default", False if item.settings.get("action") == "store_true" else None
            )
            for item in self.options
        }
        return argparse.Namespace(**{"fresh": False, **values, **overrides})
