"""Shared helpers for the workflow tests: the repository root and scripts/run_act.py as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_run_act() -> ModuleType:
    if "run_act" in sys.modules:
        return sys.modules["run_act"]
    spec = importlib.util.spec_from_file_location("run_act", ROOT / "scripts" / "run_act.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_act"] = module
    spec.loader.exec_module(module)
    return module
