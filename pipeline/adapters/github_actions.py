"""Step outputs for GitHub Actions: what a stage knows, handed to the workflow without parsing files.

A stage that runs inside a workflow step (GitHub, or act on a laptop) finds the file of its step's
outputs in GITHUB_OUTPUT; `name=value` lines appended there become `steps.<id>.outputs.name`. Outside
a workflow the variable is unset and nothing is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

OUTPUT_ENV = "GITHUB_OUTPUT"


def write_step_outputs(values: Mapping[str, str], environ: Mapping[str, str] | None = None) -> Path | None:
    """Append `name=value` for each value to the step's output file; return it, or None outside a step."""
    environ = os.environ if environ is None else environ
    target = environ.get(OUTPUT_ENV, "")
    if not target:
        return None
    for name, value in values.items():
        if "\n" in value or "\r" in value:
            # One line each: a multi-line value needs GitHub's delimiter syntax, which nothing here needs.
            raise ValueError(f"step output {name}: a value must be one line, got {value!r}")
    with Path(target).open("a", encoding="utf-8") as handle:
        handle.writelines(f"{name}={value}\n" for name, value in values.items())
    return Path(target)
