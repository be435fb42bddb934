"""The engine runs header routes like Argo runs managed routes: set at their step, replaced or removed by a
later step of the same name, and all removed when the rollout ends, promoted or aborted
(docs/features/traffic-management in Argo Rollouts: managed routes are removed at the end of a rollout)."""

import re

from pipeline.config import load_config
from pipeline.console import Reporter
from pipeline.rollout.engine import execute
from pipeline.rollout.plan import HeaderMatch, plan
from tests.unit.rollout.test_rollout_engine import ENVIRONMENTS, Clock, Router, Versions

PREVIEW = "{set_header_route: {name: preview, match: [{header: X-Preview, value: {exact: '1'}}]}}"
STEPS = f"rollout.steps=[{PREVIEW}, {{pause: {{seconds: 2}}}}, {{set_weight: 20}}, {{analysis: {{}}}}]"


def rehearse(**versions_kwargs: float) -> tuple[str, Router]:
    clock, router = Clock(), Router()
    versions = Versions(router, clock, **versions_kwargs)  # type: ignore[arg-type]
    rollout_plan = plan(load_config("dev", ENVIRONMENTS, [STEPS]))
    outcome = execute(rollout_plan, router, versions, Reporter(), clock=clock, sleep=clock.sleep)
    return outcome.status, router


def test_the_route_is_set_at_weight_0_and_removed_at_the_promotion() -> None:
    status, router = rehearse()
    assert status == "promoted"
    assert router.header_history == [
        (0, "preview", {"X-Preview": r"^1$"}),
        (100, "preview", {}),
    ]


def test_an_abort_removes_the_route_after_weight_0() -> None:
    status, router = rehearse(error_ratio=0.5)
    assert status == "aborted"
    assert router.history[-1] == 0
    assert router.header_history[-1] == (0, "preview", {})


def test_each_kind_of_value_is_matched_whole() -> None:
    exact = re.compile(HeaderMatch("X", "exact", "a.b").pattern())
    prefix = re.compile(HeaderMatch("X", "prefix", "beta-").pattern())
    regex = re.compile(HeaderMatch("X", "regex", "1|yes").pattern())
    assert exact.search("a.b") and not exact.search("axb") and not exact.search("a.bc")
    assert prefix.search("beta-7") and not prefix.search("xbeta-7")
    assert regex.search("yes") and not regex.search("yesno") and not regex.search("1x")
