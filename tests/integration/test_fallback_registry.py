"""`service.fallback.source: previous` on a real registry: the version serving now for a candidate, the
alias history once the candidate serves, nothing for the first version."""

import shutil
from pathlib import Path

import pytest

from pipeline.adapters.registry import previous_model_dir
from pipeline.artifacts import current_model_dir
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.workspace import Workspace

pytestmark = pytest.mark.slow  # two trained versions


def test_previous_is_the_serving_version_then_the_history(stable_and_candidate: Path, tmp_path: Path) -> None:
    root = tmp_path / "workspace"
    shutil.copytree(stable_and_candidate, root, ignore=shutil.ignore_patterns("reports"))
    config = load_config("dev", root / "environments", ("service.fallback={source: previous}",))
    workspace = Workspace(root)
    candidate = current_model_dir(config, workspace)

    found = previous_model_dir(config, workspace, candidate)
    assert found is not None
    stable, version = found
    assert version == "1"
    assert stable.version != candidate.version
    assert stable.card.is_file()  # ready to be served or baked in
    assert previous_model_dir(config, workspace, stable) is None  # nothing served before version 1

    assert main(["promote", "--env", "dev", "--workdir", str(root)]) == 0
    # The candidate serves now: its fallback is the version it replaced, from the alias history.
    found = previous_model_dir(config, workspace, candidate)
    assert found is not None
    assert found[1] == "1"
    assert found[0].path == stable.path
