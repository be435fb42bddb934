"""Markers come from the folder, so nobody forgets them: tests/unit -> unit, tests/integration -> integration."""

from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kind = Path(item.path).relative_to(TESTS).parts[0]
        if kind in {"unit", "integration"}:
            item.add_marker(getattr(pytest.mark, kind))
