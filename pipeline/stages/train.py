"""train: fit the configured estimator on the configured data and log the run to MLflow."""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import skl2onnx
import sklearn
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.adapters import registry
from pipeline.config import Config, ConfigError
from pipeline.console import Reporter
from pipeline.ml.data import Dataset, load_dataset
from pipeline.ml.scoring import evaluate
from pipeline.workspace import Workspace, read_json, write_bytes, write_json

TRAIN_FILE = "train.json"
ESTIMATOR_FILE = "estimator.pkl"
PIPELINE_DIR = Path(__file__).resolve().parents[1]


def versioned_code() -> list[Path]:
    """The code whose change must produce a new model version: what reads the data, fits, scores,
    profiles and exports (see artifact_version)."""
    return [
        PIPELINE_DIR / "stages" / "train.py",
        PIPELINE_DIR / "stages" / "export.py",
        *sorted((PIPELINE_DIR / "ml").glob("*.py")),
        PIPELINE_DIR.parent / "model_service" / "monitoring.py",  # the profile's bins and score
    ]


@dataclass(frozen=True)
class TrainResult:
    version: str
    directory: Path
    metrics: dict[str, float]
    run_id: str
    reused: bool


def artifact_version(config: Config, data: Dataset) -> str:
    """Content key of a model: config sections that shape it, the data, the code and library versions.

    The same inputs give the same folder, so a re-run finds and reuses what is still valid.
    """
    digest = hashlib.sha256()
    digest.update(config.sha256("model", "data").encode())
    digest.update(
        f"opset={config.export.opset}".encode()
    )  # parity bounds judge a model, they do not shape it
    digest.update(data.sha256.encode())
    for path in versioned_code():
        digest.update(path.read_bytes())
    for module in (sklearn, skl2onnx, onnx, np):
        digest.update(f"{module.__name__}={module.__version__}".encode())
    return digest.hexdigest()[:12]


def build_estimator(config: Config) -> Any:
    spec = config.model
    families: dict[str, type[Any]] = {
        "logistic_regression": LogisticRegression,
        "random_forest": RandomForestClassifier,
        "gradient_boosting": GradientBoostingClassifier,
    }
    family = families[spec.estimator]
    try:
        estimator = family(random_state=config.data.seed, **spec.params)
        estimator._validate_params()  # fail here, naming the key, rather than deep inside fit()
    except (TypeError, ValueError) as exc:
        msg = (
            f"model.params: {family.__name__} rejects them: {exc}. Params merge over the inherited ones; "
            "after changing model.estimator, write `params: !replace {...}` to start from none"
        )
        raise ConfigError(msg) from None
    if spec.estimator == "logistic_regression":
        return make_pipeline(StandardScaler(), estimator)
    return estimator


def load_estimator(directory: Path) -> Any:
    # Only ever reads the file this stage wrote into the workspace.
    with (directory / ESTIMATOR_FILE).open("rb") as handle:
        return pickle.load(handle)


def final_estimator(estimator: Any) -> Any:
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def train(config: Config, workspace: Workspace, reporter: Reporter, *, fresh: bool = False) -> TrainResult:
    data = load_dataset(config.data, workspace.root)
    version = artifact_version(config, data)
    directory = workspace.version_dir(config, version)
    record = directory / TRAIN_FILE
    if record.is_file() and (directory / ESTIMATOR_FILE).is_file() and not fresh:
        saved = read_json(record)
        reporter.note(f"reused {config.model.name} {version}: same config, data and code ({directory})")
        return TrainResult(version, directory, saved["metrics"], saved["mlflow_run_id"], reused=True)

    reporter.note(
        f"fitting {config.model.estimator} on {len(data.x_train)} rows x {len(data.features)} features "
        f"(data sha256 {data.sha256[:12]})"
    )
    estimator = build_estimator(config)
    estimator.fit(data.x_train, data.y_train)
    classes = final_estimator(estimator).classes_.tolist()
    metrics = evaluate(estimator.predict_proba(data.x_test), data.y_test, classes)
    git_sha = workspace.git_sha()

    mlflow = registry.client(config, workspace)
    run = mlflow.create_run(
        registry.experiment_id(mlflow, config, workspace),
        run_name=f"{config.model.name}-{version}",
        tags={
            "artifact_version": version,
            "data_sha256": data.sha256,
            "git_sha": git_sha,
            "environment": config.name,
            "mlflow.source.git.commit": git_sha,
        },
    )
    run_id = run.info.run_id
    for key, value in sorted({"estimator": config.model.estimator, **config.model.params}.items()):
        mlflow.log_param(run_id, key, value)
    for key in ("test_size", "seed", "source", "dataset"):
        mlflow.log_param(run_id, f"data.{key}", getattr(config.data, key))
    for key, value in metrics.items():
        mlflow.log_metric(run_id, key, value)
    mlflow.set_terminated(run_id)

    write_bytes(directory / ESTIMATOR_FILE, pickle.dumps(estimator))
    write_json(
        record,
        {
            "version": version,
            "mlflow_run_id": run_id,
            "metrics": metrics,
            "classes": classes,
            "features": data.features,
            "data_sha256": data.sha256,
            "git_sha": git_sha,
            "config_sha256": config.sha256("model", "data", "export"),
        },
    )
    reporter.table(["metric", "value (evaluation rows)"], sorted(metrics.items()))
    reporter.note(f"version {version}, MLflow run {run_id}")
    return TrainResult(version, directory, metrics, run_id, reused=False)
