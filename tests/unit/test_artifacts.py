"""The artifact layout: versions are content keys over everything that shapes what is written."""

import shutil
from pathlib import Path

import pytest

from pipeline import artifacts
from pipeline.artifacts import ModelDir, artifact_version
from pipeline.config import load_config
from pipeline.ml.data import load_dataset

REPO = Path(__file__).parents[2]


@pytest.mark.parametrize(
    "module",
    [
        "pipeline/ml/scoring.py",
        "pipeline/ml/profile.py",
        "pipeline/stages/export.py",
        "model_service/contract/monitoring.py",
    ],
)
def test_editing_code_that_shapes_an_artifact_makes_a_new_version(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config("dev", REPO / "environments")
    data = load_dataset(config.data, tmp_path)
    for package in ("pipeline", "model_service"):
        shutil.copytree(REPO / package, tmp_path / package)
    monkeypatch.setattr(artifacts, "PIPELINE_DIR", tmp_path / "pipeline")
    before = artifact_version(config, data)
    with (tmp_path / module).open("a") as handle:
        handle.write("\n# a change to how artifacts are computed\n")
    assert artifact_version(config, data) != before


def test_the_layout_is_owned_by_model_dir(tmp_path: Path) -> None:
    model = ModelDir(tmp_path / "breast-cancer-classifier" / "0123456789ab")
    assert model.version == "0123456789ab"
    assert not model.trained() and not model.exported()
    assert model.gate("staging").name == "gate-staging.json"
    assert model.verdict("loadtest", "dev").name == "loadtest-dev.json"
    assert model.read_optional(model.registration) is None
