"""set_header_route steps: the YAML mirrors Argo Rollouts' setHeaderRoute (headerName, headerValue with one of
exact, prefix, regex; a step without `match` removes the route), checked strictly before anything runs."""

from pathlib import Path

import pytest

from pipeline.config import Config, ConfigError, load_config
from pipeline.rollout.plan import HeaderMatch, SetHeaderRoute, SetWeight, header_routes, plan

CONFIG_DIR = Path(__file__).resolve().parents[3] / "environments"
PREVIEW = "{set_header_route: {name: preview, match: [{header: X-Preview, value: {exact: '1'}}]}}"


def dev(steps: str) -> Config:
    return load_config("dev", CONFIG_DIR, [f"rollout.steps=[{steps}]"])


def test_a_header_route_at_weight_0_is_planned_before_the_first_weight() -> None:
    rollout_plan = plan(dev(f"{PREVIEW}, {{pause: {{seconds: 5}}}}, {{set_weight: 20}}, {{analysis: {{}}}}"))
    assert rollout_plan.actions[0] == SetHeaderRoute("preview", (HeaderMatch("X-Preview", "exact", "1"),))
    assert rollout_plan.actions[2] == SetWeight(20)
    assert header_routes(rollout_plan) == ["preview"]
    assert rollout_plan.describe()[0] == (
        "1. header route preview: requests with X-Preview: 1 go to the new version"
    )


def test_a_route_set_earlier_can_be_removed() -> None:
    rollout_plan = plan(
        dev(f"{PREVIEW}, {{set_weight: 20}}, {{set_header_route: {{name: preview}}}}, {{analysis: {{}}}}")
    )
    assert rollout_plan.actions[2] == SetHeaderRoute("preview", ())
    assert rollout_plan.describe()[2] == "3. remove header route preview"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("{set_header_route: {name: preview}}", "removes route 'preview', which no step before it sets"),
        (
            "{set_header_route: {name: shadow, match: [{header: X-A, value: {exact: '1'}}]}}",
            "'shadow' is the shadow mirror's route",
        ),
        (
            (
                "{set_header_route: {name: p, match: [{header: X-A, value: {exact: '1'}}, "
                "{header: x-a, value: {prefix: '2'}}]}}"
            ),
            "a header appears twice",
        ),
        ("{set_header_route: {name: p, match: [{header: X-A, value: {regex: '('}}]}}", "invalid regex"),
        (
            "{set_header_route: {name: p, match: [{header: X-A, value: {regex: '(?!beta).*'}}]}}",
            "lookaround or backreference",
        ),
    ],
)
def test_a_header_route_the_plan_cannot_keep_is_refused_naming_the_step(step: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"rollout\.steps\.0\.set_header_route") as caught:
        plan(dev(f"{step}, {{set_weight: 20}}, {{analysis: {{}}}}"))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (
            "{set_header_route: {name: p, match: [{header: X-A, value: {exact: '1', prefix: '1'}}]}}",
            "exactly one of exact, prefix, regex",
        ),
        ("{set_header_route: {name: p, match: [{header: 'X A', value: {exact: '1'}}]}}", "header"),
        ("{set_header_route: {name: Preview, match: [{header: X-A, value: {exact: '1'}}]}}", "name"),
        ("{set_header_route: {name: p, match: []}}", "match"),
        (
            "{set_header_route: {name: p, match: [{header: X-A, value: {exact: '1'}}]}, set_weight: 5}",
            "exactly one",
        ),
    ],
)
def test_a_malformed_header_route_is_refused_by_the_config(step: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dev(f"{step}, {{set_weight: 20}}, {{analysis: {{}}}}")


def test_an_analysis_before_any_weight_is_still_refused() -> None:
    with pytest.raises(ConfigError, match="needs a set_weight before it"):
        dev(f"{PREVIEW}, {{analysis: {{}}}}, {{set_weight: 20}}")
