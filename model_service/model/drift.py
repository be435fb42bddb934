"""Streaming counts of inputs and predictions in the card's reference bins, and sampled input logging.

Per request: the rows and probabilities arrays are kept in a list; the binning (one comparison against
a padded matrix of bin edges, one `np.bincount` into a preallocated int64 array) runs in bulk when
enough rows wait and before every flush. Nothing touches Prometheus per request: `flush()` adds the
counts gathered since the last flush to Counter children bound once at start-up (only non-zero bins)
and sets the PSI gauges. It runs before every /metrics answer and on a timer in each worker, so with
several workers the multiprocess files (and so /metrics) cover every worker.

The bin convention, the score and PSI are model_service/contract/monitoring.py's, which the reference
profile uses too; the feature binning below is its vectorised form, checked against it in tests/unit/drift.
"""

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge

from model_service.contract.capture import pseudonym, redacted_value
from model_service.contract.card import FeatureProfile, ModelCard
from model_service.contract.monitoring import (
    BIN_LABEL,
    CLASS_LABEL,
    FEATURE_BIN,
    FEATURE_LABEL,
    FEATURE_PSI,
    PREDICTED_CLASS,
    SCORE_BIN,
    SCORE_PSI,
    bin_index,
    category_index,
    inner_edges,
    psi,
    scores,
)
from model_service.protocol.errors import StartupError

MIN_PSI_ROWS = 100
"""Rows the window needs before the PSI gauges say anything (NaN before): fewer is noise."""
PENDING_ROWS = 64
"""Rows that wait for a binning pass. A pass costs about 1 µs per row, so the request that triggers one
waits some 70 µs more; waiting for thousands would stall the event loop for milliseconds at a flush."""
WINDOW_BLOCKS = 10
"""The window is a ring of this many blocks of window/10 rows (it spans between 1 and 1.1 windows)."""


def _feature_edges(profile: FeatureProfile) -> npt.NDArray[np.float32]:
    """A feature profile's edges in float32 (a categorical one's: -0.5, 0.5, ..., m + 0.5)."""
    if profile.categorical:
        return np.arange(len(profile.categories) + 2, dtype=np.float32) - np.float32(0.5)
    return np.asarray(profile.edges, dtype=np.float32)


