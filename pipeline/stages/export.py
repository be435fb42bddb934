"""export: convert the trained model to ONNX, prove parity on the evaluation rows, write the card."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from pipeline.artifacts import ModelDir
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.ml.data import load_dataset
from pipeline.ml.profile import reference_profile
from pipeline.stage import StageResult
from pipeline.stages.train import final_estimator, load_estimator
from pipeline.workspace import Workspace, read_json, write_bytes, write_json

INPUT_NAME = "input"
CARD_VERSION = 1


@dataclass(frozen=True)
class Parity:
    rows: int
    label_agreement: float
    max_abs_diff: float


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
    """Class probabilities [N, C] from an exported model, through onnxruntime on one thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {input_name: rows.astype(np.float32)})
    return np.asarray(probabilities, dtype=np.float64)


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
        card = model.read_card()
        parity = Parity(**card["parity"])
        reporter.note(f"reused {model.onnx} (parity max abs diff {parity.max_abs_diff:.3g})")
        return _result(model, parity, card["onnx"]["sha256"], reused=True)

    trained = read_json(model.train_record)
    estimator = load_estimator(model)
    data = load_dataset(config.data, workspace.root)
    n_features = len(trained["features"])
    converted = convert_sklearn(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        # Probabilities as a plain [N, C] tensor, not a list of maps, so any client can read them.
        options={id(final_estimator(estimator)): {"zipmap": False}},
        target_opset=config.export.opset,
    )
    onnx_bytes = converted.SerializeToString()
    onnx_sha256 = hashlib.sha256(onnx_bytes).hexdigest()

    # Parity is checked on the bytes about to be written, before anything is written.
    scratch = model.path / f".{model.onnx.name}.parity"
    write_bytes(scratch, onnx_bytes)
    try:
        onnx_probabilities = predict_onnx(scratch, data.x_test)
    finally:
        scratch.unlink(missing_ok=True)
    parity = _parity(estimator.predict_proba(data.x_test), onnx_probabilities)
    bounds = config.export.parity
    reporter.table(
        ["check", "value", "comparator", "bound", "result"],
        [
            (
                "label agreement",
                parity.label_agreement,
                ">=",
                bounds.min_label_agreement,
                _verdict(parity.label_agreement >= bounds.min_label_agreement),
            ),
            (
                "max abs probability diff",
                parity.max_abs_diff,
                "<=",
                bounds.max_abs_diff,
                _verdict(parity.max_abs_diff <= bounds.max_abs_diff),
            ),
        ],
    )
    if parity.label_agreement < bounds.min_label_agreement or parity.max_abs_diff > bounds.max_abs_diff:
        msg = (
            f"ONNX parity failed on {parity.rows} evaluation rows: label agreement {parity.label_agreement:.4f} "
            f"(min {bounds.min_label_agreement}), max abs diff {parity.max_abs_diff:.3g} "
            f"(max {bounds.max_abs_diff:g}); nothing was written. Check the estimator's skl2onnx support "
            "or loosen export.parity in the environment's YAML"
        )
        raise StageError(msg)

    write_bytes(model.onnx, onnx_bytes)
    write_json(
        model.evaluation,
        {"features": trained["features"], "rows": data.x_test.tolist(), "labels": data.y_test.tolist()},
    )
    card = {
        "card_version": CARD_VERSION,
        "name": config.model.name,
        "version": model.version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": "classification",
        "onnx": {
            "file": model.onnx.name,
            "sha256": onnx_sha256,
            "opset": config.export.opset,
            "input": {"name": INPUT_NAME, "dtype": "float32"},
            "outputs": {"label": "label", "probabilities": "probabilities"},
        },
        "features": [{"name": name, "dtype": "float32"} for name in trained["features"]],
        "classes": trained["classes"],
        "metrics": trained["metrics"],
        "parity": {
            "rows": parity.rows,
            "label_agreement": parity.label_agreement,
            "max_abs_diff": parity.max_abs_diff,
        },
        # What the service and `pipeline drift` compare live inputs and predictions with (docs/drift.md).
        "reference": reference_profile(
            trained["features"], data.x_train, onnx_probabilities, trained["classes"]
        ),
        "lineage": {
            "git_sha": trained["git_sha"],
            "data_sha256": trained["data_sha256"],
            "config_sha256": trained["config_sha256"],
            "mlflow_run_id": trained["mlflow_run_id"],
            "environment": config.name,
        },
    }
    # The card goes last: its presence marks a complete export.
    write_json(model.card, card)
    reporter.note(f"wrote {model.onnx} (sha256 {onnx_sha256[:12]}) and {model.card.name}")
    return _result(model, parity, onnx_sha256, reused=False)


def _parity(expected: NDArray[Any], actual: NDArray[Any]) -> Parity:
    agreement = float(np.mean(np.argmax(expected, axis=1) == np.argmax(actual, axis=1)))
    return Parity(len(expected), agreement, float(np.max(np.abs(expected - actual))))


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"
