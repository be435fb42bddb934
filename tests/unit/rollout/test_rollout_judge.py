"""The judge's every path on hand-made windows: pure functions, no processes, no clock."""

import math
import random
from pathlib import Path

import pytest

from pipeline.adapters.caddy import split_weights
from pipeline.config import load_config
from pipeline.rollout.analysis import Scrape, Window, fisher_exact, for_task, judge, mann_whitney, window
from pipeline.rollout.plan import Analysis, Analyze, plan

ENVIRONMENTS = Path(__file__).parents[3] / "environments"
BOUNDS = (
    0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5, math.inf,
)  # fmt: skip


def dev(*overrides: str) -> Analysis:
    return plan(load_config("dev", ENVIRONMENTS, overrides)).analysis


def latency_window(seconds: list[float], errors: int = 0) -> Window:
    """A window whose latency histogram holds `seconds`, bucketed like the service's histogram."""
    counts = dict.fromkeys(BOUNDS, 0.0)
    for value in seconds:
        counts[next(bound for bound in BOUNDS if value <= bound)] += 1
    cumulative, total = [], 0.0
    for bound in BOUNDS:
        total += counts[bound]
        cumulative.append((bound, total))
    return window(Scrape(0, 0, ()), Scrape(len(seconds), errors, tuple(cumulative)))


def body(n: int, rng: random.Random) -> list[float]:
    """A healthy sub-millisecond service: 0.4-0.7 ms."""
    return [rng.uniform(0.0004, 0.0007) for _ in range(n)]


# -- the rank test ------------------------------------------------------------------------------------


def test_mann_whitney_counts_pairs_with_ties_as_half() -> None:
    # new {2 ms, 5 ms} vs stable {1 ms, 2 ms}: pairs new>stable = 3, one tie (2 vs 2) = 0.5
    test = mann_whitney([(0.001, 0.0), (0.002, 1.0), (0.005, 1.0)], [(0.001, 1.0), (0.002, 1.0)])
    assert test is not None
    assert test.u == pytest.approx(3.5)
    assert test.superiority == pytest.approx(3.5 / 4)


def test_mann_whitney_alike_is_not_significant_and_shifted_is() -> None:
    rng = random.Random(7)
    same = mann_whitney(
        latency_window(body(300, rng)).latency_counts, latency_window(body(300, rng)).latency_counts
    )
    assert same is not None and same.p_value > 0.05
    shifted = mann_whitney(
        latency_window([s + 0.05 for s in body(40, rng)]).latency_counts,
        latency_window(body(160, rng)).latency_counts,
    )
    assert shifted is not None and shifted.p_value < 1e-9 and shifted.superiority == 1.0
    assert mann_whitney([], latency_window(body(10, rng)).latency_counts) is None


def test_fisher_exact_two_proportions() -> None:
    assert fisher_exact(20, 100, 0, 400) < 1e-9
    assert fisher_exact(0, 100, 0, 400) == 1.0
    assert fisher_exact(1, 20, 0, 400) == pytest.approx(20 / 420)  # the one error landed on the new side
    assert fisher_exact(2, 100, 8, 400) > 0.4
    assert fisher_exact(0, 100, 5, 400) == pytest.approx(1.0)


# -- latency vs stable ------------------------------------------------------------------------------


def test_the_measured_false_abort_passes_below_the_effect_floor() -> None:
    """`canary p95 3ms is 3.98x stable 0.754ms`: relatively slower, absolutely 2.2 ms: not a regression."""
    rng = random.Random(1)
    canary = latency_window([*body(57, rng), 0.0028, 0.0029, 0.003])
    stable = latency_window(body(240, rng))
    verdict = judge(dev(), canary, stable)
    assert verdict.result == "pass"
    [line] = [c.line() for c in verdict.checks if c.metric == "p95 vs stable"]
    assert "x <= max 3x" in line and "(min effect 10ms)" in line and "n 60 vs 240" in line


def test_slower_by_ratio_effect_and_rank_test_fails_with_every_number() -> None:
    rng = random.Random(2)
    canary = latency_window([s + 0.05 for s in body(60, rng)])
    verdict = judge(dev(), canary, latency_window(body(240, rng)))
    assert verdict.result == "fail"
    [reason] = verdict.reasons
    assert reason.startswith("canary p95 vs stable ")
    for part in (
        "x > max 3x",
        "(min effect 10ms)",
        "Mann-Whitney z",
        "P(slower) 1.00",
        "n 60 vs 240",
        "< significance 0.01",
    ):
        assert part in reason


