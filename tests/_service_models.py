"""Small models in card version 2 (docs/model-card.md), built with skl2onnx for the service tests: a
mixed-type classifier (ColumnTransformer, one ONNX input per column), a regression and a multiclass
classifier with string classes. Each folder holds model.onnx, model.json (with a reference profile) and
eval.json, as export writes them. The service test folders import the fixtures at the end.
`with_reference_profile` gives the breast-cancer test model (tests/conftest.py) the profile it lacks."""

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
from numpy.typing import NDArray
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from model_service.contract.monitoring import bin_index, category_index, inner_edges
from pipeline.ml.profile import reference_profile
from pipeline.stages.export import predict_onnx

CITIES = ["Lyon", "Nice", "Paris"]
MIXED_FEATURES: list[dict[str, Any]] = [
    {"name": "age", "type": "float", "nullable": True},
    {"name": "rooms", "type": "int", "nullable": False},
    {"name": "garden", "type": "bool", "nullable": False},
    {"name": "city", "type": "string", "nullable": True, "categories": CITIES},
]
"""The mixed-type model's features, as export writes them: a missing city is fed as "" (as at train time,
so the encoder knows it), and the card's categories leave "" out."""


def _shares(counts: NDArray[Any]) -> list[float]:
    return [float(share) for share in np.asarray(counts, dtype=np.float64) / max(1, int(np.sum(counts)))]


def _numeric_profile(name: str, values: NDArray[Any], nullable: bool) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    edges = [float(v) for v in np.unique(np.quantile(present, np.linspace(0, 1, 6)))]
    counts = np.bincount(bin_index(inner_edges(edges), present), minlength=len(edges) - 1)
    if nullable:
        counts = np.append(counts, int(np.isnan(values).sum()))
    return {"name": name, "kind": "numeric", "edges": edges, "frequencies": _shares(counts)}


def _categorical_profile(name: str, categories: list[str], values: list[str]) -> dict[str, Any]:
    counts = np.bincount(category_index(categories, values), minlength=len(categories) + 1)
    return {"name": name, "kind": "categorical", "categories": categories, "frequencies": _shares(counts)}


def _score_profile(scores: NDArray[Any], edges: list[float]) -> dict[str, Any]:
    counts = np.bincount(bin_index(inner_edges(edges), scores), minlength=len(edges) - 1)
    return {"edges": edges, "frequencies": _shares(counts)}


def _write(
    out: Path,
    onnx_bytes: bytes,
    card: dict[str, Any],
    eval_rows: list[list[Any]],
    labels: list[Any],
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(onnx_bytes)
    card["onnx"] = {
        "file": "model.onnx",
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "opset": 17,
        **card["onnx"],
    }
    full = {"card_version": 2, "created_at": "2026-01-01T00:00:00+00:00", "version": "0123456789ab", **card}
    (out / "model.json").write_text(json.dumps(full, indent=2))
    names = [feature["name"] for feature in card["features"]]
    (out / "eval.json").write_text(json.dumps({"features": names, "rows": eval_rows, "labels": labels}))
    return out


def mixed_frame(n: int, seed: int) -> tuple[pd.DataFrame, NDArray[np.int64]]:
    """Rows as the data loader gives them (missing city: "") and a label that depends on age and city."""
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, n).round(1)
    age[rng.random(n) < 0.1] = np.nan
    rooms = rng.integers(1, 7, n)
    garden = rng.random(n) < 0.5
    city = rng.choice(["", *CITIES], n, p=[0.1, 0.3, 0.3, 0.3])
    label = ((np.nan_to_num(age, nan=40.0) > 40) ^ (city == "Paris") ^ (rng.random(n) < 0.1)).astype(np.int64)
    frame = pd.DataFrame(
        {"age": age.astype(np.float32), "rooms": rooms, "garden": garden.astype(np.float32), "city": city}
    )
    return frame, label


