"""`python -m pipeline feedback --labels FILE`: import ground truth for captured requests into the label
store beside the capture (`labels.sqlite`), where `pipeline evaluate` joins it.

The whole file is checked first (columns, request ids, labels against the card's classes): a malformed
file is refused naming the row and stores nothing. Then each label gets the store's answer: stored,
duplicate (the same label again: nothing changes), conflict (another label was stored first: it stays),
unknown (no captured row has that id), late (served longer ago than `capture.label_window_days`). Only a
malformed file fails the command; the other answers are counted and shown.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from model_service.contract.capture import LABELS_FILE, OUTCOME_MEANING, LabelOutcome, LabelStore
from pipeline.artifacts import ModelDir
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.quality.join import capture_directory
from pipeline.quality.labels_file import read_labels
from pipeline.stage import Check, StageContext, StageResult


@dataclass(frozen=True, kw_only=True)
class FeedbackResult(StageResult):
    environment: str
    outcomes: dict[str, int]
    """How many labels got each answer (every `LabelOutcome`, zeros included)."""


def feedback(
    config: Config,
    reporter: Reporter,
    *,
    model: ModelDir,
    labels_path: Path,
    capture_dir: Path,
    label_window_days: float,
    now: float | None = None,
) -> FeedbackResult:
    """Import `labels_path` into the label store of `capture_dir`; labels typed by `model`'s card."""
    if not capture_dir.is_dir():
        raise StageError(
            f"{capture_dir}: no capture directory, so no request a label could name; serve {config.name} "
            f"with capture on (environments/{config.name}.yaml: capture) first"
        )
    rows = read_labels(labels_path, model.read_card())
    received = time.time() if now is None else now
    store = LabelStore(capture_dir / LABELS_FILE, label_window_days=label_window_days)
    try:
        answers = Counter(
            store.add(row.request_id, row.label, received_at=received, source=labels_path.name)
            for row in rows
        )
        counts = store.counts()
    finally:
        store.close()
    outcomes = {outcome.value: answers.get(outcome, 0) for outcome in LabelOutcome}
    reporter.table(
        ["outcome", "labels", "meaning"],
        [(outcome.value, outcomes[outcome.value], OUTCOME_MEANING[outcome]) for outcome in LabelOutcome],
    )
    reporter.note(f"the store now holds {counts['labelled']} labels for {counts['captured']} captured rows")
    checks = [
        Check(
            scope=outcome.value, value=outcomes[outcome.value], result="info", note=OUTCOME_MEANING[outcome]
        )
        for outcome in LabelOutcome
    ]
    stored = outcomes[LabelOutcome.STORED.value]
    return FeedbackResult(
        headline=f"{stored} of {len(rows)} labels stored from {labels_path.name}",
        checks=checks,
        environment=config.name,
        outcomes=outcomes,
    )


def run(ctx: StageContext) -> FeedbackResult:
    capture = ctx.config.capture
    return feedback(
        ctx.config,
        ctx.reporter,
        model=ctx.served_model(),
        labels_path=ctx.args.labels,
        capture_dir=capture_directory(capture.directory, ctx.workspace.root),
        label_window_days=capture.label_window_days,
    )