def test_slower_by_ratio_and_effect_without_significance_is_inconclusive() -> None:
    rng = random.Random(3)
    # 2 of 12 canary requests 30 ms slow: p95 far above, but 12 vs 12 requests prove nothing yet
    canary = latency_window([*body(10, rng), 0.03, 0.031])
    stable = latency_window(body(12, rng))
    verdict = judge(dev("rollout.analysis.metrics.p99_ms={max: 500}"), canary, stable)
    assert verdict.result == "inconclusive"
    assert "not significant" in verdict.reasons[0]


def test_too_few_stable_requests_make_the_comparison_inconclusive() -> None:
    rng = random.Random(4)
    verdict = judge(dev(), latency_window([s + 0.05 for s in body(60, rng)]), latency_window(body(5, rng)))
    assert verdict.result == "inconclusive"
    assert "canary p95 vs stable: stable served 5 requests < min 10" in verdict.reasons


def test_too_few_new_requests_is_no_data_and_fails() -> None:
    rng = random.Random(5)
    verdict = judge(dev(), latency_window(body(5, rng)), latency_window(body(200, rng)), label="preview")
    assert verdict.result == "fail"
    assert verdict.reasons == ["preview requests 5 < min 10: no data"]


def test_absolute_bounds_fail_whatever_the_stable_does() -> None:
    rng = random.Random(6)
    verdict = judge(dev(), latency_window([0.4] * 30), latency_window([0.4] * 100))
    assert verdict.result == "fail"
    assert "canary p95 488ms > max 250ms" in verdict.reasons
    assert judge(dev(), latency_window([0.4] * 30), None).result == "fail"  # absolute needs no stable
    assert judge(dev(), latency_window(body(30, rng)), None).result == "inconclusive"


# -- error ratio ------------------------------------------------------------------------------------


ERRORS_VS_STABLE = "rollout.analysis.metrics.error_ratio={max: 0.5, max_vs_stable: 2}"


def test_error_ratio_vs_stable_fails_when_significant() -> None:
    rng = random.Random(8)
    verdict = judge(
        dev(ERRORS_VS_STABLE), latency_window(body(100, rng), errors=20), latency_window(body(400, rng))
    )
    assert verdict.result == "fail"
    assert verdict.reasons[0].startswith(
        "canary error ratio vs stable infx > max 2x: 0.2 vs 0, Fisher exact p"
    )
    assert "n 100 vs 400" in verdict.reasons[0]


def test_error_ratio_vs_stable_inconclusive_when_not_significant() -> None:
    rng = random.Random(9)
    verdict = judge(
        dev(ERRORS_VS_STABLE), latency_window(body(20, rng), errors=1), latency_window(body(400, rng))
    )
    assert verdict.result == "inconclusive"
    assert judge(dev(ERRORS_VS_STABLE), latency_window(body(20, rng)), latency_window(body(400, rng))).passed


def test_error_ratio_absolute_bound_fails_alone() -> None:
    rng = random.Random(10)
    verdict = judge(dev(), latency_window(body(100, rng), errors=20), latency_window(body(400, rng)))
    assert "canary error ratio 0.2 > max 0.01" in verdict.reasons


# -- prediction shift -------------------------------------------------------------------------------


def shift_window(classes: dict[str, float], bins: dict[str, float]) -> Window:
    rows = int(sum(classes.values()))
    return Window(rows, 0, 0.5, 0.6, tuple(bins.items()), tuple(classes.items()), ((0.001, float(rows)),))


def test_prediction_shift_needs_rows_on_both_sides() -> None:
    few = shift_window({"0": 10, "1": 20}, {"0": 10, "9": 20})
    many = shift_window({"0": 100, "1": 200}, {"0": 100, "9": 200})
    inverted = shift_window({"0": 200, "1": 100}, {"0": 200, "9": 100})
    verdict = judge(dev(), few, many)
    assert verdict.result == "inconclusive"
    assert "canary positive_rate_delta vs stable: too few rows (n 30 vs 300 rows) < min 50" in verdict.reasons
    failed = judge(dev(), inverted, many)
    assert failed.result == "fail"
    assert any(r.startswith("canary positive_rate_delta vs stable 0.333 > max 0.2") for r in failed.reasons)
    assert judge(dev(), many, many).passed


