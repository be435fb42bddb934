"""The stage contract: every stage returns a `StageResult` (or a subclass adding its own fields).

The runner reads `status` and `failures` to decide whether the run goes on, the summary and the report
read `headline`, `reused` and `artifacts`; nobody reads a stage's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Status = Literal["pass", "warn", "fail"]
"""`warn`: a gate failed but its mode lets the release through; the run goes on and says so."""


@dataclass(frozen=True, kw_only=True)
class StageResult:
    status: Status = "pass"
    headline: str
    """The one figure a reviewer looks at first, e.g. `PASS 7/7 checks vs champion v3`."""
    failures: list[str] = field(default_factory=list)
    """Each failed check with its value, comparator and bound; empty when the stage passed."""
    reused: bool = False
    """True when valid artifacts of the same inputs were found and nothing was redone."""
    artifacts: dict[str, Path] = field(default_factory=dict)
    """What the stage wrote (or reused), by name: the report links them."""
