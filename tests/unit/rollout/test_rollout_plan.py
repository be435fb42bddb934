from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.rollout.plan import Analyze, AwaitApproval, Pause, Promote, SetWeight, Smoke, plan

ENVIRONMENTS = Path(__file__).parents[3] / "environments"


def config(*overrides: str, env: str = "dev"):  # type: ignore[no-untyped-def]
    return load_config(env, ENVIRONMENTS, overrides)


def test_canary_plan_follows_the_steps_in_order_and_ends_promoted() -> None:
    result = plan(config())
    assert result.strategy == "canary"
    kinds = [type(action) for action in result.actions]
    assert kinds == [SetWeight, Pause, Analyze, SetWeight, Analyze, Promote]
    assert [a.weight for a in result.actions if isinstance(a, SetWeight)] == [20, 50]
    analyze = result.actions[2]
    assert isinstance(analyze, Analyze)
    assert analyze.target == "canary"
    assert {t.metric for t in analyze.analysis.thresholds} == {
        "error_ratio",
        "p95_ms",
        "p99_ms",
        "positive_rate_delta",
        "score_psi",
    }
    assert result.actions[-1] == Promote(2)


def test_blue_green_checks_the_preview_before_the_switch() -> None:
    result = plan(config(env="staging"))
    assert [type(a) for a in result.actions] == [Smoke, Analyze, Promote]
    manual = plan(
        config(
            "rollout.blue_green.auto_promotion=false",
            "rollout.blue_green.preview_analysis=false",
            env="staging",
        )
    )
    assert [type(a) for a in manual.actions] == [Smoke, AwaitApproval, Promote]


def test_the_plan_is_deterministic_and_immutable() -> None:
    assert plan(config()) == plan(config())
    with pytest.raises(AttributeError):
        plan(config()).actions[0].weight = 99  # type: ignore[misc, union-attr]


def test_describe_names_every_bound() -> None:
    lines = plan(config()).describe()
    assert lines[0] == "1. set weight 20% to the new version"
    assert "p95_ms <= 250 and p95_ms not above 3x stable and +10ms with p < 0.01" in lines[2]
    assert "abort after 1 failed or 3 inconclusive" in lines[2]
    assert "abort after 1 failed" in lines[2]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rollout.steps=[{set_weight: 50}, {set_weight: 20}, {analysis: {}}]", "must only increase"),
        ("rollout.steps=[{set_weight: 50}, {set_weight: 50}, {analysis: {}}]", "must only increase"),
        ("rollout.steps=[{set_weight: 50}, {pause: {seconds: 5}}]", "at least one analysis step"),
        ("rollout.steps=[{analysis: {}}, {set_weight: 50}]", "needs a set_weight before it"),
        ("rollout.steps=[{pause: {}}]", "rollout.steps.0.pause.seconds: required key is missing"),
        ("rollout.steps=[{pause: {seconds: 0}}]", "greater than or equal to 1"),
        (
            "rollout.steps=[{set_weight: 20, pause: {seconds: 5}}]",
            "exactly one of set_weight, pause, analysis",
        ),
        ("rollout.steps=[{set_weight: 120}]", "less than or equal to 100"),
        ("rollout.steps=[]", "strategy 'canary' needs steps"),
        ("rollout.analysis.metrics.error_ratio={max: null}", "needs 'max' or 'max_vs_stable'"),
        ("rollout.analysis.on_no_data=pass", "rollout.analysis.on_no_data"),
        ("rollout.analysis.count=0", "rollout.analysis.count"),
        (
            "rollout.analysis.metrics.error_ratio={max: 0.01, min_effect_ms: 5}",
            "metrics.error_ratio.min_effect_ms: only latency metrics (p95_ms, p99_ms) take it",
        ),
        ("rollout.analysis.metrics.p95_ms={max_vs_stable: 3, min_effect_ms: -1}", "rollout.analysis.metrics"),
        ("rollout.analysis.significance_level=0.5", "rollout.analysis.significance_level"),
        ("rollout.analysis.inconclusive_limit=-1", "rollout.analysis.inconclusive_limit"),
        ("rollout.analysis.min_predictions=0", "rollout.analysis.min_predictions"),
        ("rollout.strategy=linear", "rollout.strategy"),
    ],
)
def test_unsound_rollouts_are_refused_at_config_load(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config(override)
