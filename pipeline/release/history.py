"""What served an environment, and when: read from the alias history the promote and rollback stages keep
(registered-model tags `history.<env>.*`, adapters/registry.py). The soak clause and the fast rollback
read it; each move records the version and, since release records, its image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Served:
    """One stretch of time a release served the environment."""

    version: str
    image: str | None
    start: datetime
    end: datetime | None
    """None: serving now."""
    ended_by: str | None = None
    """The move that ended it: `promote` (replaced) or `rollback` (rolled back from)."""

    def duration(self, now: datetime) -> timedelta:
        return (self.end or now) - self.start


def served(entries: Sequence[Mapping[str, Any]]) -> list[Served]:
    """The stretches of the history's moves, oldest first."""
    moves = sorted(entries, key=lambda entry: str(entry["at"]))
    out = []
    for move, after in zip(moves, [*moves[1:], None] if moves else [], strict=True):
        out.append(
            Served(
                version=str(move["version"]),
                image=move.get("image"),
                start=datetime.fromisoformat(str(move["at"])),
                end=None if after is None else datetime.fromisoformat(str(after["at"])),
                ended_by=None if after is None else str(after["action"]),
            )
        )
    return out


def releases_between(entries: Sequence[Mapping[str, Any]], target: str) -> int | None:
    """How many other releases served since `target` last served, before the one serving now (Argo's
    count of ReplicaSets between the rollback target and the stable one); None when `target` never served
    before the current release."""
    stretches = served(entries)
    if len(stretches) < 2:  # a current release and at least one before it
        return None
    current = stretches[-1].version
    earlier = [stretch.version for stretch in stretches[:-1]]
    if target not in earlier or target == current:
        return None
    last = len(earlier) - 1 - earlier[::-1].index(target)
    return len({version for version in earlier[last + 1 :] if version not in {target, current}})


def within_rollback_window(entries: Sequence[Mapping[str, Any]], target: str, window: int) -> bool:
    """Whether going back to `target` is a fast rollback: fewer than `window` releases served since."""
    between = releases_between(entries, target)
    return window > 0 and between is not None and between < window
