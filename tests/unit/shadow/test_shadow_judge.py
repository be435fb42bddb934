"""The shadow judge on exchanges as the mirror writes them: pairing by request id, the gates, thin
samples, advisory gates, per-category disagreement and the latency rule shared with the canary judge."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import ks_2samp

from model_service.contract.card import ModelCard, read_card
from pipeline.config import ConfigError, ShadowSpec, load_config
from pipeline.rollout.analysis import Window
from pipeline.shadow.judge import (
    Comparison,
    Paired,
    check_feature,
    compare,
    feature_values,
    ks_statistic,
    pair,
)
from tests._service_models import with_reference_profile

REPO = Path(__file__).parents[3]
ROW = [14.0, 20.0, 90.0, 600.0, 0.1, 0.1, 0.08, 0.05, 0.18, 0.06] * 3
FAST = Window(
    requests=400,
    errors=0,
    p95_ms=2.0,
    p99_ms=3.0,
    latency_counts=((0.001, 200.0), (0.0025, 200.0), (float("inf"), 0.0)),
)


@pytest.fixture(scope="module")
def card(plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelCard:
    return read_card(with_reference_profile(plain_model_dir, tmp_path_factory.mktemp("ref") / "model"))


def answer(p1: list[float]) -> str:
    return json.dumps({"model": {"version": "v"}, "predictions": [int(p > 0.5) for p in p1],
                       "probabilities": [[1 - p, p] for p in p1]})  # fmt: skip


def exchange(
    n: int,
    stable: list[float],
    candidate: list[float] | None,
    *,
    status: int = 200,
    copy: str = "answered",
    request: str | None = None,
) -> dict[str, Any]:
    rid = f"id-{n}"
    return {
        "request_id": rid,
        "path": "/v1/predict",
        "request": request or json.dumps({"instances": [ROW] * len(stable)}),
        "stable": {"status": 200, "ms": 2.0, "body": answer(stable), "request_id": rid, "error": ""},
        "copy": copy,
        "candidate": None
        if candidate is None
        else {
            "status": status,
            "ms": 2.5,
            "body": answer(candidate) if status == 200 else "{}",
            "request_id": rid,
            "error": "",
        },
    }


def scores(n: int, seed: int = 0) -> list[float]:
    return [float(x) for x in np.random.default_rng(seed).uniform(0, 1, n).round(4)]


def judged(
    exchanges: list[dict[str, Any]],
    card: ModelCard,
    spec: ShadowSpec | None = None,
    windows: tuple[Window | None, Window | None] = (FAST, FAST),
) -> tuple[Paired, Comparison]:
    spec = spec or load_config("dev", REPO / "environments").shadow
    paired = pair(exchanges, card, card, spec.feature)
    return paired, compare(paired, spec, card, windows=windows)


def test_the_same_answers_pass(card: ModelCard) -> None:
    p = scores(300)
    paired, result = judged([exchange(i, [s], [s]) for i, s in enumerate(p)], card)
    assert paired.rows == 300
    assert result.verdict == "pass"
    assert result.decision.startswith("PASS")
    metrics = {c.metric: c.value for c in result.checks}
    assert metrics["label_agreement"] == 1.0
    assert metrics["max_abs_diff"] == 0.0
    assert metrics["score_ks"] == 0.0


def test_inverted_scores_fail_naming_the_measurement(card: ModelCard) -> None:
    p = scores(300)
    _, result = judged([exchange(i, [s], [1 - s]) for i, s in enumerate(p)], card)
    assert result.verdict == "fail"
    assert result.decision.startswith("FAIL: candidate vs stable label_agreement ")
    failed = {c.metric for c in result.checks if c.result == "fail"}
    assert {"label_agreement"} <= failed


def test_one_class_fails_on_the_positive_rate(card: ModelCard) -> None:
    p = scores(300)
    _, result = judged([exchange(i, [s], [0.9]) for i, s in enumerate(p)], card)
    failed = {c.metric for c in result.checks if c.result == "fail"}
    assert {"label_agreement", "positive_rate_delta", "score_psi"} <= failed


def test_too_few_pairs_is_inconclusive_never_a_pass(card: ModelCard) -> None:
    p = scores(50)
    _, result = judged([exchange(i, [s], [s]) for i, s in enumerate(p)], card)
    assert result.verdict == "inconclusive"
    assert result.decision.startswith("INCONCLUSIVE: candidate vs stable paired rows 50 < min 200")
    shifts = [c for c in result.checks if c.metric in {"label_agreement", "score_psi"}]
    assert shifts and all(c.result == "inconclusive" for c in shifts)


def test_an_advisory_gate_warns(card: ModelCard) -> None:
    """One row 0.4 apart breaches max_abs_diff (advisory by default): a warning, not a failure."""
    spec = load_config("dev", REPO / "environments", ["shadow.gates.max_abs_diff.max=0.3"]).shadow
    p = [0.1] * 300
    candidate = [0.1] * 299 + [0.5]
    _, result = judged(
        [exchange(i, [a], [b]) for i, (a, b) in enumerate(zip(p, candidate, strict=True))], card, spec
    )
    [diff] = [c for c in result.checks if c.metric == "max_abs_diff"]
    assert diff.result == "warn"
    assert "advisory" in diff.note
    assert result.verdict == "warn"
    assert result.decision.startswith("WARN: candidate vs stable max_abs_diff 0.4 > max 0.3")


def test_candidate_errors_and_unpaired_answers_are_counted(card: ModelCard) -> None:
    p = scores(300)
    exchanges = [exchange(i, [s], [s], status=500 if i % 10 == 0 else 200) for i, s in enumerate(p)]
    exchanges.append(exchange(999, [0.2], None, copy="dropped"))
    mismatched = exchange(1000, [0.2], [0.2])
    mismatched["candidate"]["request_id"] = "another"
    exchanges.append(mismatched)
    paired, result = judged(exchanges, card)
    assert paired.candidate_failed == 30
    assert paired.copies["dropped"] == 1
    assert paired.unpaired == {"request ids differ": 1}
    [errors] = [c for c in result.checks if c.metric == "error_ratio"]
    assert errors.result == "fail"
    assert errors.value == pytest.approx(30 / 301)


def test_latency_uses_the_canary_rule(card: ModelCard) -> None:
    """A candidate 50 ms slower on every request fails the ratio, the effect floor and the rank test."""
    p = scores(300)
    slow = Window(
        requests=400,
        errors=0,
        p95_ms=60.0,
        p99_ms=70.0,
        latency_counts=((0.05, 0.0), (0.075, 400.0), (float("inf"), 0.0)),
    )
    _, result = judged([exchange(i, [s], [s]) for i, s in enumerate(p)], card, windows=(slow, FAST))
    [vs_stable] = [c for c in result.checks if c.metric == "p95 vs stable"]
    assert vs_stable.result == "fail"
    assert "Mann-Whitney" in vs_stable.note
    _, unmeasured = judged([exchange(i, [s], [s]) for i, s in enumerate(p)], card, windows=(None, FAST))
    assert unmeasured.verdict == "fail"


def test_disagreement_per_category_of_a_feature(card: ModelCard) -> None:
    spec = load_config("dev", REPO / "environments", ["shadow.feature=mean radius"]).shadow
    small, large = list(ROW), list(ROW)
    small[0], large[0] = 8.0, 25.0
    exchanges = [
        exchange(i, [0.2], [0.2 if i % 2 else 0.8], request=json.dumps({"instances": [small]}))
        for i in range(150)
    ]
    exchanges += [
        exchange(
            150 + i, [0.7], [0.7], request=json.dumps([dict(zip(card.feature_names, large, strict=True))])
        )
        for i in range(150)
    ]
    _, result = judged(exchanges, card, spec)
    shares = {label: share for label, _, share in result.bins}
    assert len(shares) == 2
    assert sorted(shares.values()) == [0.0, 0.5]


def test_feature_values_from_every_request_shape(card: ModelCard) -> None:
    rows = [ROW, [r + 1 for r in ROW]]
    v2 = {
        "inputs": [
            {
                "name": card.inputs[0].name,
                "shape": [2, 30],
                "datatype": "FP32",
                "data": [x for r in rows for x in r],
            }
        ]
    }
    records = [dict(zip(card.feature_names, r, strict=True)) for r in rows]
    for body in ({"instances": rows}, records, v2):
        assert feature_values(json.dumps(body), card, "mean texture") == [20.0, 21.0]


def test_an_unknown_feature_is_refused_before_anything_runs(card: ModelCard) -> None:
    spec = ShadowSpec(feature="radius")
    with pytest.raises(ConfigError, match=r"shadow.feature 'radius' is not a feature of model .*mean radius"):
        check_feature(spec, card)


def test_ks_statistic_is_scipys() -> None:
    a, b = scores(200, 1), [s**2 for s in scores(150, 2)]
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("shadow.gates.score_ks.min=0.1", "exactly one of 'min' or 'max'"),
        ("shadow.mirror_percent=0", "mirror_percent"),
        ("shadow.queue_size=4", "queue_size"),
    ],
)
def test_bad_shadow_config_is_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("dev", REPO / "environments", [override])
