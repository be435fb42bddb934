"""The stage contract: every stage returns a `StageResult` (or a subclass adding its own fields).

The runner reads `status` and `failures` to decide whether the run goes on, the summary and the report
read `headline`, `reused` and `artifacts`; nobody reads a stage's internals.

A stage is registered once, as a `Stage` row in `pipeline.stages.STAGES`: its name, help, command-line
options and the `run(ctx)` function of its module. The command line and the runner are built from that table.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from pipeline.artifacts import ModelDir
    from pipeline.config import Config
    from pipeline.console import Reporter
    from pipeline.workspace import Workspace

Status = Literal["pass", "warn", "fail"]
"""`warn`: a gate failed but its mode lets the release through; the run goes on and says so."""


@dataclass(frozen=True, kw_only=True)
class StageResult:
    status: Status = "pass"
    headline: str
    """The one figure a reviewer looks at first, e.g. `PASS 7/7 checks vs champion v3`."""
    failures: list[str] = field(default_factory=list)
    """Each failed check with its value, comparator and bound; empty when the stage passed."""
    reused: bool = False
    """True when valid artifacts of the same inputs were found and nothing was redone."""
    artifacts: dict[str, Path] = field(default_factory=dict)
    """What the stage wrote (or reused), by name: the report links them."""


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
