"""The engine's decisions with fakes for the router and the versions: no processes, a fake clock."""

from collections.abc import Mapping
from pathlib import Path

import pytest

from model_service.contract.monitoring import REQUEST_DURATION as LATENCY
from model_service.contract.monitoring import REQUESTS
from pipeline.config import load_config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.rollout.analysis import EMPTY, Scrape, judge, parse_metrics, quantile, window
from pipeline.rollout.engine import execute
from pipeline.rollout.plan import plan

ENVIRONMENTS = Path(__file__).parents[3] / "environments"
BOUNDS = (0.001, 0.005, 0.5, float("inf"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Router:
    def __init__(self) -> None:
        self.weight = 0
        self.history: list[int] = []
        self.header_history: list[tuple[int, str, dict[str, str]]] = []
        """(weight at the time, route name, its patterns: none when removed)."""
        self.up = True

    def set_weight(self, weight: int) -> None:
        self.weight = weight
        self.history.append(weight)

    def set_header_route(self, name: str, patterns: Mapping[str, str]) -> None:
        self.header_history.append((self.weight, name, dict(patterns)))

    def alive(self) -> bool:
        return self.up


class Versions:
    """Each scrape adds traffic split by the router's weight; the new version fails `error_ratio` of it."""

    def __init__(
        self,
        router: Router,
        clock: Clock,
        *,
        error_ratio: float = 0.0,
        slow: bool = False,
        slow_until: float = 0.0,
        silent_preview: bool = False,
    ) -> None:
        self.router, self.clock = router, clock
        self.error_ratio, self.slow, self.slow_until = error_ratio, slow, slow_until
        self.silent_preview = silent_preview
        self.stable = self.new = Scrape(0, 0, tuple((b, 0.0) for b in BOUNDS))
        self.last = 0.0
        self.dies_at: float | None = None
        self.retired = False
        self.preview_on: list[bool] = []
        self.smoke_problems: list[str] = []

    def _grow(self, scrape: Scrape, requests: int, errors: int, bucket: int) -> Scrape:
        buckets = tuple((b, c + (requests if i >= bucket else 0)) for i, (b, c) in enumerate(scrape.buckets))
        return Scrape(scrape.requests + requests, scrape.errors + errors, buckets)

    def scrape(self) -> tuple[Scrape | None, Scrape | None]:
        elapsed, self.last = self.clock.now - self.last, self.clock.now
        total = int(100 * elapsed)
        preview = self.preview_on[-1:] == [True]  # test traffic to the preview, user traffic to stable
        to_new = (0 if self.silent_preview else total) if preview else total * self.router.weight // 100
        self.stable = self._grow(self.stable, total if preview else total - to_new, 0, 0)
        slow = self.slow or self.clock.now <= self.slow_until
        self.new = self._grow(self.new, to_new, int(to_new * self.error_ratio), 2 if slow else 0)
        return self.stable, (self.new if self.new_alive() else None)

    def new_alive(self) -> bool:
        return self.dies_at is None or self.clock.now < self.dies_at

    def smoke(self, requests: int) -> list[str]:
        return self.smoke_problems

    def preview_traffic(self, on: bool) -> None:
        self.preview_on.append(on)

    def retire_stable(self) -> None:
        self.retired = True


def run(env: str = "dev", *overrides: str, **versions_kwargs: object):  # type: ignore[no-untyped-def]
    clock, router = Clock(), Router()
    versions = Versions(router, clock, **versions_kwargs)  # type: ignore[arg-type]
    rehearsal = plan(load_config(env, ENVIRONMENTS, overrides))
    outcome = execute(rehearsal, router, versions, Reporter(), clock=clock, sleep=clock.sleep)
    return outcome, router, versions


def test_healthy_canary_walks_every_weight_and_promotes() -> None:
    outcome, router, versions = run()
    assert outcome.status == "promoted"
    assert router.history == [20, 50, 100]
    assert versions.retired
    windows = [e for e in outcome.events if e.action == "analysis"]
    assert len(windows) == 4
    assert all(e.verdict == "PASS" for e in windows)
    assert [check.line() for check in outcome.checks] == [
        "step 3 canary failed windows 0 <= max 0",
        "step 3 canary inconclusive windows 0 <= max 2",
        "step 5 canary failed windows 0 <= max 0",
        "step 5 canary inconclusive windows 0 <= max 2",
    ]


def test_errors_abort_at_the_first_analysis_with_the_numbers() -> None:
    outcome, router, versions = run(error_ratio=0.2)
    assert outcome.status == "aborted"
    assert router.history == [20, 0]
    assert router.weight == 0
    assert not versions.retired
    assert (
        outcome.reason == "ABORT step 3 (weight 20%): canary error ratio 0.2 > max 0.01 (1/1 failed checks)"
    )
    # The step that aborted says so in its own check, with the window's reason.
    [failed] = [check for check in outcome.checks if check.failed]
    assert (
        failed.line() == "step 3 canary failed windows 1 > max 0: window 1: canary error ratio 0.2 > max 0.01"
    )


def test_latency_aborts_naming_the_percentile() -> None:
    outcome, router, _ = run(slow=True)
    assert outcome.status == "aborted"
    assert "canary p95 475ms > max 250ms" in outcome.reason
    assert router.weight == 0


def test_failure_limit_tolerates_that_many_failed_windows() -> None:
    outcome, _, _ = run("dev", "rollout.analysis.failure_limit=1", error_ratio=0.2)
    assert outcome.status == "aborted"
    assert "(2/2 failed checks)" in outcome.reason


def test_too_little_traffic_is_no_data_and_fails() -> None:
    outcome, _, _ = run("dev", "rollout.analysis.min_requests=1000")
    assert outcome.status == "aborted"
    assert "canary requests 60 < min 1000: no data" in outcome.reason


def test_a_candidate_dying_during_a_pause_aborts_at_once() -> None:
    clock, router = Clock(), Router()
    versions = Versions(router, clock)
    versions.dies_at = 1.0
    outcome = execute(
        plan(load_config("dev", ENVIRONMENTS)), router, versions, Reporter(), clock=clock, sleep=clock.sleep
    )
    assert outcome.status == "aborted"
    assert "the new version's process died" in outcome.reason
    assert router.weight == 0
    assert outcome.aborted_at_s is not None and outcome.aborted_at_s <= 1.25


def test_router_failure_aborts() -> None:
    clock, router = Clock(), Router()
    versions = Versions(router, clock)
    router.up = False
    outcome = execute(
        plan(load_config("dev", ENVIRONMENTS)), router, versions, Reporter(), clock=clock, sleep=clock.sleep
    )
    assert outcome.status == "aborted"
    assert "Caddy" in outcome.reason


class RefusingRouter(Router):
    """A splitter whose admin API refuses a weight change (Caddy's set_weight raises StageError)."""

    def __init__(self, refuse_at: int) -> None:
        super().__init__()
        self.refuse_at = refuse_at

    def set_weight(self, weight: int) -> None:
        if weight == self.refuse_at:
            raise StageError(f"Caddy's admin API refused the weight change to {weight}%")
        super().set_weight(weight)


def test_a_refused_weight_change_takes_the_abort_path() -> None:
    """Any failure ends at weight 0 with an abort in the timeline, a router error included."""
    clock, router = Clock(), RefusingRouter(refuse_at=50)
    versions = Versions(router, clock)
    outcome = execute(
        plan(load_config("dev", ENVIRONMENTS)), router, versions, Reporter(), clock=clock, sleep=clock.sleep
    )
    assert outcome.status == "aborted"
    assert "refused the weight change to 50%" in outcome.reason
    assert router.history[-1] == 0
    assert outcome.events[-1].action == "abort"


def test_interrupt_sets_weight_zero_and_propagates() -> None:
    clock, router = Clock(), Router()
    versions = Versions(router, clock)

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(
            plan(load_config("dev", ENVIRONMENTS)), router, versions, Reporter(), clock=clock, sleep=interrupt
        )
    assert router.history[-1] == 0


def test_blue_green_runs_preview_checks_then_switches_at_once() -> None:
    outcome, router, versions = run("staging")
    assert outcome.status == "promoted"
    assert router.history == [100]
    assert versions.preview_on == [True, False]


def test_blue_green_failing_smoke_never_takes_traffic() -> None:
    clock, router = Clock(), Router()
    versions = Versions(router, clock)
    versions.smoke_problems = ["request 1: HTTP 500"]
    outcome = execute(
        plan(load_config("staging", ENVIRONMENTS)),
        router,
        versions,
        Reporter(),
        clock=clock,
        sleep=clock.sleep,
    )
    assert outcome.status == "aborted"
    assert 100 not in router.history
    assert "preview smoke test: request 1: HTTP 500" in outcome.reason


def test_manual_promotion_without_approval_aborts() -> None:
    outcome, router, _ = run("staging", "rollout.blue_green.auto_promotion=false")
    assert outcome.status == "aborted"
    assert "not approved" in outcome.reason
    assert 100 not in router.history


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.001, 50.0), (0.002, 90.0), (0.005, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.001)
    assert quantile(0.95, buckets) == pytest.approx(0.0035)
    assert quantile(0.99, [(0.001, 0.0), (float("inf"), 10.0)]) == pytest.approx(0.001)
    assert quantile(0.95, []) is None


def test_parse_metrics_counts_user_routes_and_5xx_only() -> None:
    text = f"""# TYPE {REQUESTS} counter
{REQUESTS}_total{{route="/v1/predict",status="200"}} 90.0
{REQUESTS}_total{{route="/v1/predict",status="500"}} 10.0
{REQUESTS}_total{{route="/v1/predict",status="422"}} 5.0
{REQUESTS}_total{{route="unmatched",status="404"}} 7.0
# TYPE {LATENCY} histogram
{LATENCY}_bucket{{route="/v1/predict",status="200",le="0.001"}} 80.0
{LATENCY}_bucket{{route="/v1/predict",status="200",le="+Inf"}} 90.0
{LATENCY}_bucket{{route="/v2/models/{{name}}/infer",status="200",le="0.001"}} 5.0
{LATENCY}_bucket{{route="/v2/models/{{name}}/infer",status="200",le="+Inf"}} 5.0
"""
    parsed = parse_metrics(text)
    assert parsed.requests == 105
    assert parsed.errors == 10
    assert dict(parsed.buckets) == {0.001: 85.0, float("inf"): 95.0}
    delta = window(Scrape(0, 0, ()), parsed)
    assert delta.error_ratio == pytest.approx(10 / 105)


def test_relative_bound_compares_with_stable() -> None:
    analysis = plan(load_config("dev", ENVIRONMENTS)).analysis
    fast = window(Scrape(0, 0, ()), Scrape(100, 0, ((0.001, 100.0), (float("inf"), 100.0))))
    slow = window(Scrape(0, 0, ()), Scrape(100, 0, ((0.001, 0.0), (0.1, 100.0), (float("inf"), 100.0))))
    verdict = judge(analysis, slow, fast)
    assert not verdict.passed
    assert any("vs stable" in reason and "Mann-Whitney" in reason for reason in verdict.reasons)
    assert judge(analysis, fast, fast).passed


def test_prediction_shift_needs_counters_on_both_sides() -> None:
    analysis = plan(load_config("dev", ENVIRONMENTS)).analysis
    buckets = ((0.001, 100.0), (float("inf"), 100.0))
    counted = Scrape(
        100, 0, buckets, score_bins=(("0", 50.0), ("9", 50.0)), classes=(("0", 50.0), ("1", 50.0))
    )
    zero = Scrape(0, 0, (), score_bins=(("0", 0.0), ("9", 0.0)), classes=(("0", 0.0), ("1", 0.0)))
    old_card = Scrape(100, 0, buckets)  # a version exported before drift monitoring: no counters at all
    new = window(zero, counted)
    # A stable without counters cannot be compared (the rehearsal warns before it starts): not a failure.
    assert judge(analysis, new, window(EMPTY, old_card)).passed
    # Counters on both sides but too few rows counted on one of them: inconclusive (retried, then failed).
    silent = window(zero, Scrape(100, 0, buckets, score_bins=zero.score_bins, classes=zero.classes))
    verdict = judge(analysis, new, silent)
    assert verdict.result == "inconclusive"
    assert any("too few rows (n 100 vs 0 rows) < min 50" in reason for reason in verdict.reasons)


# Latency vs stable only, with a significance no test reaches: a slower window is always inconclusive.
NEVER_SIGNIFICANT = (
    "rollout.analysis.metrics.p95_ms={max: null, max_vs_stable: 3, min_effect_ms: 1}",
    "rollout.analysis.significance_level=1e-300",
)


def test_an_inconclusive_window_is_retried_and_the_step_goes_on() -> None:
    # slow during the first window of the first analysis step (it starts at t=2 after the pause), then healthy
    outcome, _router, _ = run("dev", *NEVER_SIGNIFICANT, slow_until=5.0)
    assert outcome.status == "promoted", outcome.reason
    first_step = [e for e in outcome.events if e.action == "analysis" and e.step == 3]
    assert [e.verdict for e in first_step] == ["INCONCLUSIVE", "PASS", "PASS"]
    assert first_step[0].checks is not None
    assert any(line.startswith("INCONCLUSIVE canary p95") for line in first_step[0].checks)
    assert "not significant" in first_step[0].detail


def test_inconclusive_past_the_limit_fails_the_step() -> None:
    outcome, router, _ = run("dev", *NEVER_SIGNIFICANT, "rollout.analysis.inconclusive_limit=1", slow=True)
    assert outcome.status == "aborted"
    assert outcome.reason.startswith("ABORT step 3 (weight 20%): inconclusive 2 times > limit 1: canary p95")
    assert router.weight == 0
    assert len([e for e in outcome.events if e.action == "analysis"]) == 2


def test_the_preview_is_judged_once_its_test_traffic_flows() -> None:
    outcome, _, versions = run("staging")
    assert outcome.status == "promoted"
    windows = [e for e in outcome.events if e.action == "analysis"]
    assert all(e.new is not None and e.new["requests"] > 0 for e in windows)
    assert versions.preview_on == [True, False]


def test_a_preview_without_test_traffic_aborts_after_the_wait() -> None:
    outcome, router, versions = run("staging", silent_preview=True)
    assert outcome.status == "aborted"
    assert "no test traffic reached the preview within 30s" in outcome.reason
    assert versions.preview_on == [True, False]
    assert 100 not in router.history
