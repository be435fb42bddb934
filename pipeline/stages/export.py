"""export: convert the trained model to ONNX, prove parity on the evaluation rows, write the card."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from pipeline.artifacts import ModelDir
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.ml.columns import Column
from pipeline.ml.data import load_dataset
from pipeline.ml.estimators import column_steps, put_workspace_on_path
from pipeline.ml.onnx_converters import APPROXIMATE_TREES
from pipeline.ml.onnx_model import INPUT_NAME, PROBABILITIES_OUTPUT, components, to_onnx
from pipeline.ml.onnx_model import predict as predict_rows
from pipeline.ml.profile import card_reference
from pipeline.stage import StageContext, StageResult
from pipeline.workspace import Workspace, read_json, write_bytes, write_json

CARD_VERSION = 2


@dataclass(frozen=True)
class Parity:
    rows: int
    label_agreement: float | None
    """Classification: share of rows where ONNX and scikit-learn predict the same class."""
    max_abs_diff: float
    """Largest absolute difference of a class probability, or of a predicted value (regression)."""
    max_relative_diff: float | None = None
    """Regression: largest difference relative to the scikit-learn value."""


@dataclass(frozen=True, kw_only=True)
class ExportResult(StageResult):
    parity: Parity
    onnx_sha256: str


def _result(model: ModelDir, parity: Parity, onnx_sha256: str, *, reused: bool) -> ExportResult:
    return ExportResult(
        headline=f"parity max abs diff {parity.max_abs_diff:.2g}, onnx {onnx_sha256[:12]}",
        reused=reused,
        artifacts={"onnx": model.onnx, "card": model.card, "evaluation": model.evaluation},
        parity=parity,
        onnx_sha256=onnx_sha256,
    )


def predict_onnx(onnx_path: Path, rows: NDArray[Any], input_name: str = INPUT_NAME) -> NDArray[np.float64]:
    """Class probabilities [N, C] of a numeric-only classifier (one float input) from a float matrix."""
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    (probabilities,) = session.run([PROBABILITIES_OUTPUT], {input_name: rows.astype(np.float32)})
    return np.asarray(probabilities, dtype=np.float64)


def unknown_categories(estimator: Any) -> dict[str, str]:
    """Per string feature, what the fitted encoder does with a category it has not seen: `ignore` or
    `error`; features it cannot tell about are left out (the card then says `ignore`)."""
    found: dict[str, str] = {}
    for names, encoder in column_steps(estimator, (OneHotEncoder, OrdinalEncoder)):
        # OrdinalEncoder's use_encoded_value and OneHotEncoder's other modes accept it.
        verdict = "error" if encoder.handle_unknown == "error" else "ignore"
        found.update(dict.fromkeys(names, verdict))
    return found


def export(
    config: Config, workspace: Workspace, reporter: Reporter, *, model: ModelDir, fresh: bool = False
) -> ExportResult:
    """Convert the fit in `model` to ONNX, prove parity, write the card; reuse a complete export."""
    if not model.trained():
        msg = (
            f"no trained model for the current config, data and code of {config.name!r} "
            f"(expected {model.train_record}); run `python -m pipeline train --env {config.name}` first"
        )
        raise StageError(msg)
    if model.exported() and not fresh:
        saved = model.read_card()
        parity = Parity(**saved["parity"])
        reporter.note(f"reused {model.onnx} (parity max abs diff {parity.max_abs_diff:.3g})")
        return _result(model, parity, saved["onnx"]["sha256"], reused=True)

    trained = read_json(model.train_record)
    if trained.get("trainer"):
        put_workspace_on_path(workspace.root)  # the pickle may name classes of the trainer's module
    estimator = model.read_estimator()
    task = trained["task"]
    data = load_dataset(config.data, workspace.root, task)
    columns = [Column.from_json(c) for c in trained["columns"]]
    origin = f"model.trainer {trained['trainer']!r}" if trained.get("trainer") else "model.estimator"
    onnx_bytes, card_onnx = to_onnx(
        estimator, columns, task=trained["task"], opset=config.export.opset, origin=origin
    )
    onnx_sha256 = hashlib.sha256(onnx_bytes).hexdigest()
    rows = data.test_rows()
    probe = {
        "card_version": CARD_VERSION,
        "task": task,
        "features": [c.to_json() for c in columns],
        "onnx": card_onnx,
    }

    # Parity is checked on the bytes about to be written, before anything is written.
    scratch = model.path / f".{model.onnx.name}.parity"
    write_bytes(scratch, onnx_bytes)
    try:
        onnx_outputs = predict_rows(scratch, probe, rows)
    finally:
        scratch.unlink(missing_ok=True)
    sklearn_input = data.test if trained["takes_frame"] else data.x_test
    if task == "regression":
        assert onnx_outputs.values is not None
        expected = np.asarray(estimator.predict(sklearn_input), dtype=np.float64).reshape(-1)
        parity = _value_parity(expected, onnx_outputs.values)
    else:
        assert onnx_outputs.probabilities is not None
        parity = _parity(estimator.predict_proba(sklearn_input), onnx_outputs.probabilities)
    _check_parity(config, parity, reporter, components(estimator))

    write_bytes(model.onnx, onnx_bytes)
    write_json(
        model.evaluation, {"features": trained["features"], "rows": rows, "labels": data.y_test.tolist()}
    )
    unknown = unknown_categories(estimator)
    features = [
        {**c.to_json(), "unknown_category": unknown.get(c.name, "ignore")}
        if c.type == "string"
        else c.to_json()
        for c in columns
    ]
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "name": config.model.name,
        "version": model.version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": task,
        "onnx": {"file": model.onnx.name, "sha256": onnx_sha256, "opset": config.export.opset, **card_onnx},
        "features": features,
    }
    if task != "regression":
        card["classes"] = trained["classes"]
    card |= {
        "metrics": trained["metrics"],
        "parity": {k: v for k, v in vars(parity).items() if v is not None},
        # What the service and `pipeline drift` compare live inputs and predictions with (docs/drift.md).
        "reference": card_reference(
            columns,
            data.train,
            eval_rows=len(rows),
            eval_probabilities=onnx_outputs.probabilities,
            eval_values=onnx_outputs.values,
            classes=trained["classes"],
        ),
        "lineage": {
            "git_sha": trained["git_sha"],
            "data_sha256": trained["data_sha256"],
            "config_sha256": trained["config_sha256"],
            "mlflow_run_id": trained["mlflow_run_id"],
            "environment": config.name,
            **({"trainer": trained["trainer"]} if trained.get("trainer") else {}),
        },
    }
    # The card goes last: its presence marks a complete export.
    write_json(model.card, card)
    reporter.note(f"wrote {model.onnx} (sha256 {onnx_sha256[:12]}) and {model.card.name}")
    return _result(model, parity, onnx_sha256, reused=False)


def _check_parity(config: Config, parity: Parity, reporter: Reporter, parts: list[str]) -> None:
    bounds = config.export.parity
    rows: list[tuple[str, float, str, float, str]] = []
    if parity.label_agreement is not None:
        passed = parity.label_agreement >= bounds.min_label_agreement
        rows.append(
            ("label agreement", parity.label_agreement, ">=", bounds.min_label_agreement, _verdict(passed))
        )
        passed = parity.max_abs_diff <= bounds.max_abs_diff
        rows.append(
            ("max abs probability diff", parity.max_abs_diff, "<=", bounds.max_abs_diff, _verdict(passed))
        )
        failed = (
            parity.label_agreement < bounds.min_label_agreement or parity.max_abs_diff > bounds.max_abs_diff
        )
        detail = (
            f"label agreement {parity.label_agreement:.4f} (min {bounds.min_label_agreement}), "
            f"max abs diff {parity.max_abs_diff:.3g} (max {bounds.max_abs_diff:g})"
        )
    else:
        assert parity.max_relative_diff is not None
        failed = (
            parity.max_abs_diff > bounds.max_abs_diff and parity.max_relative_diff > bounds.max_relative_diff
        )
        rows.append(
            ("max abs value diff", parity.max_abs_diff, "<=", bounds.max_abs_diff, _verdict(not failed))
        )
        rows.append(
            (
                "max relative value diff",
                parity.max_relative_diff,
                "<=",
                bounds.max_relative_diff,
                _verdict(not failed),
            )
        )
        detail = (
            f"max abs diff {parity.max_abs_diff:.3g} (max {bounds.max_abs_diff:g}) and max relative diff "
            f"{parity.max_relative_diff:.3g} (max {bounds.max_relative_diff:g})"
        )
    reporter.table(["check", "value", "comparator", "bound", "result"], rows)
    if failed:
        approximate = [part for part in parts if part in APPROXIMATE_TREES]
        cause = (
            f"{', '.join(approximate)} compares float64 values with thresholds its ONNX converter writes as "
            "float32: use RandomForest, GradientBoosting or XGBoost, which export exactly"
            if approximate
            else "one of them computes in ONNX otherwise than in scikit-learn (its skl2onnx converter)"
        )
        msg = (
            f"ONNX parity failed on {parity.rows} evaluation rows: {detail}; nothing was written. The served "
            f"model would not answer as the fitted {' + '.join(parts)}: {cause} (docs/bring-your-model.md, "
            '"Exact export"). Loosen export.parity only for a difference you have measured and accept'
        )
        raise StageError(msg)


def _parity(expected: NDArray[Any], actual: NDArray[Any]) -> Parity:
    agreement = float(np.mean(np.argmax(expected, axis=1) == np.argmax(actual, axis=1)))
    return Parity(len(expected), agreement, float(np.max(np.abs(expected - actual))))


def _value_parity(expected: NDArray[np.float64], actual: NDArray[np.float64]) -> Parity:
    difference = np.abs(expected - actual)
    relative = difference / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    return Parity(len(expected), None, float(np.max(difference)), float(np.max(relative)))


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def run(ctx: StageContext) -> ExportResult:
    return export(ctx.config, ctx.workspace, ctx.reporter, model=ctx.model, fresh=ctx.args.fresh)
