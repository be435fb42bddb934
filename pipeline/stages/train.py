"""train: fit the configured estimator on the configured data and log the run to MLflow."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.adapters import registry
from pipeline.artifacts import ModelDir
from pipeline.config import Config, ConfigError
from pipeline.console import Reporter
from pipeline.ml.data import load_dataset
from pipeline.ml.scoring import evaluate
from pipeline.stage import StageResult
from pipeline.workspace import Workspace, read_json, write_bytes, write_json


@dataclass(frozen=True, kw_only=True)
class TrainResult(StageResult):
    metrics: dict[str, float]
    mlflow_run_id: str


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


def load_estimator(model: ModelDir) -> Any:
    # Only ever reads the file this stage wrote into the workspace.
    with model.estimator.open("rb") as handle:
        return pickle.load(handle)


def final_estimator(estimator: Any) -> Any:
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def _result(model: ModelDir, metrics: dict[str, float], run_id: str, *, reused: bool) -> TrainResult:
    return TrainResult(
        headline=f"roc_auc {metrics['roc_auc']:.4f}, artifacts {model.version}",
        reused=reused,
        artifacts={"train_record": model.train_record, "estimator": model.estimator},
        metrics=metrics,
        mlflow_run_id=run_id,
    )


def train(
    config: Config, workspace: Workspace, reporter: Reporter, *, model: ModelDir, fresh: bool = False
) -> TrainResult:
    """Fit into `model` (the folder the current config, data and code map to), unless it holds a fit."""
    if model.trained() and not fresh:
        saved = read_json(model.train_record)
        reporter.note(
            f"reused {config.model.name} {model.version}: same config, data and code ({model.path})"
        )
        return _result(model, saved["metrics"], saved["mlflow_run_id"], reused=True)

    data = load_dataset(config.data, workspace.root)
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
        run_name=f"{config.model.name}-{model.version}",
        tags={
            "artifact_version": model.version,
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

    write_bytes(model.estimator, pickle.dumps(estimator))
    write_json(
        model.train_record,
        {
            "version": model.version,
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
    reporter.note(f"version {model.version}, MLflow run {run_id}")
    return _result(model, metrics, run_id, reused=False)
