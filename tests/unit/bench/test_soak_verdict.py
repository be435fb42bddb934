"""The soak's checks: memory and descriptor growth after warm-up, server errors, shed 503s apart and bounded,
socket errors, burst answers against their expected status; and each 503 of the service log read against
the process's CPU and run-queue time before it."""

from collections import Counter

import orjson
import pytest

from benchmarks.soak import (
    FD_BOUND,
    RSS_BOUND_MB,
    SHED,
    SHED_BOUND,
    WARMUP_S,
    Sample,
    Shed,
    Traffic,
    judge,
    sheds_in_log,
)


def flat(rss_growth: float = 0.0, fd_growth: int = 0) -> list[Sample]:
    """Warm-up samples that grow a lot (ignored), then steady ones growing by the given amounts at the end."""
    warmup = [Sample(0, 70.0, 12, 0, 1.0), Sample(WARMUP_S / 2, 100.0, 30, 0, 1.0)]
    steady = [Sample(WARMUP_S + 10 * i, 107.0, 16, 0, 1.0) for i in range(5)]
    last = Sample(WARMUP_S + 60, 107.0 + rss_growth, 16 + fd_growth, 0, 1.0)
    return [*warmup, *steady, last]


def traffic(**answers: int) -> Traffic:
    return Traffic(answers=Counter({"200": 100_000, **{k.removeprefix("s"): n for k, n in answers.items()}}))


def test_flat_soak_with_only_expected_answers_passes() -> None:
    assert judge(flat(), traffic(s400=10, s408=20, s422=20, s431=10), []) == []


def test_warm_up_growth_is_not_counted() -> None:
    samples = flat()
    assert samples[-1].rss_mb - samples[0].rss_mb > RSS_BOUND_MB
    assert judge(samples, traffic(), []) == []


@pytest.mark.parametrize(
    ("rss_growth", "fd_growth", "failed"),
    [
        (RSS_BOUND_MB, FD_BOUND, []),
        (RSS_BOUND_MB + 0.5, 0, ["RSS grew 20.5 MB after warm-up > 20 MB"]),
        (0.0, FD_BOUND + 1, ["open descriptors grew by 11 after warm-up > 10"]),
    ],
)
def test_memory_and_descriptor_growth_bounds(rss_growth: float, fd_growth: int, failed: list[str]) -> None:
    assert judge(flat(rss_growth, fd_growth), traffic(), []) == failed


def test_a_single_500_fails() -> None:
    assert judge(flat(), traffic(s500=1), []) == [
        "server errors {'500': 1} > 0 (a shed 503 `overloaded` is counted apart)"
    ]


def test_a_503_that_is_not_a_shed_is_a_server_error() -> None:
    assert judge(flat(), traffic(s503=1), [])[0].startswith("server errors {'503': 1}")


def test_sheds_within_the_bound_pass_and_beyond_it_fail() -> None:
    total = 100_000
    allowed = int(SHED_BOUND * total)
    assert judge(flat(), Traffic(answers=Counter({"200": total - allowed, SHED: allowed})), []) == []
    failed = judge(flat(), Traffic(answers=Counter({"200": total - allowed - 1, SHED: allowed + 1})), [])
    assert failed == [
        f"shed {allowed + 1} of {total} answers > {SHED_BOUND:g} of them: the machine is too busy"
    ]


def test_socket_errors_and_unexpected_answers_fail() -> None:
    seen = traffic()
    seen.socket_errors = 2
    seen.expect("trickled body", 408, 0, b"")
    assert judge(flat(), seen, []) == [
        "wrk socket errors (connect, read, write, timeout) 2 > 0",
        "unexpected answer: trickled body: 0 (expected 408)",
    ]


def test_expect_counts_a_shed_apart_and_not_as_unexpected() -> None:
    seen = Traffic()
    seen.expect("v2 infer", 200, 503, b'{"error":{"code":"overloaded","message":"queued"}}')
    seen.expect("v2 infer", 200, 200, b"{}")
    seen.expect("/readyz", 200, 503, b'{"error":{"code":"not_ready"}}')
    assert seen.answers == Counter({SHED: 1, "200": 1, "503": 1})
    assert seen.unexpected == ["/readyz: 503 (expected 200)"]


def _log(*answers: tuple[float, int]) -> list[str]:
    lines = [orjson.dumps({"ts": 0.0, "level": "INFO", "event": "service_started"}).decode()]
    lines += [
        orjson.dumps({"ts": ts, "event": "request", "status": status}).decode() for ts, status in answers
    ]
    return lines


MS = 1_000_000
"""Nanoseconds, as /proc/PID/schedstat counts."""


def test_each_503_is_read_with_what_the_process_did_in_the_bound_before_it() -> None:
    log = _log((10.0, 200), (10.201, 503), (20.0, 200), (20.150, 503))
    sched = [
        (10.0, 0, 0), (10.1, 5 * MS, 90 * MS), (10.2, 6 * MS, 180 * MS), (10.22, 7 * MS, 190 * MS),
        (20.0, 10 * MS, 200 * MS), (20.06, 60 * MS, 205 * MS), (20.16, 150 * MS, 210 * MS),
    ]  # fmt: skip
    first, second = sheds_in_log(log, sched, bound_s=0.1)
    # From the last sample at or before 10.101 to the first at or after 10.201.
    assert (first.window_s, first.cpu_s, first.run_queue_s) == pytest.approx((0.12, 0.002, 0.1))
    assert first.descheduled
    assert (second.window_s, second.cpu_s, second.run_queue_s) == pytest.approx((0.16, 0.14, 0.01))
    assert not second.descheduled


def test_sheds_while_waiting_for_a_cpu_pass_and_one_with_the_cpu_fails() -> None:
    answers = Traffic(answers=Counter({"200": 100_000, SHED: 2}))
    waited = Shed(ts=1.0, cpu_s=0.003, run_queue_s=0.1, window_s=0.12)
    ran = Shed(ts=2.0, cpu_s=0.1, run_queue_s=0.01, window_s=0.12)
    assert judge(flat(), answers, [waited, waited]) == []
    assert judge(flat(), answers, [waited, ran]) == [
        "1 503s while the service had its CPU (not waiting for one) > 0"
    ]
