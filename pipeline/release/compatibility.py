"""Whether a release keeps the clients of the version serving: `breaking`, `additive` or `same`.

A client of the version serving sends what that version's card accepts: objects keyed by feature name
or lists in its feature order (`/v1/predict`), and reads answers shaped by its task and classes. The
candidate's card decides whether those requests still validate and still mean the same:

- breaking: a feature removed or renamed, the columns reordered (a list row would give values to other
  features), a feature added without a default, a type or the values of a feature narrowed, a default
  dropped, the task or the classes changed;
- additive: a feature appended with a default (model.feature_defaults), a type or values widened: every
  old request still validates;
- same: nothing a client sees changed.

Pure: two cards in, the changes out, each with what to do about it. The semver-style version of a model
follows the level (MAJOR for breaking, MINOR for additive, PATCH for same).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from model_service.contract.card import Feature, ModelCard

Level = Literal["same", "additive", "breaking"]
LEVELS: tuple[Level, ...] = ("same", "additive", "breaking")
"""Least to most disruptive."""
BREAKING_FIX = (
    "or roll it out as a breaking release: the plan rollout.breaking names (blue-green: every client moves "
    "at once), or a new model.name beside the old service"
)
WIDER_TYPES = {("int", "float")}
"""Type changes every old value survives: an integer is a number (`true` is not: bool stays bool)."""
_SEMVER = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")


@dataclass(frozen=True)
class Change:
    """One difference a client of the serving version would notice, and what to do about it."""

    level: Level
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.what}; {self.fix}" if self.fix else self.what


@dataclass(frozen=True)
class Compatibility:
    """A candidate against one serving version (`against`, its registry version)."""

    level: Level
    against: str
    changes: tuple[Change, ...] = ()
    against_semver: str | None = None

    @property
    def breaking(self) -> bool:
        return self.level == "breaking"

    def summary(self) -> str:
        """`additive vs v3 (1.2.0): feature 'x' added with default 0`; the changes that set the level."""
        label = f"v{self.against}" + (f" ({self.against_semver})" if self.against_semver else "")
        decisive = [change.what for change in self.changes if change.level == self.level]
        return f"{self.level} vs {label}" + (f": {'; '.join(decisive)}" if decisive else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "against": self.against,
            "against_semver": self.against_semver,
            "changes": [{"level": c.level, "what": c.what, "fix": c.fix} for c in self.changes],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Compatibility:
        return cls(
            level=raw["level"],
            against=str(raw["against"]),
            changes=tuple(Change(c["level"], c["what"], c.get("fix", "")) for c in raw.get("changes", [])),
            against_semver=raw.get("against_semver"),
        )


def level_of(changes: Sequence[Change]) -> Level:
    return max((change.level for change in changes), key=LEVELS.index, default="same")


def compare(
    old: ModelCard, new: ModelCard, *, against: str, against_semver: str | None = None
) -> Compatibility:
    """`new` (the candidate) against `old` (the card of registry version `against`, serving)."""
    found = changes(old, new, label=f"v{against}")
    return Compatibility(level_of(found), against, found, against_semver)


def changes(old: ModelCard, new: ModelCard, *, label: str) -> tuple[Change, ...]:
    """Every difference between the two cards a client of `old` (named `label`) would notice."""
    found: list[Change] = []
    if old.task != new.task:
        found.append(
            Change(
                "breaking",
                f"task {old.task} -> {new.task}: clients of {label} read other answers",
                "release it under a new model.name",
            )
        )
    elif old.classes != new.classes:
        found.append(
            Change(
                "breaking",
                f"classes {list(old.classes)} -> {list(new.classes)}: the probabilities of clients of {label} "
                "change meaning",
                "keep the classes (and their order), " + BREAKING_FIX,
            )
        )
    found += _feature_changes(old.features, new.features, label)
    return tuple(found)


def _feature_changes(old: Sequence[Feature], new: Sequence[Feature], label: str) -> list[Change]:
    old_names = [f.name for f in old]
    new_names = [f.name for f in new]
    removed = [name for name in old_names if name not in new_names]
    added = [name for name in new_names if name not in old_names]
    renamed = _renames(old_names, new_names, removed, added)
    found: list[Change] = []
    for before, after in renamed.items():
        found.append(
            Change(
                "breaking",
                f"feature {before!r} renamed to {after!r}: clients of {label} send {before!r}, which is refused",
                f"keep the name {before!r} (rename the column back), " + BREAKING_FIX,
            )
        )
    for name in removed:
        if name not in renamed:
            found.append(
                Change(
                    "breaking",
                    f"feature {name!r} removed: clients of {label} still send it, which is refused",
                    "keep the column (the model may ignore it), " + BREAKING_FIX,
                )
            )
    last_old = max((new_names.index(name) for name in old_names if name in new_names), default=-1)
    by_name = {f.name: f for f in new}
    for name in added:
        if name in renamed.values():
            continue
        feature = by_name[name]
        if feature.default is None:
            found.append(
                Change(
                    "breaking",
                    f"feature {name!r} added without a default: requests of clients of {label} lack it and "
                    "are refused",
                    f"declare one in model.feature_defaults ({name}: VALUE) to make it additive, "
                    + BREAKING_FIX,
                )
            )
        elif new_names.index(name) < last_old:
            found.append(
                Change(
                    "breaking",
                    f"feature {name!r} added with a default before {new_names[last_old]!r}: list rows of clients "
                    f"of {label} would give its value to other features",
                    "make it the last column of the data, " + BREAKING_FIX,
                )
            )
        else:
            found.append(
                Change(
                    "additive",
                    f"feature {name!r} added with default {feature.default!r}: old requests get it",
                )
            )
    kept = [name for name in old_names if name in new_names]
    if kept != [name for name in new_names if name in old_names]:
        moved = next(a for a, b in zip(kept, [n for n in new_names if n in old_names], strict=True) if a != b)
        found.append(
            Change(
                "breaking",
                f"columns reordered ({moved!r} moved): list rows of clients of {label} would give values to "
                "other features",
                f"keep the column order of {label} (reorder the data's columns back), " + BREAKING_FIX,
            )
        )
    old_by_name = {f.name: f for f in old}
    for name in kept:
        found += _value_changes(old_by_name[name], by_name[name], label)
    return found


def _renames(
    old: Sequence[str], new: Sequence[str], removed: Sequence[str], added: Sequence[str]
) -> dict[str, str]:
    """A removed feature whose place a new one takes (same index) reads as a rename."""
    return {
        name: new[old.index(name)]
        for name in removed
        if old.index(name) < len(new) and new[old.index(name)] in added
    }


def _value_changes(old: Feature, new: Feature, label: str) -> list[Change]:
    """What one kept feature's type, nulls, categories and default changed for the clients of `label`."""
    name, found = old.name, []
    if old.type != new.type:
        wider = (old.type, new.type) in WIDER_TYPES
        found.append(
            Change(
                "additive" if wider else "breaking",
                f"feature {name!r} type {old.type} -> {new.type}"
                + ("" if wider else f": values clients of {label} send are refused"),
                "" if wider else f"keep the type {old.type} (cast the column back), " + BREAKING_FIX,
            )
        )
    if old.nullable != new.nullable:
        found.append(
            Change("additive", f"feature {name!r} now takes null")
            if new.nullable
            else Change(
                "breaking",
                f"feature {name!r} no longer takes null: clients of {label} may send it",
                "keep missing values in the training data, " + BREAKING_FIX,
            )
        )
    if new.unknown_category == "error" and old.type == new.type == "string":
        unknown = sorted(set(old.categories or ()) - set(new.categories or ()))
        grown = sorted(set(new.categories or ()) - set(old.categories or ()))
        if grown and not unknown and old.unknown_category == "error":
            found.append(Change("additive", f"feature {name!r} takes new categories {grown[:3]}"))
        if old.unknown_category != "error" or unknown:
            what = (
                "refuses categories it did not see in training" if not unknown else f"refuses {unknown[:3]}"
            )
            found.append(
                Change(
                    "breaking",
                    f"feature {name!r} {what}: values clients of {label} send",
                    "encode unknown categories as ignore (handle_unknown='ignore'), " + BREAKING_FIX,
                )
            )
    if old.default is not None and new.default is None:
        found.append(
            Change(
                "breaking",
                f"feature {name!r} lost its default: requests of clients of {label} may leave it out",
                f"keep it in model.feature_defaults ({name}: {old.default!r}), " + BREAKING_FIX,
            )
        )
    elif old.default is None and new.default is not None:
        found.append(Change("additive", f"feature {name!r} got default {new.default!r}"))
    return found


