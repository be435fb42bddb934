"""train: fit the configured estimator on the configured data and log the run to MLflow."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np

from pipeline.adapters import registry
from pipeline.artifacts import ModelDir
from pipeline.config import TASK_METRICS, Config
from pipeline.console import Reporter
from pipeline.ml.data import load_dataset
from pipeline.ml.estimators import final_estimator, fit, fitted_input
from pipeline.ml.onnx_converters import nan_imputers_on_strings
from pipeline.ml.onnx_model import to_onnx
from pipeline.ml.scoring import evaluate, evaluate_values
from pipeline.stage import StageContext, StageResult
from pipeline.workspace import Workspace, read_json, write_bytes, write_json


@dataclass(frozen=True, kw_only=True)
class TrainResult(StageResult):
    metrics: dict[str, float]
    mlflow_run_id: str


def _result(model: ModelDir, metrics: dict[str, float], run_id: str, *, reused: bool) -> TrainResult:
    # The task's first metric (roc_auc, accuracy, rmse): which one is told by the metrics themselves.
    headline = next(m for task in TASK_METRICS.values() if (m := task[0]) in metrics)
    return TrainResult(
        headline=f"{headline} {metrics[headline]:.4f}, artifacts {model.version}",
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

    spec = config.model
    data = load_dataset(config.data, workspace.root, spec.task)
    what = f"trainer {spec.trainer}" if spec.trainer else spec.estimator
    reporter.note(
        f"fitting {what} ({data.task}) on {len(data.train)} rows x {len(data.features)} features "
        f"(data sha256 {data.sha256[:12]})"
    )
    fitted = fit(spec, data, config.data.seed, workspace.root)
    estimator = fitted.estimator
    eval_input = fitted_input(fitted, data.test)
    if data.task == "regression":
        classes = None
        metrics = evaluate_values(np.asarray(estimator.predict(eval_input), dtype=np.float64), data.y_test)
    else:
        classes = final_estimator(estimator).classes_.tolist()
        metrics = evaluate(estimator.predict_proba(eval_input), data.y_test, classes)
    # A fit export cannot convert fails here, before the registry or the workspace holds anything of it.
    origin = f"model.trainer {spec.trainer!r}" if spec.trainer else f"model.estimator {spec.estimator!r}"
    to_onnx(estimator, data.columns, task=data.task, opset=config.export.opset, origin=origin)
    for names in nan_imputers_on_strings(estimator, {c.name for c in data.columns if not c.numeric}):
        reporter.note(
            f"{origin}: the SimpleImputer on the string columns {', '.join(names)} looks for NaN; the "
            'template hands a missing string over as "" (at training and when serving), which the encoder '
            "after it takes as a category of its own, so the model exported does the same. To fill missing "
            'strings with a value, write SimpleImputer(missing_values="", ...)'
        )
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
    model_param = {"trainer": spec.trainer} if spec.trainer else {"estimator": spec.estimator}
    for key, value in sorted({**model_param, "task": data.task, **spec.params}.items()):
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
            "task": data.task,
            "classes": classes,
            "features": data.features,
            "columns": [column.to_json() for column in data.columns],
            "takes_frame": fitted.takes_frame,
            "trainer": spec.trainer,
            "data_sha256": data.sha256,
            "git_sha": git_sha,
            "config_sha256": config.sha256("model", "data", "export"),
        },
    )
    reporter.table(["metric", "value (evaluation rows)"], sorted(metrics.items()))
    reporter.note(f"version {model.version}, MLflow run {run_id}")
    return _result(model, metrics, run_id, reused=False)


def run(ctx: StageContext) -> TrainResult:
    return train(ctx.config, ctx.workspace, ctx.reporter, model=ctx.model, fresh=ctx.args.fresh)