def export_mixed_model(out: Path, unknown_category: Literal["ignore", "error"] = "ignore") -> Path:
    """A binary classifier on a float (nullable), an int, a bool and a string (nullable) feature:
    ColumnTransformer + LogisticRegression, one ONNX input per column named as the feature."""
    frame, label = mixed_frame(400, seed=0)
    classifier = LogisticRegression(max_iter=500)
    columns = ColumnTransformer(
        [
            ("age", make_pipeline(SimpleImputer(), StandardScaler()), ["age"]),
            ("rooms", StandardScaler(), ["rooms"]),
            ("garden", "passthrough", ["garden"]),
            ("city", OneHotEncoder(handle_unknown=unknown_category), ["city"]),
        ]
    )
    pipeline = make_pipeline(columns, classifier).fit(frame, label)
    onnx_model = to_onnx(
        pipeline,
        initial_types=[
            ("age", FloatTensorType([None, 1])),
            ("rooms", Int64TensorType([None, 1])),
            ("garden", FloatTensorType([None, 1])),
            ("city", StringTensorType([None, 1])),
        ],
        options={id(classifier): {"zipmap": False}},
        target_opset=17,
    )
    probabilities = pipeline.predict_proba(frame)
    features = [dict(f) for f in MIXED_FEATURES]
    features[3]["unknown_category"] = unknown_category
    card = {
        "name": "mixed-classifier",
        "task": "binary",
        "onnx": {
            "inputs": [
                {"name": "age", "dtype": "float32", "features": ["age"]},
                {"name": "rooms", "dtype": "int64", "features": ["rooms"]},
                {"name": "garden", "dtype": "float32", "features": ["garden"]},
                {"name": "city", "dtype": "string", "features": ["city"]},
            ],
            "outputs": {"label": "label", "probabilities": "probabilities"},
        },
        "features": features,
        "classes": [0, 1],
        "reference": {
            "rows": {"train": len(frame), "eval": len(frame)},
            "features": [
                _numeric_profile("age", frame["age"].to_numpy(np.float64), nullable=True),
                _numeric_profile("rooms", frame["rooms"].to_numpy(np.float64), nullable=False),
                _numeric_profile("garden", frame["garden"].to_numpy(np.float64), nullable=False),
                _categorical_profile("city", CITIES, frame["city"].tolist()),
            ],
            "score": _score_profile(probabilities[:, 1], [round(i / 10, 1) for i in range(11)]),
            "classes": {"0": float(np.mean(label == 0)), "1": float(np.mean(label == 1))},
        },
    }
    # Rows with a missing age and a missing city among the first, as a client sends them (null).
    missing = np.flatnonzero(frame["age"].isna() | (frame["city"] == ""))[:6]
    picked = np.concatenate((missing, np.setdiff1d(np.arange(20), missing)))[:20]
    age, rooms, garden, city = (frame[name].to_numpy() for name in ("age", "rooms", "garden", "city"))
    eval_rows = [
        [None if np.isnan(age[i]) else float(age[i]), int(rooms[i]), bool(garden[i]), str(city[i]) or None]
        for i in picked
    ]
    return _write(out, onnx_model.SerializeToString(), card, eval_rows, label[picked].tolist())


def export_regression_model(out: Path) -> Path:
    """A linear regression on scikit-learn's diabetes set: one float32 input, output `variable` [N, 1]."""
    data = load_diabetes()
    x = data.data.astype(np.float32)
    names = [str(name) for name in data.feature_names]
    model = LinearRegression().fit(x, data.target)
    onnx_model = to_onnx(
        model, initial_types=[("input", FloatTensorType([None, len(names)]))], target_opset=17
    )
    predictions = model.predict(x)
    score_edges = [float(v) for v in np.unique(np.quantile(predictions, np.linspace(0, 1, 11)))]
    card = {
        "name": "diabetes-regression",
        "task": "regression",
        "onnx": {
            "inputs": [{"name": "input", "dtype": "float32", "features": names}],
            "outputs": {"value": "variable"},
        },
        "features": [{"name": name, "type": "float", "nullable": False} for name in names],
        "reference": {
            "rows": {"train": len(x), "eval": len(x)},
            "features": [_numeric_profile(n, x[:, j].astype(np.float64), False) for j, n in enumerate(names)],
            "score": _score_profile(predictions, score_edges),
        },
    }
    return _write(out, onnx_model.SerializeToString(), card, x[:20].tolist(), data.target[:20].tolist())


def export_iris_model(out: Path) -> Path:
    """A multiclass classifier with string classes on one float32 input (the numeric fast path)."""
    data = load_iris()
    x = data.data.astype(np.float32)
    names = [str(name) for name in data.feature_names]
    species = np.asarray([str(s) for s in data.target_names])[data.target]
    classifier = LogisticRegression(max_iter=500)
    classifier.fit(x, species)
    onnx_model = to_onnx(
        classifier,
        initial_types=[("input", FloatTensorType([None, len(names)]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=17,
    )
    card = {
        "name": "iris-species",
        "task": "multiclass",
        "onnx": {
            "inputs": [{"name": "input", "dtype": "float32", "features": names}],
            "outputs": {"label": "label", "probabilities": "probabilities"},
        },
        "features": [{"name": name, "type": "float", "nullable": False} for name in names],
        "classes": [str(c) for c in classifier.classes_],
    }
    return _write(out, onnx_model.SerializeToString(), card, x[::8].tolist(), species[::8].tolist())


def with_reference_profile(model_dir: Path, out: Path) -> Path:
    """A copy of the breast-cancer test model in `model_dir` (tests/conftest.py) whose card holds the
    reference profile export computes on the whole data set, so the service counts feature and score bins."""
    shutil.copytree(model_dir, out)
    card = json.loads((out / "model.json").read_text())
    rows = np.asarray(load_breast_cancer().data, dtype=np.float64)
    features = [f["name"] for f in card["features"]]
    card["reference"] = reference_profile(
        features, rows, predict_onnx(out / "model.onnx", rows), card["classes"]
    )
    (out / "model.json").write_text(json.dumps(card))
    return out


@pytest.fixture(scope="session")
def mixed_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mixed-type classifier; an unknown city is accepted (OneHotEncoder handle_unknown="ignore")."""
    return export_mixed_model(tmp_path_factory.mktemp("mixed"))


@pytest.fixture(scope="session")
def mixed_strict_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mixed-type classifier whose encoder refuses an unknown city (handle_unknown="error")."""
    return export_mixed_model(tmp_path_factory.mktemp("mixed-strict"), unknown_category="error")


@pytest.fixture(scope="session")
def regression_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_regression_model(tmp_path_factory.mktemp("regression"))


@pytest.fixture(scope="session")
def iris_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_iris_model(tmp_path_factory.mktemp("iris"))