def same_requests(primary: ModelCard, other: ModelCard) -> str | None:
    """Why `other` cannot answer the requests `primary` parses (None: it can): what the service checks of
    a fallback before it starts (model_service/model/breaker.py), so the pipeline never hands it one it refuses."""
    for what, mine, theirs in (
        ("name", other.name, primary.name),
        ("task", other.task, primary.task),
        ("classes", other.classes, primary.classes),
        ("features", _typed(other), _typed(primary)),
        ("ONNX inputs", other.inputs, primary.inputs),
        ("ONNX outputs", dict(other.outputs), dict(primary.outputs)),
    ):
        if mine != theirs:
            return f"its {what} differ from version {primary.version}'s"
    return None


def _typed(card: ModelCard) -> list[tuple[str, str, bool]]:
    return [(feature.name, feature.type, feature.nullable) for feature in card.features]


# --- semver-style versions ------------------------------------------------------------------------------

FIRST_SEMVER = "1.0.0"


def parse_semver(text: str) -> tuple[int, int, int] | None:
    match = _SEMVER.match(text)
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


def next_semver(previous: str | None, level: Level) -> str:
    """The version after `previous` for a change of `level`: MAJOR, MINOR or PATCH goes up."""
    parsed = None if previous is None else parse_semver(previous)
    if parsed is None:
        return FIRST_SEMVER
    major, minor, patch = parsed
    if level == "breaking":
        return f"{major + 1}.0.0"
    if level == "additive":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"
