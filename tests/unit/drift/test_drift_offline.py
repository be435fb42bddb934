"""Offline drift checks (PSI, KS per feature) and the canary's prediction-shift checks, without processes."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_service.contract.card import parse_card
from model_service.contract.monitoring import scores
from pipeline.config import ConfigError, load_config
from pipeline.deploy.argo_analysis import analysis_metrics, drift_rules
from pipeline.ml.drift_checks import SCORE, Sample, compare
from pipeline.ml.profile import SCORE_EDGES, bin_counts
from pipeline.rollout.analysis import Window, judge, prediction_shift
from pipeline.rollout.plan import plan
from pipeline.stages.drift import training_columns
from pipeline.stages.export import predict_onnx

REPO = Path(__file__).parents[3]


def _config(*overrides: str) -> Any:
    return load_config("dev", REPO / "environments", overrides)


def _sample(rows: np.ndarray, card: dict[str, Any], model_dir: Path) -> Sample:
    counts = [bin_counts(f["edges"], rows[:, j]) for j, f in enumerate(card["reference"]["features"])]
    score = bin_counts(SCORE_EDGES, scores(predict_onnx(model_dir / "model.onnx", rows)))
    return Sample("test", len(rows), counts, score, rows.tolist())


def _columns(card: dict[str, Any], train_rows: np.ndarray) -> dict[str, np.ndarray]:
    return training_columns([f["name"] for f in card["features"]], train_rows, parse_card(card))


def _flagged_features(checks: list[Any]) -> list[str]:
    return sorted({c.scope for c in checks if c.failed and c.scope != SCORE})


def test_drift_rows_from_the_reference_distribution_show_no_drift(
    card: dict[str, Any],
    model_dir: Path,
    train_rows: np.ndarray,
) -> None:
    rng = np.random.default_rng(11)
    rows = train_rows[rng.integers(0, len(train_rows), 1000)]
    checks = compare(_config(), parse_card(card), _sample(rows, card, model_dir), _columns(card, train_rows))
    assert _flagged_features(checks) == []
    assert {c.metric for c in checks} == {"psi", "ks"}
    assert not next(c for c in checks if c.scope == SCORE).failed


def test_drift_one_shifted_feature_is_flagged_and_only_it(
    card: dict[str, Any],
    model_dir: Path,
    train_rows: np.ndarray,
) -> None:
    rng = np.random.default_rng(12)
    rows = train_rows[rng.integers(0, len(train_rows), 1000)].copy()
    j = 7  # mean concave points
    rows[:, j] += 1.5 * rows[:, j].std()
    checks = compare(_config(), parse_card(card), _sample(rows, card, model_dir), _columns(card, train_rows))
    name = card["features"][j]["name"]
    assert _flagged_features(checks) == [name]
    by_stat = {c.metric: c for c in checks if c.scope == name}
    assert by_stat["psi"].failed and by_stat["ks"].failed


def test_drift_per_feature_bounds_override_the_defaults(
    card: dict[str, Any],
    model_dir: Path,
    train_rows: np.ndarray,
) -> None:
    rows = train_rows.copy()
    rows[:, 0] += 2 * rows[:, 0].std()
    name = card["features"][0]["name"]
    config = _config(
        f'drift.features={{"{name}": {{psi: {{warn: 50, fail: 100}}, ks: {{warn: 0.99, fail: 1}}}}}}'
    )
    assert (
        _flagged_features(
            compare(config, parse_card(card), _sample(rows, card, model_dir), _columns(card, train_rows))
        )
        == []
    )


def _window(scores_: dict[str, float], classes: dict[str, float]) -> Window:
    return Window(
        requests=100,
        errors=0,
        p95_ms=5.0,
        p99_ms=8.0,
        score_bins=tuple(scores_.items()),
        classes=tuple(classes.items()),
    )


def test_drift_prediction_shift_names_the_statistic_and_bound() -> None:
    analysis = plan(_config()).analysis
    stable = _window({"0": 35, "9": 65}, {"0": 35, "1": 65})
    same = _window({"0": 36, "9": 64}, {"0": 36, "1": 64})
    inverted = _window({"0": 65, "9": 35}, {"0": 65, "1": 35})
    assert judge(analysis, same, stable).passed
    verdict = judge(analysis, inverted, stable)
    assert not verdict.passed
    assert any(r.startswith("canary positive_rate_delta vs stable 0.3 > max 0.2") for r in verdict.reasons)
    spread = _window({str(b): 10 for b in range(10)}, {"0": 50, "1": 50})
    assert any(r.startswith("canary score_psi vs stable") for r in judge(analysis, stable, spread).reasons)
    assert prediction_shift("positive_rate_delta", inverted, stable) == pytest.approx(0.3)
    no_stable = judge(analysis, inverted, None)
    assert no_stable.result == "inconclusive"  # retried within the step, then failed
    assert any("score_psi vs stable: the stable version did not answer" in r for r in no_stable.reasons)


def test_drift_prediction_shift_bounds_take_max_not_max_vs_stable() -> None:
    with pytest.raises(ConfigError, match="score_psi compares the new version with stable already"):
        _config("rollout.analysis.metrics.score_psi={max_vs_stable: 2}")


def test_drift_analysis_template_and_alerts_carry_the_same_bounds() -> None:
    config = _config()
    metrics = {m["name"]: m for m in analysis_metrics(plan(config).analysis, config.cluster_timing)}
    shift = metrics["positive-rate-delta"]
    assert "model_service_predicted_class_total" in shift["provider"]["prometheus"]["query"]
    assert "canary-hash" in shift["provider"]["prometheus"]["query"]
    assert "stable-hash" in shift["provider"]["prometheus"]["query"]
    assert shift["failureCondition"] == "len(result) == 0 || result[0] > 0.2"
    assert "ln(" in metrics["score-psi"]["provider"]["prometheus"]["query"]
    rules = {r["alert"]: r for r in drift_rules(config)["rules"]}
    assert rules["ModelServiceInputDrift"]["expr"].endswith("> 0.25")
    assert rules["ModelServicePredictionShift"]["for"] == "30m"
