"""Served rows and labels for the live-quality tests: calibrated scores, and labels added as the feedback
endpoint adds them."""

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model_service.contract.capture import LABELS_FILE, LabelStore

DAY = 86400.0
START = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
"""When the tests' first row was served."""


def calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores P(1) and labels drawn from them: a calibrated model with ROC AUC about 0.9."""
    rng = np.random.default_rng(seed)
    p = rng.beta(0.6, 0.6, n)
    return p, (rng.uniform(size=n) < p).astype(int)


def label(directory: Path, keys: Sequence[str], labels: Sequence[object]) -> None:
    store = LabelStore(directory / LABELS_FILE)
    for key, value in zip(keys, labels, strict=True):
        store.add(key, value, received_at=START + DAY, source="test")
    store.close()
