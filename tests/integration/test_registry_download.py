"""A workspace that never held a release's files (a CD job, the cluster's batch job) gets them from the
registry: the version's model.json, model.onnx and eval.json, in the folder ModelDir reads."""

from pathlib import Path

import pytest

from pipeline.adapters import registry
from pipeline.config import load_config
from pipeline.workspace import Workspace


def test_a_fresh_workspace_downloads_the_alias_version_into_its_model_folder(
    stable_and_candidate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{stable_and_candidate / '.mlflow' / 'mlflow.db'}")
    config = load_config("dev", stable_and_candidate / "environments")
    fresh = Workspace(tmp_path / "fresh")
    found = registry.alias_model_dir(config, fresh, "dev")
    assert found is not None
    model, version = found
    assert version == "1"
    assert model.path.parent.parent == fresh.artifacts
    assert sorted(p.name for p in model.path.iterdir()) == ["eval.json", "model.json", "model.onnx"]
    assert model.read_card().version == model.version
