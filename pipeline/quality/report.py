"""The live-quality report: per version and per day (UTC), the rows served and labelled, the live metrics
and the estimate, as JSON rows and a chart (matplotlib Agg) the run's report embeds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_service.contract.card import ModelCard
from pipeline.config import Config
from pipeline.quality.estimate import estimate
from pipeline.quality.join import Served, scored
from pipeline.quality.verdict import Judged, live_metrics
from pipeline.stage import Check


@dataclass(frozen=True)
class Day:
    version: str
    day: str
    served: int
    labelled: int
    live: dict[str, float]
    """The day's metrics on its labelled rows (any number of them: a day alone is not judged)."""
    estimate: dict[str, float]

    def figures(self, metrics: Sequence[str]) -> tuple[str, str]:
        """The day's live figures and estimate of `metrics`, as text (`-` for none)."""

        def shown(values: dict[str, float]) -> str:
            return ", ".join(f"{m} {values[m]:.4g}" for m in metrics if m in values) or "-"

        return shown(self.live), shown(self.estimate)


def day_checks(days: Sequence[Day], metrics: Sequence[str]) -> list[Check]:
    """The per-day rows as `info` checks, so the run's report shows them in the stage's table: the first
    gated metric measured that day as the value, the others and the estimate in the note."""
    checks = []
    for day in days:
        metric = next((m for m in metrics if m in day.live), next(iter(metrics), ""))
        live, guessed = day.figures(metrics)
        note = f"{day.labelled}/{day.served} labelled; live {live}; estimate {guessed}"
        checks.append(
            Check(
                scope=f"{day.version} {day.day}",
                metric=metric,
                value=day.live.get(metric),
                result="info",
                note=note,
            )
        )
    return checks


def days_of(served: Served, card: ModelCard) -> list[Day]:
    """One `Day` per day the version served, oldest first."""
    day_of_row = np.frombuffer(served.day_of_row, dtype=np.uint16)
    out = []
    for day in sorted(served.days):
        part = scored(served, card, day_of_row == served.days.index(day))
        live, _ = live_metrics(part, card)
        found = None if part.probabilities is None else estimate(part.probabilities, card.classes)
        out.append(
            Day(
                version=served.version,
                day=day,
                served=len(part.labelled),
                labelled=int(part.labelled.sum()),
                live=live,
                estimate={} if found is None else found.metrics,
            )
        )
    return out


def chart(config: Config, judged: Sequence[Judged], days: Sequence[Day], path: Path) -> None:
    """One panel per gated metric: each version's live figure per day (solid) and its estimate (dashed),
    the gate's absolute bound as a line."""
    import matplotlib as mpl  # noqa: PLC0415  (slow import, only here)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    metrics = [m for m in config.gates.metrics if any(m in d.live or m in d.estimate for d in days)]
    figure, axes = plt.subplots(
        1, max(len(metrics), 1), figsize=(5 * max(len(metrics), 1), 3.8), squeeze=False
    )
    for axis, metric in zip(axes[0], metrics, strict=False):
        for one in judged:
            mine = [d for d in days if d.version == one.version]
            live = [(d.day, d.live[metric]) for d in mine if metric in d.live]
            guessed = [(d.day, d.estimate[metric]) for d in mine if metric in d.estimate]
            if live:
                line = axis.plot(*zip(*live, strict=True), marker="o", label=f"{one.version} live")[0]
                color = line.get_color()
            else:
                color = None
            if guessed:
                axis.plot(
                    *zip(*guessed, strict=True),
                    ls="--",
                    marker="x",
                    color=color,
                    label=f"{one.version} estimate",
                )
        bounds = config.gates.metrics[metric]
        for bound in (bounds.min, bounds.max):
            if bound is not None:
                axis.axhline(bound, color="tab:red", lw=1, ls=":", label=f"gate {bound:g}")
        axis.set_title(metric, fontsize=10)
        axis.set_xlabel("day (UTC)", fontsize=8)
        axis.tick_params(axis="x", labelrotation=30, labelsize=7)
        axis.legend(fontsize=7)
    verdicts = ", ".join(f"{one.version} {one.verdict}" for one in judged) or "no captured rows"
    figure.suptitle(
        f"{config.name}: live quality ({verdicts}); dashed: CBPE estimate, assumes calibration", fontsize=10
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