class DriftCounters:
    """Counts per feature bin, score bin and predicted class of one worker, exported to Prometheus.

    Every feature is binned as a number: a categorical one by its category's index (inner edges at
    0.5, 1.5, ..., so bin i is category i and bin m "other"), a missing numeric value as +inf (a nullable
    feature has one more inner edge, +inf, so it lands in its missing bin k)."""

    def __init__(
        self,
        card: ModelCard,
        window_rows: int,
        registry: CollectorRegistry,
        *,
        sensitive: Mapping[str, str] | None = None,
    ) -> None:
        reference = card.reference
        assert reference is not None, "a card without a reference profile has no drift counters"
        features = card.feature_names
        # The card module checked the profiles against the features: one per feature, in order, with
        # one frequency per bin.
        self.categories: list[tuple[str, ...] | None] = []
        inner: list[npt.NDArray[np.float32]] = []
        self.feature_reference = []
        for profile, feature in zip(reference.features, card.features, strict=True):
            self.categories.append(profile.categories if profile.categorical else None)
            feature_inner = inner_edges(_feature_edges(profile))
            if feature.nullable and not profile.categorical:
                feature_inner = np.append(feature_inner, np.float32(np.inf))
            inner.append(feature_inner)
            self.feature_reference.append(np.asarray(profile.frequencies, dtype=np.float64))
        bins = [len(edges) + 1 for edges in inner]
        score_edges = np.asarray(reference.score.edges, dtype=np.float32)
        self.score_reference = np.asarray(reference.score.frequencies, dtype=np.float64)
        self.features, self.classes = list(features), [str(c) for c in card.classes]
        self._regression = card.is_regression

        # Inner edges padded with NaN (nothing compares >= NaN), edge-major [K, 1, F]: bin = count of inner
        # edges <= value, summed over the outer axis (summing over a short innermost axis is several times
        # slower in numpy).
        width = max(1, *(len(edges) for edges in inner))
        self._inner = np.full((width, 1, len(features)), np.nan, dtype=np.float32)
        for f, edges in enumerate(inner):
            self._inner[: len(edges), 0, f] = edges
        self._bin_dtype = np.min_scalar_type(width)
        self._score_inner = inner_edges(score_edges)
        self._feature_offsets = np.cumsum([0, *bins[:-1]]).astype(np.intp)
        self._score_offset = int(sum(bins))
        self._class_offset = self._score_offset + len(score_edges) - 1
        self.size = self._class_offset + len(self.classes)
        self.counts = np.zeros(self.size, dtype=np.int64)
        self.rows = 0
        self._pending = 0
        self._pending_rows: list[npt.NDArray[Any]] = []
        self._pending_probabilities: list[npt.NDArray[Any]] = []
        self._flushed = np.zeros(self.size, dtype=np.int64)

        block = max(1, window_rows // WINDOW_BLOCKS)
        self._block = block
        self._next_block = block
        self._ring: deque[npt.NDArray[np.int64]] = deque([self.counts.copy()], maxlen=WINDOW_BLOCKS + 1)
        self._ring_rows: deque[int] = deque([0], maxlen=WINDOW_BLOCKS + 1)

        sensitive = sensitive or {}
        check_sensitive(sensitive, features)
        self._children = self._bind(registry, bins, len(score_edges) - 1, sensitive)
        feature_psi = Gauge(
            FEATURE_PSI,
            "PSI of each feature's recent inputs vs the card's reference (NaN below 100 rows; with "
            "several workers: the largest of the workers' own windows)",
            [FEATURE_LABEL],
            registry=registry,
            multiprocess_mode="max",
        )
        self._feature_psi = [feature_psi.labels(name) for name in features]
        self._score_psi = Gauge(
            SCORE_PSI,
            "PSI of the recent predicted scores vs the card's reference (NaN below 100 rows; with several "
            "workers: the largest of the workers' own windows)",
            registry=registry,
            multiprocess_mode="max",
        )

    def _bind(
        self, registry: CollectorRegistry, bins: list[int], score_bins: int, sensitive: Mapping[str, str]
    ) -> list[Any]:
        """One Counter child per flat index, in the order of `counts`, bound once. A sensitive feature's
        bins are treated as the input log treats its values: `hash` labels each bin with its pseudonym,
        `drop` exports none (None: counted for its PSI gauge, never exported)."""
        feature = Counter(
            FEATURE_BIN,
            "input values per feature and reference bin (bin i: between edges i and i+1 of the card; a nullable "
            "feature's last bin: missing; categorical: bin i is category i, the last bin other)",
            [FEATURE_LABEL, BIN_LABEL],
            registry=registry,
        )
        score = Counter(
            SCORE_BIN,
            "predicted scores per reference bin (binary: positive-class probability; multiclass: the largest; "
            "regression: the predicted value)",
            [BIN_LABEL],
            registry=registry,
        )
        predicted = Counter(PREDICTED_CLASS, "predictions per class", [CLASS_LABEL], registry=registry)
        children: list[Any] = [
            None
            if sensitive.get(name) == "drop"
            else feature.labels(name, pseudonym(str(b)) if sensitive.get(name) == "hash" else str(b))
            for name, n in zip(self.features, bins, strict=True)
            for b in range(n)
        ]
        children += [score.labels(str(b)) for b in range(score_bins)]
        children += [predicted.labels(c) for c in self.classes]
        return children

    # -- per request ---------------------------------------------------------------------------------
    def encode(self, columns: Sequence[Sequence[Any]]) -> npt.NDArray[np.float32]:
        """A typed model's feature values (null as NaN or "") → the float32 rows `observe` bins: a
        categorical feature's bin index, a missing number +inf (its missing bin)."""
        matrix = np.empty((len(columns[0]), len(columns)), dtype=np.float32)
        for j, (values, categories) in enumerate(zip(columns, self.categories, strict=True)):
            matrix[:, j] = values if categories is None else category_index(categories, values)
        matrix[np.isnan(matrix)] = np.inf
        return matrix

    def observe(self, rows: npt.NDArray[Any], probabilities: npt.NDArray[Any]) -> None:
        """Keep a batch for counting: rows [N, F] in the model's dtype (or `encode`d), probabilities [N, C]
        (a regression: the predicted values [N]).

        Per request this is two list appends (the arrays are not changed after the request); the binning
        runs in bulk when enough rows wait or at flush, where its numpy overhead is paid once per
        thousands of rows."""
        self._pending_rows.append(rows)
        self._pending_probabilities.append(probabilities)
        self._pending += len(rows)
        if self._pending >= PENDING_ROWS:
            self._drain()

    def _drain(self) -> None:
        if self._pending:
            # Compared in float32 whatever the model's dtype, as the reference profile was binned.
            rows = np.concatenate(self._pending_rows).astype(np.float32, copy=False)
            probabilities = np.concatenate(self._pending_probabilities)
            self._pending_rows.clear()
            self._pending_probabilities.clear()
            self._pending = 0
            self._count(rows, probabilities)

    def _count(self, rows: npt.NDArray[Any], probabilities: npt.NDArray[Any]) -> None:
        # Chunks end on window-block boundaries, so the ring's snapshots stay block-sized in bulk too.
        start = 0
        while start < len(rows):
            end = min(len(rows), start + max(1, self._next_block - self.rows))
            self._count_chunk(rows[start:end], probabilities[start:end])
            start = end
            if self.rows >= self._next_block:
                self._ring.append(self.counts.copy())
                self._ring_rows.append(self.rows)
                self._next_block = self.rows + self._block

    def _count_chunk(self, rows: npt.NDArray[Any], probabilities: npt.NDArray[Any]) -> None:
        feature_bins = (rows >= self._inner).sum(axis=0, dtype=self._bin_dtype) + self._feature_offsets
        if self._regression:  # the predicted values are the scores; there are no classes
            score_bins = bin_index(self._score_inner, probabilities)
            index = np.concatenate((feature_bins.ravel(), score_bins + self._score_offset))
        else:
            score_bins = bin_index(self._score_inner, scores(probabilities))
            index = np.concatenate(
                (
                    feature_bins.ravel(),
                    score_bins + self._score_offset,
                    probabilities.argmax(axis=1) + self._class_offset,
                )
            )
        self.counts += np.bincount(index, minlength=self.size)
        self.rows += len(rows)

    # -- at scrape time or on a timer ----------------------------------------------------------------
    def window(self) -> tuple[int, npt.NDArray[np.int64]]:
        """Rows and counts of the recent window (everything since start until the ring is full)."""
        self._drain()
        return self.rows - self._ring_rows[0], self.counts - self._ring[0]

    def flush(self) -> None:
        """Add the new counts to the Prometheus counters and recompute the PSI gauges."""
        self._drain()
        delta = self.counts - self._flushed
        for i in np.flatnonzero(delta):
            child = self._children[i]
            if child is not None:
                child.inc(int(delta[i]))
        self._flushed = self.counts.copy()
        rows, counts = self.window()
        if rows < MIN_PSI_ROWS:
            for gauge in (*self._feature_psi, self._score_psi):
                gauge.set(math.nan)
            return
        for f, (gauge, reference) in enumerate(zip(self._feature_psi, self.feature_reference, strict=True)):
            start = self._feature_offsets[f]
            gauge.set(psi(reference, counts[start : start + len(reference)] / rows))
        score = counts[self._score_offset : self._class_offset]
        self._score_psi.set(psi(self.score_reference, score / rows))


def invert_scores(
    probabilities: npt.NDArray[Any], classes: npt.NDArray[Any]
) -> tuple[list[Any], npt.NDArray[Any]]:
    """Rehearsal fault: the classes' probabilities in reverse order (binary: p -> 1 - p)."""
    flipped = np.ascontiguousarray(probabilities[:, ::-1])
    return classes[flipped.argmax(axis=1)].tolist(), flipped


def check_sensitive(sensitive: Mapping[str, str], features: Sequence[str]) -> None:
    """`StartupError` when MODEL_SERVICE_LOG_INPUTS_SENSITIVE names something that is no feature."""
    unknown = sorted(set(sensitive) - set(features))
    if unknown:
        raise StartupError(
            f"MODEL_SERVICE_LOG_INPUTS_SENSITIVE names {', '.join(unknown)}: not features of the model"
        )


class InputSampler:
    """Opt-in logging of a sample of the rows: sensitive fields are hashed (sha256, 16 hex) or dropped, as
    the capture does (`redacted_value`, model_service/contract/capture.py)."""

    def __init__(self, features: Sequence[str], ratio: float, sensitive: dict[str, str], seed: int) -> None:
        check_sensitive(sensitive, features)
        self.ratio = ratio
        self._keep = [(i, name, sensitive.get(name)) for i, name in enumerate(features)]
        self._keep = [entry for entry in self._keep if entry[2] != "drop"]
        self._random = np.random.default_rng(seed)

    def sample(
        self, rows: Sequence[Sequence[Any]] | npt.NDArray[Any], predictions: Any
    ) -> list[dict[str, Any]]:
        """The sampled rows as records, ready to log (usually none)."""
        picked = np.flatnonzero(self._random.random(len(rows)) < self.ratio)
        records = []
        for r in picked:
            record: dict[str, Any] = {}
            for i, name, action in self._keep:
                raw = rows[int(r)][i]
                value = raw if isinstance(raw, str) else float(raw)
                record[name] = redacted_value(raw) if action else value
            prediction = predictions[r]
            records.append(
                {
                    "inputs": record,
                    "prediction": prediction.item() if hasattr(prediction, "item") else prediction,
                }
            )
        return records
