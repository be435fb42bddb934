"""A card with a reference profile (the service tests' model plus `reference`), and its training rows."""

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from pipeline.ml.profile import reference_profile
from pipeline.stages.export import predict_onnx


@pytest.fixture(scope="session")
def train_rows() -> np.ndarray:
    return np.asarray(load_breast_cancer().data, dtype=np.float64)


@pytest.fixture(scope="session")
def model_dir(
    plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, train_rows: np.ndarray
) -> Path:
    out = tmp_path_factory.mktemp("reference") / "model"
    shutil.copytree(plain_model_dir, out)
    card = json.loads((out / "model.json").read_text())
    features = [f["name"] for f in card["features"]]
    probabilities = predict_onnx(out / "model.onnx", train_rows)
    card["reference"] = reference_profile(features, train_rows, probabilities, card["classes"])
    (out / "model.json").write_text(json.dumps(card))
    return out


@pytest.fixture(scope="session")
def card(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "model.json").read_text())  # type: ignore[no-any-return]
