"""Calibrate the rollout judge on this machine: how often it aborts a healthy candidate, and how early it
catches a real fault.

A version of the default config serves the environment (trained and promoted first when none does).
Then K healthy retrains (data seeds 1..K) are rehearsed with tail noise on the candidate (a few requests
delayed by a few milliseconds: what a busy machine does, not a regression), then each real fault on the
first retrain. Optionally some cores are kept busy by spinning processes started and stopped here, so the
figures are those of a shared machine. Every rehearsal is the real one (`rehearsal.rollout`): service
processes, Caddy, Locust, the engine.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.adapters import registry
from pipeline.adapters.locust import LocustTraffic
from pipeline.adapters.processes import spawn, stop
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.rollout import rehearsal
from pipeline.rollout.plan import Analyze, plan
from pipeline.runner import Runner
from pipeline.workspace import Workspace

TAIL_NOISE = "latency=3ms@0.08"
"""8 % of the candidate's requests 3 ms late: the shape of the false aborts measured on a busy machine."""
REAL_FAULTS = ("latency=50ms", "latency=400ms", "errors=0.2", "shift")
"""Faults a rollout must stop at its first analysis step."""


@dataclass(frozen=True)
class Trial:
    """One rehearsal: which candidate, which fault, what the engine decided and at which step."""

    seed: int
    fault: str
    healthy: bool
    """True for tail noise (must promote), False for a real fault (must abort at the first analysis)."""
    status: str
    step: int | None
    reason: str
    inconclusive_windows: int

    @property
    def correct(self) -> bool:
        return self.status == "promoted" if self.healthy else self.status == "aborted"


@dataclass(frozen=True)
class CalibrationResult:
    environment: str
    first_analysis_step: int
    trials: tuple[Trial, ...]

    @property
    def false_aborts(self) -> list[Trial]:
        return [t for t in self.trials if t.healthy and t.status != "promoted"]

    @property
    def late_or_missed(self) -> list[Trial]:
        return [t for t in self.trials if not t.healthy and t.step != self.first_analysis_step]

    @property
    def status(self) -> str:
        return "pass" if not self.false_aborts and not self.late_or_missed else "fail"

    @property
    def failures(self) -> list[str]:
        return [f"false abort of healthy seed {t.seed}: {t.reason}" for t in self.false_aborts] + [
            f"{t.fault} not caught at step {self.first_analysis_step}: {t.status} ({t.reason})"
            for t in self.late_or_missed
        ]


@contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """Keep `count` cores busy with spinning processes of our own for the duration."""
    spinners = [spawn([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            stop(spinner, timeout=5)


def calibrate(
    load: Callable[[Sequence[str]], Config],
    root: Path,
    reporter: Reporter,
    *,
    healthy: int,
    tail_fault: str = TAIL_NOISE,
    faults: Sequence[str] = REAL_FAULTS,
    busy: int = 0,
) -> CalibrationResult:
    """`load(overrides)` gives the environment's config with extra overrides (the data seed)."""
    base = load([])
    for fault in (tail_fault, *faults):
        rehearsal.parse_fault(fault, base.name)  # bad input fails before anything runs
    first_analysis = next(
        step for step, action in enumerate(plan(base).actions, start=1) if isinstance(action, Analyze)
    )
    _ensure_stable(base, root, reporter)
    trials: list[Trial] = []
    with busy_cores(busy):
        for seed in range(1, healthy + 1):
            trials.append(_trial(load([f"data.seed={seed}"]), root, reporter, seed, tail_fault, healthy=True))
        for fault in faults:
            trials.append(_trial(load(["data.seed=1"]), root, reporter, 1, fault, healthy=False))
    result = CalibrationResult(base.name, first_analysis, tuple(trials))
    _report(result, busy, reporter)
    return result


def _ensure_stable(config: Config, root: Path, reporter: Reporter) -> None:
    """A version of the default config serves the environment, so candidates are compared with another
    model (a first deploy would compare the candidate with itself)."""
    workspace = Workspace(root)
    if registry.alias_model_dir(config, workspace, config.alias) is not None:
        return
    reporter.note(f"no version serves {config.name}: training, registering and promoting the default config")
    runner = Runner(config, workspace, reporter, whole_run=False)
    for stage in ("train", "export", "gate", "register", "promote"):
        runner.run_stage(stage)


def _trial(config: Config, root: Path, reporter: Reporter, seed: int, fault: str, *, healthy: bool) -> Trial:
    reporter.line(f"== calibration [{config.name}] candidate seed {seed}, fault {fault}")
    # A workspace per rehearsal: each gets its own reports/<env>/<run-id>/rollout folder.
    workspace = Workspace(root)
    candidate = Runner(config, workspace, reporter, whole_run=False).exported_model()
    result = rehearsal.rollout(
        config,
        workspace,
        reporter,
        candidate=candidate,
        stable=registry.alias_model_dir(config, workspace, config.alias),
        traffic=LocustTraffic(config, candidate),
        candidate_fault=fault,
    )
    outcome = result.outcome
    assert outcome is not None  # a rehearsal with a fault is never a reused verdict
    abort = next((e for e in outcome.events if e.action == "abort"), None)
    inconclusive = sum(1 for e in outcome.events if e.verdict == "INCONCLUSIVE")
    return Trial(
        seed,
        fault,
        healthy,
        outcome.status,
        None if abort is None else abort.step,
        outcome.reason,
        inconclusive,
    )


def _report(result: CalibrationResult, busy: int, reporter: Reporter) -> None:
    reporter.line(f"== calibration summary [{result.environment}], {busy} core(s) kept busy")
    reporter.table(
        ["seed", "fault", "expected", "outcome", "step", "inconclusive windows", "reason"],
        [
            (
                t.seed,
                t.fault,
                "promote" if t.healthy else f"abort at step {result.first_analysis_step}",
                t.status.upper(),
                "-" if t.step is None else t.step,
                t.inconclusive_windows,
                t.reason,
            )
            for t in result.trials
        ],
    )
    healthy = [t for t in result.trials if t.healthy]
    faulty = [t for t in result.trials if not t.healthy]
    reporter.note(
        f"false aborts: {len(result.false_aborts)} of {len(healthy)} healthy rehearsals; "
        f"faults caught at the first analysis step (step {result.first_analysis_step}): "
        f"{len(faulty) - len(result.late_or_missed)} of {len(faulty)}"
    )
