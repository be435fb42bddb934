"""Each clause of the promotion policy, at the times it changes (the clock is a parameter): it blocks,
names itself and says when it would pass."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pipeline.config import Config, ConfigError, load_config
from pipeline.release.policy import Clause, Readings, blocking, evaluate, next_open

ENVIRONMENTS = Path(__file__).parents[3] / "environments"
BERLIN = ZoneInfo("Europe/Berlin")
DIGEST = "ghcr.io/acme/model@sha256:" + "a" * 64
START = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)  # a Monday


def prod(promotion: str) -> Config:
    """prod's config with `promotion` over a policy of no clauses (prod.yaml's `from` left out)."""
    return load_config("prod", ENVIRONMENTS, ("promotion={from: null}", f"promotion={promotion}"))


def move(version: str, at: datetime, action: str = "promote", image: str | None = DIGEST) -> dict[str, Any]:
    return {"version": version, "previous": None, "action": action, "at": at.isoformat(), "image": image}


def verdict(config: Config, now: datetime, **readings: Any) -> list[Clause]:
    return evaluate(config, Readings(now=now, version="7", image=DIGEST, **readings))


def clause(clauses: list[Clause], name: str) -> Clause:
    return next(c for c in clauses if c.name == name)


def test_from_blocks_a_release_that_never_served_there() -> None:
    config = prod("{from: staging}")
    found = clause(verdict(config, START), "from")
    assert not found.passed
    assert "version 7" in found.detail and "never served staging" in found.detail
    assert "promote --env staging" in found.pass_text()
    assert clause(verdict(config, START, source_history=[move("7", START)]), "from").passed
    assert all(c.name != "from" for c in verdict(prod("{from: null}"), START))  # no clause: nothing asked


def test_from_blocks_a_release_rolled_back_there() -> None:
    history = [move("7", START), move("6", START + timedelta(hours=1), action="rollback")]
    found = clause(
        verdict(prod("{from: staging}"), START + timedelta(hours=2), source_history=history), "from"
    )
    assert not found.passed
    assert "rolled back from staging" in found.detail


def test_soak_counts_the_same_version_and_digest_and_says_when_it_passes() -> None:
    config = prod("{from: staging, soak_hours: 24}")
    history = [move("7", START)]
    early = clause(verdict(config, START + timedelta(hours=10), source_history=history), "soak_hours")
    assert not early.passed
    assert early.passes_at == START + timedelta(hours=24)
    assert "served staging 10.0 h of 24 h" in early.check().line()
    assert "passes at 2026-12-08T08:00+00:00" in early.check().line()
    assert clause(verdict(config, START + timedelta(hours=25), source_history=history), "soak_hours").passed
    other_image = [move("7", START, image="ghcr.io/acme/model@sha256:" + "b" * 64)]
    late = verdict(config, START + timedelta(hours=25), source_history=other_image)
    assert not clause(late, "from").passed  # another image is another release: it never soaked


def test_soak_interrupted_by_a_replacement_starts_again() -> None:
    config = prod("{from: staging, soak_hours: 24}")
    history = [move("7", START), move("8", START + timedelta(hours=5))]
    found = clause(verdict(config, START + timedelta(hours=30), source_history=history), "soak_hours")
    assert not found.passed
    assert found.passes_at is None
    assert "then was replaced" in found.detail and "serves staging again for 24 h" in found.pass_text()


def test_allow_windows_block_outside_and_name_the_next_opening() -> None:
    config = prod(
        '{time_zone: Europe/Berlin, allow: [{days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}]}'
    )
    saturday = datetime(2026, 12, 12, 10, 0, tzinfo=BERLIN)
    found = clause(verdict(config, saturday), "allow")
    assert not found.passed
    assert found.passes_at == datetime(2026, 12, 14, 9, 0, tzinfo=BERLIN)
    assert "Sat 10:00 Europe/Berlin is outside" in found.detail
    assert clause(verdict(config, datetime(2026, 12, 14, 9, 0, tzinfo=BERLIN)), "allow").passed


def test_deny_wins_inside_allow_and_an_overnight_window_spans_midnight() -> None:
    config = prod(
        '{time_zone: Europe/Berlin, allow: [{days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}], '
        'deny: [{days: [fri], start: "15:00", end: "24:00"}]}'
    )
    friday = datetime(2026, 12, 11, 16, 0, tzinfo=BERLIN)
    clauses = verdict(config, friday)
    blocked = blocking(clauses)
    assert blocked is not None and blocked.name == "deny[0]"
    assert blocked.passes_at == datetime(2026, 12, 14, 9, 0, tzinfo=BERLIN)
    night = prod('{deny: [{days: [sun], start: "22:00", end: "06:00"}]}')
    monday_early = datetime(2026, 12, 14, 5, 0, tzinfo=UTC)
    assert not clause(verdict(night, monday_early), "deny[0]").passed
    assert next_open(night, monday_early) == datetime(2026, 12, 14, 6, 0, tzinfo=UTC)


def test_windows_that_leave_no_time_open_say_so() -> None:
    config = prod('{deny: [{start: "00:00", end: "24:00"}]}')
    found = clause(verdict(config, START), "deny[0]")
    assert not found.passed
    assert "leave no time open" in found.pass_text()


def test_a_freeze_blocks_until_a_person_lifts_it() -> None:
    config = prod("{}")
    assert clause(verdict(config, START), "freeze").passed
    frozen = {"reason": "incident 42", "at": "2026-12-07T07:00:00+00:00", "by": "alice"}
    found = clause(verdict(config, START, freeze=frozen), "freeze")
    assert not found.passed
    assert "incident 42" in found.detail and "by alice" in found.detail
    assert "freeze --env prod --lift" in found.pass_text()


def test_the_error_budget_left_is_measured_against_the_slo() -> None:
    config = prod("{error_budget: {min_remaining: 0.25, window_days: 28}}")  # prod's SLO: error ratio 0.001
    spent = clause(verdict(config, START, error_budget=(9.0, 10_000.0)), "error_budget")
    assert not spent.passed
    assert spent.value == pytest.approx(0.1)
    assert "10.0% of the 28-day budget left (9 5xx of 10000 answers" in spent.detail
    assert clause(verdict(config, START, error_budget=(2.0, 10_000.0)), "error_budget").passed
    unread = clause(verdict(config, START, error_budget="http://prom did not answer"), "error_budget")
    assert not unread.passed and "could not be read" in unread.detail


def test_a_clause_config_names_its_key() -> None:
    with pytest.raises(ConfigError, match="soak_hours is set without 'from'"):
        prod("{soak_hours: 2}")
    with pytest.raises(ConfigError, match=r"promotion\.from is 'prod'"):
        prod("{from: prod}")
    with pytest.raises(ConfigError, match="not a known IANA zone"):
        prod("{time_zone: Mars/Olympus}")