# -- the splitter's weights -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "weights"), [(0, [1, 0]), (5, [19, 1]), (20, [4, 1]), (50, [1, 1]), (100, [0, 1])]
)
def test_split_weights_are_in_lowest_terms(weight: int, weights: list[int]) -> None:
    assert split_weights(weight) == weights


def score_window(bins: dict[str, float]) -> Window:
    """A regression version's window: predicted values in its reference bins, no predicted classes."""
    rows = int(sum(bins.values()))
    return Window(rows, 0, 0.5, 0.6, tuple(bins.items()), (), ((0.001, float(rows)),))


def test_a_regression_plan_has_no_class_metrics_and_its_score_shift_is_judged() -> None:
    configured = plan(load_config("dev", ENVIRONMENTS))
    regression = for_task(configured, "regression")
    assert "positive_rate_delta" in {t.metric for t in configured.analysis.thresholds}
    assert {t.metric for t in regression.analysis.thresholds} == {
        "error_ratio",
        "p95_ms",
        "p99_ms",
        "score_psi",
    }
    assert all(a.analysis == regression.analysis for a in regression.actions if isinstance(a, Analyze))
    assert for_task(configured, "multiclass") == configured == for_task(configured, None)
    stable = score_window({str(b): 30 for b in range(10)})
    assert judge(regression.analysis, score_window({str(b): 31 for b in range(10)}), stable).passed
    # Every prediction in the top bin of the reference: a version predicting far off what stable predicts.
    shifted = judge(regression.analysis, score_window({"9": 300}), stable)
    assert shifted.result == "fail"
    assert any(r.startswith("canary score_psi vs stable") for r in shifted.reasons)
    # The sample size of score_psi is the scored rows, not the (absent) predicted classes.
    few = judge(regression.analysis, score_window({"9": 20}), stable)
    assert "canary score_psi vs stable: too few rows (n 20 vs 300 rows) < min 50" in few.reasons


def test_a_multiclass_shift_compares_every_class_share_and_the_top_probability() -> None:
    analysis = dev()
    stable = shift_window({"0": 100, "1": 100, "2": 100}, {"5": 100, "7": 100, "9": 100})
    same = shift_window({"0": 95, "1": 105, "2": 100}, {"5": 95, "7": 105, "9": 100})
    assert judge(analysis, same, stable).passed
    swapped = shift_window({"0": 100, "1": 10, "2": 190}, {"5": 100, "7": 100, "9": 100})
    failed = judge(analysis, swapped, stable)
    assert any(r.startswith("canary positive_rate_delta vs stable 0.3 > max 0.2") for r in failed.reasons)
    unsure = shift_window({"0": 100, "1": 100, "2": 100}, {"3": 300})
    assert any(r.startswith("canary score_psi vs stable") for r in judge(analysis, unsure, stable).reasons)


def test_the_rehearsal_plans_for_the_candidates_task_and_says_what_it_left_out(
    tmp_path: Path, plain_model_dir: Path
) -> None:
    import io  # noqa: PLC0415

    from pipeline.artifacts import ModelDir  # noqa: PLC0415
    from pipeline.console import Reporter  # noqa: PLC0415
    from pipeline.rollout.rehearsal import _plan_for_model  # noqa: PLC0415
    from tests._card_v2 import write_export  # noqa: PLC0415

    config = load_config("dev", ENVIRONMENTS)
    stable = ModelDir(write_export(tmp_path / "stable", "regression"))
    candidate = ModelDir(write_export(tmp_path / "candidate", "regression", score_edges=[-2.0, 0.0, 2.0]))
    out = io.StringIO()
    rehearsal = _plan_for_model(config, stable, candidate, Reporter(out, out))
    assert "positive_rate_delta" not in {t.metric for t in rehearsal.analysis.thresholds}
    assert (
        "regression model: positive_rate_delta (shares of predicted classes) does not apply" in out.getvalue()
    )
    assert "score_psi: the two cards' score bins differ" in out.getvalue()
    classifier = ModelDir(plain_model_dir)  # card v1: read as binary
    assert _plan_for_model(config, classifier, classifier, Reporter(out, out)) == plan(config)
