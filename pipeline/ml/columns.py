"""A feature as the model card describes it (no heavy imports: the drift stage reads cards too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FeatureType = Literal["float", "int", "bool", "string"]
NUMERIC_TYPES = frozenset({"float", "int", "bool"})


@dataclass(frozen=True)
class Column:
    """One feature as the card describes it: how a client sends it and what training saw."""

    name: str
    type: FeatureType
    nullable: bool
    categories: tuple[str, ...] = ()
    """String features: the values seen in the training rows, sorted (the empty string, a missing value,
    is not a category)."""

    @property
    def numeric(self) -> bool:
        return self.type in NUMERIC_TYPES

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "nullable": self.nullable}
        if self.type == "string":
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Column:
        return cls(data["name"], data["type"], data["nullable"], tuple(data.get("categories", ())))
