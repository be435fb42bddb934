"""The shadow judge: the candidate's answers against stable's on the same requests, row by row.

The mirror's exchanges are paired by request id (both answered 200, the candidate echoing the id stable
got); each paired request gives its rows' labels and scores on both sides. The comparison is the canary
judge's (pipeline/rollout/analysis.py) on paired rows instead of counters: the same positive-rate delta
and smoothed score PSI (`prediction_shift`), and for latency the same rule, ratio *and* effect floor
*and* a significant Mann-Whitney test (`judge`), on each service's own latency histogram over the window.
Fewer paired rows than `shadow.min_pairs` is inconclusive: no conclusion is drawn from a thin sample.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from model_service.contract.card import ModelCard
from model_service.contract.monitoring import bin_index, category_index, inner_edges, scores
from pipeline.config import ConfigError, ShadowBound, ShadowSpec
from pipeline.rollout.analysis import Window, judge, prediction_shift
from pipeline.rollout.plan import Analysis, Threshold
from pipeline.stage import Check

SCOPE = "candidate vs stable"
LATENCY_MIN_REQUESTS = 10
"""Requests each service must have served in the window before its p95 is compared (the canary's default)."""
Verdict = Literal["pass", "warn", "fail", "inconclusive"]
VERDICT_ORDER: tuple[Verdict, ...] = ("fail", "inconclusive", "warn")
"""The first of these among the checks' results is the verdict; none: pass."""


@dataclass(frozen=True)
class Answered:
    """The rows of one answer: predicted labels, and scores (P(class 1), top probability or the value)."""

    labels: tuple[str, ...]
    probabilities: tuple[tuple[float, ...], ...]
    """Per row: every class's probability, or the predicted value alone (regression)."""


@dataclass
class Paired:
    """Rows both versions answered, side by side, and what became of the copies."""

    stable_labels: list[str] = field(default_factory=list)
    candidate_labels: list[str] = field(default_factory=list)
    stable_scores: list[float] = field(default_factory=list)
    candidate_scores: list[float] = field(default_factory=list)
    abs_diffs: list[float] = field(default_factory=list)
    """Per row: the largest probability (or value) difference."""
    feature_values: list[Any] = field(default_factory=list)
    """Per row: the value of `shadow.feature` in the request (empty without one)."""
    stable_ms: list[float] = field(default_factory=list)
    candidate_ms: list[float] = field(default_factory=list)
    """Per paired request, as the mirror timed them."""
    copies: Counter[str] = field(default_factory=Counter)
    """Exchanges by what became of their copy: answered, dropped, unanswered, not mirrored."""
    candidate_failed: int = 0
    """Copies the candidate answered with an error, or not at all."""
    unpaired: Counter[str] = field(default_factory=Counter)
    """Answered copies left out of the comparison, by why."""

    @property
    def rows(self) -> int:
        return len(self.stable_scores)

    @property
    def requests(self) -> int:
        return len(self.stable_ms)


def parse_answer(text: str, card: ModelCard) -> Answered | None:
    """Labels and probabilities of a /v1/predict or /v2 infer answer; None when it holds neither."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if "outputs" in body:
        return _v2_answer(body["outputs"], card)
    predictions = body.get("predictions")
    if not isinstance(predictions, list):
        return None
    probabilities = body.get("probabilities")
    if probabilities is None:  # a regression's predictions are its scores
        return Answered(tuple(str(x) for x in predictions), tuple((float(x),) for x in predictions))
    return Answered(tuple(str(x) for x in predictions), tuple(tuple(row) for row in probabilities))


def _v2_answer(outputs: list[dict[str, Any]], card: ModelCard) -> Answered | None:
    by_name = {item["name"]: item for item in outputs}
    labels = by_name.get(card.outputs.get("label") or card.outputs.get("value", ""))
    probabilities = by_name.get(card.outputs.get("probabilities") or card.outputs.get("value", ""))
    if labels is None or probabilities is None:
        return None
    width = probabilities["shape"][1] if len(probabilities["shape"]) > 1 else 1
    values = probabilities["data"]
    rows = [tuple(values[i : i + width]) for i in range(0, len(values), width)]
    return Answered(tuple(str(x) for x in labels["data"]), tuple(rows))


def feature_values(text: str, card: ModelCard, feature: str) -> list[Any] | None:
    """The value of `feature` in each row of a request (v1 instances or records, v2 tensors); None when
    the request cannot be read."""
    index = card.feature_names.index(feature)
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if isinstance(body, dict) and "inputs" in body:
        for spec in card.inputs:
            if index in spec.columns:
                tensor = next((t for t in body["inputs"] if t.get("name") == spec.name), None)
                if tensor is None:
                    return None
                width, at = len(spec.columns), spec.columns.index(index)
                return list(tensor["data"][at::width])
        return None
    rows = body.get("instances") if isinstance(body, dict) else body
    if not isinstance(rows, list):
        return None
    return [row.get(feature) if isinstance(row, dict) else row[index] for row in rows]


def pair(
    exchanges: Iterable[Mapping[str, Any]], stable: ModelCard, candidate: ModelCard, feature: str | None
) -> Paired:
    """Pair the mirror's exchanges: both answered 200 for the same request id with the same number of rows."""
    paired = Paired()
    for exchange in exchanges:
        paired.copies[exchange["copy"]] += 1
        answer = exchange["candidate"]
        if exchange["copy"] != "answered" or answer is None:
            continue
        if answer["status"] != 200:
            paired.candidate_failed += 1
            continue
        if exchange["stable"]["status"] != 200:
            paired.unpaired["stable answered an error"] += 1
            continue
        if answer["request_id"] != exchange["stable"]["request_id"]:
            paired.unpaired["request ids differ"] += 1
            continue
        ours, theirs = (
            parse_answer(exchange["stable"]["body"], stable),
            parse_answer(answer["body"], candidate),
        )
        values = feature_values(exchange["request"], stable, feature) if feature else []
        if ours is None or theirs is None or len(ours.labels) != len(theirs.labels):
            paired.unpaired["answers not comparable"] += 1
            continue
        if values is None or (feature and len(values) != len(ours.labels)):
            paired.unpaired["feature not readable in the request"] += 1
            continue
        _add(paired, ours, theirs, values)
        paired.stable_ms.append(exchange["stable"]["ms"])
        paired.candidate_ms.append(answer["ms"])
    return paired


def _add(paired: Paired, stable: Answered, candidate: Answered, values: list[Any]) -> None:
    ours, theirs = np.asarray(stable.probabilities, float), np.asarray(candidate.probabilities, float)
    paired.stable_labels += stable.labels
    paired.candidate_labels += candidate.labels
    paired.stable_scores += scores(ours).tolist() if ours.shape[1] > 1 else ours[:, 0].tolist()
    paired.candidate_scores += scores(theirs).tolist() if theirs.shape[1] > 1 else theirs[:, 0].tolist()
    width = min(ours.shape[1], theirs.shape[1])
    paired.abs_diffs += np.abs(ours[:, :width] - theirs[:, :width]).max(axis=1).tolist()
    paired.feature_values += values


@dataclass(frozen=True)
class Comparison:
    verdict: Verdict
    checks: list[Check]
    bins: list[tuple[str, int, float]]
    """Per category of `shadow.feature`: its label, paired rows, share of them where the versions disagree."""

    @property
    def decision(self) -> str:
        """The line behind the verdict: its first failed (else inconclusive, else warned) measurement."""
        for result in ("fail", "inconclusive", "warn"):
            line = next((check.line() for check in self.checks if check.result == result), None)
            if line is not None:
                return f"{self.verdict.upper()}: {line}"
        return f"PASS: the candidate agrees with stable within every gate on {self._rows} paired rows"

    @property
    def _rows(self) -> str:
        return next((check.shown() for check in self.checks if check.metric == "paired rows"), "0")


def compare(
    paired: Paired,
    spec: ShadowSpec,
    stable: ModelCard,
    *,
    windows: tuple[Window | None, Window | None],
) -> Comparison:
    """Every gate of `spec` on the paired rows, and the candidate's p95 against stable's on `windows`
    (candidate, stable: each service's own counters over the shadow window)."""
    gates, thin = spec.gates, paired.rows < spec.min_pairs
    answered = paired.copies["answered"]
    checks = [
        Check(
            scope=SCOPE,
            metric="paired rows",
            value=paired.rows,
            comparator=">=",
            bound=spec.min_pairs,
            result="inconclusive" if thin else "pass",
            note=f"{paired.requests} requests"
            + (": too few to judge, every comparison is inconclusive" if thin else ""),
        ),
        _gated(
            "error_ratio",
            paired.candidate_failed / answered if answered else None,
            gates.error_ratio,
            note=f"{paired.candidate_failed} of {answered} copies answered with an error or not at all",
        ),
    ]
    shifts: list[Check] = []
    if paired.rows:
        shifts = _shift_checks(paired, spec, stable)
    checks += [_thin(check) if thin else check for check in shifts]
    candidate_window, stable_window = windows
    if candidate_window is not None:
        threshold = Threshold(
            "p95_ms", gates.p95_ms.max, gates.p95_ms.max_vs_stable, gates.p95_ms.min_effect_ms or 0.0
        )
        analysis = Analysis(
            interval_seconds=1,
            count=1,
            failure_limit=0,
            min_requests=LATENCY_MIN_REQUESTS,
            thresholds=(threshold,),
            significance_level=spec.significance_level,
        )
        checks += judge(analysis, candidate_window, stable_window, label="candidate").checks
    else:
        checks.append(Check(scope="candidate", metric="p95", value=None, result="fail", note="no /metrics"))
    bins = _bins(paired, stable, spec.feature) if spec.feature and paired.rows else []
    results = {check.result for check in checks}
    verdict: Verdict = next((r for r in VERDICT_ORDER if r in results), "pass")
    return Comparison(verdict, checks, bins)


def _thin(check: Check) -> Check:
    return check if check.result == "info" else replace(check, result="inconclusive")


def _gated(metric: str, value: float | None, bound: ShadowBound, *, note: str = "", digits: int = 3) -> Check:
    """`value` against a `{min|max: X, advisory}` gate: an advisory breach is a warning."""
    if bound.min is not None:
        check = Check.bounded(SCOPE, metric, value, ">=", bound.min, digits=digits, note=note)
    else:
        assert bound.max is not None  # the config takes exactly one of min and max
        check = Check.bounded(SCOPE, metric, value, "<=", bound.max, digits=digits, note=note)
    if check.failed and bound.advisory:
        return replace(check, result="warn", note=f"{note}; advisory" if note else "advisory")
    return check


def _shift_checks(paired: Paired, spec: ShadowSpec, stable: ModelCard) -> list[Check]:
    gates, n = spec.gates, paired.rows
    checks = []
    if not stable.is_regression:
        agree = sum(a == b for a, b in zip(paired.stable_labels, paired.candidate_labels, strict=True))
        checks.append(
            _gated("label_agreement", agree / n, gates.label_agreement, note=f"{n - agree} rows differ")
        )
        shift = prediction_shift(
            "positive_rate_delta",
            _window(classes=Counter(paired.candidate_labels)),
            _window(classes=Counter(paired.stable_labels)),
        )
        checks.append(_gated("positive_rate_delta", shift, gates.positive_rate_delta, note=_rates(paired)))
    if stable.reference is None:
        checks.append(
            Check(
                scope=SCOPE,
                metric="score_psi",
                value=None,
                result="inconclusive",
                note="the stable card has no reference profile (score bins): exported before drift monitoring",
            )
        )
    else:
        inner = inner_edges(stable.reference.score.edges)
        binned = [
            Counter(bin_index(inner, side).tolist())
            for side in (paired.candidate_scores, paired.stable_scores)
        ]
        candidate_bins, stable_bins = (
            _window(score_bins=Counter({str(k): v for k, v in counts.items()})) for counts in binned
        )
        psi = prediction_shift("score_psi", candidate_bins, stable_bins)
        checks.append(_gated("score_psi", psi, gates.score_psi, note=f"{len(inner) + 1} reference bins"))
    checks.append(
        _gated("score_ks", ks_statistic(paired.stable_scores, paired.candidate_scores), gates.score_ks)
    )
    worst = max(paired.abs_diffs)
    row = paired.abs_diffs.index(worst)
    note = f"row {row}: stable {paired.stable_scores[row]:.3g}, candidate {paired.candidate_scores[row]:.3g}"
    checks.append(_gated("max_abs_diff", worst, gates.max_abs_diff, note=note))
    return checks


def _window(
    *, classes: Mapping[str, int] | None = None, score_bins: Mapping[str, int] | None = None
) -> Window:
    """Counts as the canary judge's window holds them, for its `prediction_shift`."""
    return Window(
        requests=0,
        errors=0,
        p95_ms=None,
        p99_ms=None,
        classes=tuple(sorted((classes or {}).items())),
        score_bins=tuple(sorted((score_bins or {}).items(), key=lambda item: int(item[0]))),
    )


def _rates(paired: Paired) -> str:
    """`class 1: 0.62 vs 0.63`: each class's share of the predictions, candidate vs stable."""
    n = paired.rows
    ours, theirs = Counter(paired.stable_labels), Counter(paired.candidate_labels)
    return ", ".join(f"class {c}: {theirs[c] / n:.2f} vs {ours[c] / n:.2f}" for c in sorted(ours | theirs))


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs (0-1)."""
    x, y = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    at = np.concatenate([x, y])
    gaps = np.searchsorted(x, at, side="right") / len(x) - np.searchsorted(y, at, side="right") / len(y)
    return float(np.max(np.abs(gaps)))


def _bins(paired: Paired, card: ModelCard, feature: str) -> list[tuple[str, int, float]]:
    """Disagreement per category of `feature`: the reference profile's bins (numeric edges, categories then
    `other`, a nullable feature's `missing`), else its distinct values."""
    profile = (
        None if card.reference is None else next(p for p in card.reference.features if p.name == feature)
    )
    values = paired.feature_values
    if profile is None:
        labels = sorted({str(v) for v in values})
        index = [labels.index(str(v)) for v in values]
    elif profile.categorical:
        labels = [*profile.categories, "other"]
        index = category_index(profile.categories, values).tolist()
    else:
        edges = profile.edges
        labels = [f"[{edges[i]:.4g}, {edges[i + 1]:.4g})" for i in range(len(edges) - 1)] + ["missing"]
        present = np.asarray([math.nan if v is None else float(v) for v in values])
        index = np.where(np.isnan(present), len(edges) - 1, bin_index(inner_edges(edges), present)).tolist()
    disagree: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for i, at in enumerate(index):
        disagree[at][0] += 1
        if card.is_regression:
            disagree[at][1] += paired.abs_diffs[i] > 0
        else:
            disagree[at][1] += paired.stable_labels[i] != paired.candidate_labels[i]
    return [(labels[at], n, differ / n) for at, (n, differ) in sorted(disagree.items())]


def check_feature(spec: ShadowSpec, card: ModelCard) -> None:
    """ConfigError when `shadow.feature` names no feature of the card (before any process starts)."""
    if spec.feature is not None and spec.feature not in card.feature_names:
        known = ", ".join(card.feature_names[:8]) + (" ..." if card.n_features > 8 else "")
        msg = f"shadow.feature {spec.feature!r} is not a feature of model {card.name} ({known}): name one of them or null"
        raise ConfigError(msg)
