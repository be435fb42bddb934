"""Workspaces the integration tests share: real stages on a real MLflow sqlite registry."""

import os
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main

REPO = Path(__file__).parents[2]
STABLE = ("--set", "model.params.n_estimators=30", "--set", "model.params.max_depth=2")
"""A first, weaker model: the version serving dev before the candidate (the default config) arrives."""


@pytest.fixture(scope="session")
def stable_and_candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 serves dev; version 2, a healthy retrain, is registered as dev-candidate.

    Shared by the tests that roll a candidate out: copy it before changing it."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    root = tmp_path_factory.mktemp("stable-and-candidate")
    shutil.copytree(REPO / "environments", root / "environments")
    for stage in ("train", "export", "gate", "register", "promote"):
        assert main([stage, "--env", "dev", "--workdir", str(root), *STABLE]) == 0
    for stage in ("train", "export", "gate", "register"):
        assert main([stage, "--env", "dev", "--workdir", str(root)]) == 0
    return root
