"""The live-quality gauges as Prometheus text, written atomically into the capture directory
(`LIVE_QUALITY_FILE`), where the service's metrics port appends them to /metrics and the alert rule reads
the verdict (pipeline/deploy/argo_analysis.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from model_service.contract.monitoring import (
    LIVE_QUALITY,
    LIVE_QUALITY_ESTIMATE,
    LIVE_QUALITY_LABELLED_ROWS,
    LIVE_QUALITY_VERDICT,
    METRIC_LABEL,
    MODEL_LABEL,
    VERDICT_LABEL,
    VERSION_LABEL,
)
from pipeline.quality.verdict import VERDICTS, Judged
from pipeline.workspace import write_bytes

_HELP = {
    LIVE_QUALITY: "A gated metric on the labelled served rows of a version (pipeline evaluate).",
    LIVE_QUALITY_ESTIMATE: "CBPE estimate of a metric from the served probabilities; assumes calibration.",
    LIVE_QUALITY_LABELLED_ROWS: "Served rows of a version with a label.",
    LIVE_QUALITY_VERDICT: "The live-quality verdict of a version: 1 for the current one.",
}


def _escaped(value: str) -> str:
    """A label value as the text format quotes it (backslash, double quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{name}="{_escaped(value)}"' for name, value in labels.items()) + "}"


def exposition(judged: Sequence[Judged]) -> str:
    """Every version's gauges in the Prometheus text format (0.0.4), one HELP and TYPE per metric."""
    samples: dict[str, list[str]] = {name: [] for name in _HELP}
    for one in judged:
        who = {MODEL_LABEL: one.model, VERSION_LABEL: one.version}
        for metric, value in sorted(one.live.items()):
            samples[LIVE_QUALITY].append(
                f"{LIVE_QUALITY}{_labels(**who, **{METRIC_LABEL: metric})} {value!r}"
            )
        if one.estimate is not None:
            for metric, value in sorted(one.estimate.metrics.items()):
                labels = _labels(**who, **{METRIC_LABEL: metric})
                samples[LIVE_QUALITY_ESTIMATE].append(f"{LIVE_QUALITY_ESTIMATE}{labels} {value!r}")
        samples[LIVE_QUALITY_LABELLED_ROWS].append(
            f"{LIVE_QUALITY_LABELLED_ROWS}{_labels(**who)} {one.labelled}"
        )
        for verdict in VERDICTS:
            labels = _labels(**who, **{VERDICT_LABEL: verdict})
            samples[LIVE_QUALITY_VERDICT].append(
                f"{LIVE_QUALITY_VERDICT}{labels} {int(one.verdict == verdict)}"
            )
    lines: list[str] = []
    for name, rows in samples.items():
        if rows:
            lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge", *rows]
    return "".join(f"{line}\n" for line in lines)


def write_gauges(path: Path, judged: Sequence[Judged]) -> None:
    """Replace `path` atomically: the metrics port reads the old file or the new, never half of one."""
    write_bytes(path, exposition(judged).encode())
