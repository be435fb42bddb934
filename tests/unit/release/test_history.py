"""The fast rollback's window, counted as Argo Rollouts counts it (rollout/sync.go, isRollbackWithinWindow:
the ReplicaSets between the target's and the stable one's), and the quarantine's record."""

import json
from typing import Any

from pipeline.release.history import releases_between, served, within_rollback_window
from pipeline.release.quarantine import Event, rejection, state


def moves(*versions: str) -> list[dict[str, Any]]:
    return [
        {"version": v, "previous": None, "action": "promote", "at": f"2026-12-0{i + 1}T00:00:00+00:00"}
        for i, v in enumerate(versions)
    ]


def test_the_release_just_before_is_within_any_window() -> None:
    history = moves("1", "2", "3")
    assert releases_between(history, "2") == 0
    assert within_rollback_window(history, "2", 1)
    assert not within_rollback_window(history, "2", 0)  # 0: every rollback repeats the plan


def test_older_releases_count_the_releases_since() -> None:
    history = moves("1", "2", "3", "4")
    assert releases_between(history, "2") == 1
    assert not within_rollback_window(history, "2", 1)
    assert within_rollback_window(history, "2", 2)
    assert releases_between(history, "1") == 2
    assert not within_rollback_window(history, "1", 2)


def test_a_release_that_never_served_or_serves_now_is_no_rollback() -> None:
    history = moves("1", "2")
    assert releases_between(history, "9") is None
    assert releases_between(history, "2") is None
    assert not within_rollback_window(moves("1"), "1", 3)


def test_a_release_served_again_counts_from_its_last_time() -> None:
    history = moves("1", "2", "1", "3")
    assert releases_between(history, "1") == 0
    assert releases_between(history, "2") == 1  # 1 served since, 3 serves now


def test_stretches_end_with_the_move_that_ended_them() -> None:
    history = moves("1", "2")
    history[1]["action"] = "rollback"
    first, second = served(history)
    assert (first.version, first.ended_by, second.end) == ("1", "rollback", None)


def tags(*events: Event) -> dict[str, str]:
    return {"quarantine": json.dumps([vars(e) for e in events])}


def test_a_rejection_holds_for_its_image_and_is_lifted_by_the_last_event() -> None:
    rejected = Event(
        True, "canary aborted", "2026-12-07T10:00:00+00:00", "staging", "repo@sha256:aa", "rollout"
    )
    assert rejection(tags(rejected), "repo@sha256:aa") == rejected
    assert rejection(tags(rejected), "repo@sha256:bb") is None  # the same model in another image
    assert rejection(tags(rejected), None) == rejected
    lifted = Event(
        False, "the cluster was at fault", "2026-12-07T11:00:00+00:00", "staging", action="unquarantine"
    )
    assert rejection(tags(rejected, lifted), "repo@sha256:aa") is None
    assert state(tags(rejected, lifted)) == "lifted: the cluster was at fault"
    everything = Event(True, "rehearsal aborted", "2026-12-07T12:00:00+00:00", "dev", None, "rehearsal")
    assert rejection(tags(everything), "repo@sha256:bb") == everything  # no image: every image of it
