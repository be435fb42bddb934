"""export: convert the trained model to ONNX, prove parity on the evaluation rows, write the card."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

from model_service.contract.card import (
    CARD_VERSION,
    CardError,
    Feature,
    Parity,
    UnknownCategory,
    parse_card,
)
from pipeline.artifacts import ModelDir
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.ml.data import load_dataset
from pipeline.ml.estimators import column_steps, put_workspace_on_path
from pipeline.ml.onnx_converters import APPROXIMATE_TREES
from pipeline.ml.onnx_model import INPUT_NAME, PROBABILITIES_OUTPUT, components, to_onnx
from pipeline.ml.onnx_model import predict as predict_rows
from pipeline.ml.profile import card_reference
from pipeline.quality.join import capture_directory
from pipeline.quality.replay import captured_rows
from pipeline.release.record import record_release
from pipeline.stage import Check, CheckResult, StageContext, StageResult, checked_status
from pipeline.workspace import Workspace, read_json, write_bytes, write_json


@dataclass(frozen=True, kw_only=True)
class ExportResult(StageResult):
    parity: Parity
    onnx_sha256: str


def _result(
    model: ModelDir, parity: Parity, checks: list[Check], onnx_sha256: str, *, reused: bool
) -> ExportResult:
    return ExportResult(
        headline=f"parity max abs diff {parity.max_abs_diff:.2g}, onnx {onnx_sha256[:12]}",
        reused=reused,
        artifacts={"onnx": model.onnx, "card": model.card, "evaluation": model.evaluation},
        checks=checks,
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


def unknown_categories(estimator: Any) -> dict[str, UnknownCategory]:
    """Per string feature, what the fitted encoder does with a category it has not seen: `ignore` or
    `error`; features it cannot tell about are left out (the card then says `ignore`)."""
    found: dict[str, UnknownCategory] = {}
    for names, encoder in column_steps(estimator, (OneHotEncoder, OrdinalEncoder)):
        # OrdinalEncoder's use_encoded_value and OneHotEncoder's other modes accept it.
        verdict: UnknownCategory = "error" if encoder.handle_unknown == "error" else "ignore"
        found.update(dict.fromkeys(names, verdict))
    return found


def _kept_export(config: Config, model: ModelDir, reporter: Reporter) -> ExportResult | None:
    """The export in `model`, reused; None when `export.parity` was tightened since (it is judged anew)."""
    saved = model.read_card()
    if saved.parity is None:
        raise StageError(f"{model.card}: no parity record; re-export with --fresh")
    checks = parity_checks(config, saved.parity)
    if any(check.failed for check in checks):
        return None
    reporter.note(f"reused {model.onnx} (parity max abs diff {saved.parity.max_abs_diff:.3g})")
    return _result(model, saved.parity, checks, saved.sha256, reused=True)


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
    if model.exported() and not fresh and (kept := _kept_export(config, model, reporter)) is not None:
        return kept

    trained = read_json(model.train_record)
    if trained.get("trainer"):
        put_workspace_on_path(workspace.root)  # the pickle may name classes of the trainer's module
    estimator = model.read_estimator()
    task = trained["task"]
    data = load_dataset(config.data, workspace.root, task)
    try:
        columns = [
            Feature.from_json(c, f"{model.train_record}: columns[{i}]")
            for i, c in enumerate(trained["columns"])
        ]
    except CardError as exc:
        raise StageError(f"{exc}; train again with --fresh") from None
    origin = f"model.trainer {trained['trainer']!r}" if trained.get("trainer") else "model.estimator"
    onnx_bytes, card_onnx = to_onnx(
        estimator, columns, task=trained["task"], opset=config.export.opset, origin=origin
    )
    onnx_sha256 = hashlib.sha256(onnx_bytes).hexdigest()
    rows = data.test_rows()
    unknown = unknown_categories(estimator)
    features = with_defaults(
        config,
        [
            replace(c, unknown_category=unknown.get(c.name, "ignore")) if c.type == "string" else c
            for c in columns
        ],
    )
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "name": config.model.name,
        "version": model.version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": task,
        "onnx": {"file": model.onnx.name, "sha256": onnx_sha256, "opset": config.export.opset, **card_onnx},
        "features": [feature.to_json() for feature in features],
    }
    if task != "regression":
        card["classes"] = trained["classes"]

    # Parity is checked on the bytes about to be written, before anything is written.
    scratch = model.path / f".{model.onnx.name}.parity"
    write_bytes(scratch, onnx_bytes)
    try:
        onnx_outputs = predict_rows(scratch, parse_card(dict(card)), rows)
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
    checks = parity_checks(config, parity)
    _check_parity(parity, checks, reporter, components(estimator))

    write_bytes(model.onnx, onnx_bytes)
    write_json(
        model.evaluation, {"features": trained["features"], "rows": rows, "labels": data.y_test.tolist()}
    )
    card |= {
        "metrics": trained["metrics"],
        "parity": parity.to_json(),
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
    parse_card(card)  # what every reader accepts, or nothing is written
    # The card goes last: its presence marks a complete export.
    write_json(model.card, card)
    reporter.note(f"wrote {model.onnx} (sha256 {onnx_sha256[:12]}) and {model.card.name}")
    return _result(model, parity, checks, onnx_sha256, reused=False)


def with_defaults(config: Config, features: list[Feature]) -> list[Feature]:
    """The features with `model.feature_defaults` set; StageError naming the key for a feature the model
    does not take or a value it refuses."""
    declared = config.model.feature_defaults
    where = f"environments/{config.name}.yaml (or a file it extends): model.feature_defaults"
    names = [feature.name for feature in features]
    unknown = [name for name in declared if name not in names]
    if unknown:
        raise StageError(
            f"{where}.{unknown[0]}: the model takes no feature {unknown[0]!r} (it takes {names[:8]})"
        )
    out = []
    for feature in features:
        value = declared.get(feature.name)
        if value is not None and not feature.accepts(value):
            raise StageError(
                f"{where}.{feature.name}: {value!r} is not a value of this {feature.type} feature"
                + (f" (categories {list(feature.categories or ())[:8]})" if feature.type == "string" else "")
            )
        out.append(replace(feature, default=value))
    return out


def parity_checks(config: Config, parity: Parity) -> list[Check]:
    """The parity of ONNX and the fitted model on the evaluation rows against `export.parity`. A
    regression's parity holds when either difference is within its bound (ONNX computes in float32:
    large values differ in absolute terms by rounding alone)."""
    bounds = config.export.parity
    rows = Check(scope="evaluation rows", value=parity.rows, result="info")
    if parity.label_agreement is not None:
        return [
            rows,
            Check.bounded("label agreement", "", parity.label_agreement, ">=", bounds.min_label_agreement),
            Check.bounded("max abs probability diff", "", parity.max_abs_diff, "<=", bounds.max_abs_diff),
        ]
    assert parity.max_relative_diff is not None
    absolute = Check.bounded("max abs value diff", "", parity.max_abs_diff, "<=", bounds.max_abs_diff)
    relative = Check.bounded(
        "max relative value diff", "", parity.max_relative_diff, "<=", bounds.max_relative_diff
    )
    either: CheckResult = "fail" if absolute.failed and relative.failed else "pass"
    note = "either difference within its bound"
    return [rows, *(replace(check, result=either, note=note) for check in (absolute, relative))]


def _check_parity(parity: Parity, checks: list[Check], reporter: Reporter, parts: list[str]) -> None:
    reporter.checks(checks)
    failed = [check for check in checks if check.failed]
    if failed:
        approximate = [part for part in parts if part in APPROXIMATE_TREES]
        cause = (
            f"{', '.join(approximate)} compares float64 values with thresholds its ONNX converter writes as "
            "float32: use RandomForest, GradientBoosting or XGBoost, which export exactly"
            if approximate
            else "one of them computes in ONNX otherwise than in scikit-learn (its skl2onnx converter)"
        )
        detail = "; ".join(check.line() for check in failed)
        msg = (
            f"ONNX parity failed on {parity.rows} evaluation rows: {detail}; nothing was written. The served "
            f"model would not answer as the fitted {' + '.join(parts)}: {cause} (docs/bring-your-model.md, "
            '"Exact export"). Loosen export.parity only for a difference you have measured and accept'
        )
        raise StageError(msg)


def _parity(expected: NDArray[Any], actual: NDArray[Any]) -> Parity:
    agreement = float(np.mean(np.argmax(expected, axis=1) == np.argmax(actual, axis=1)))
    difference = float(np.max(np.abs(expected - actual)))
    return Parity(rows=len(expected), label_agreement=agreement, max_abs_diff=difference)


def _value_parity(expected: NDArray[np.float64], actual: NDArray[np.float64]) -> Parity:
    difference = np.abs(expected - actual)
    relative = difference / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    return Parity(
        rows=len(expected), max_abs_diff=float(np.max(difference)), max_relative_diff=float(np.max(relative))
    )


def captured_parity(
    config: Config, workspace: Workspace, reporter: Reporter, *, model: ModelDir
) -> list[Check]:
    """Parity of the fitted model and its ONNX file on the captured rows (`--from-capture`): production's
    rows through both, judged by `export.parity` as the evaluation rows are. The card keeps the evaluation
    rows' parity; these checks are the run's."""
    import pandas as pd  # noqa: PLC0415  (only here)

    card = model.read_card()
    directory = capture_directory(config.capture.directory, workspace.root)
    replay = captured_rows(directory, card, config.drift.log_inputs.sensitive)
    reporter.note(f"parity also on {replay.summary(directory)}")
    trained = read_json(model.train_record)
    if trained.get("trainer"):
        put_workspace_on_path(workspace.root)
    columns: dict[str, Any] = {}
    for j, feature in enumerate(card.features):  # the dtypes training gave each type (ml/data.py)
        values = [row[j] for row in replay.rows]
        if feature.type == "string":
            columns[feature.name] = pd.Series(["" if v is None else str(v) for v in values], dtype=object)
        elif feature.type != "float" and None not in values:
            columns[feature.name] = pd.Series(values, dtype=np.int64 if feature.type == "int" else bool)
        else:
            columns[feature.name] = pd.Series(
                [np.nan if v is None else float(v) for v in values], dtype=np.float64
            )
    frame = pd.DataFrame(columns)
    sklearn_input = frame if trained["takes_frame"] else frame.to_numpy(dtype=np.float64, na_value=np.nan)
    estimator = model.read_estimator()
    outputs = predict_rows(model.onnx, card, replay.rows)
    if outputs.values is not None:
        expected = np.asarray(estimator.predict(sklearn_input), dtype=np.float64).reshape(-1)
        parity = _value_parity(expected, outputs.values)
    else:
        assert outputs.probabilities is not None
        parity = _parity(estimator.predict_proba(sklearn_input), outputs.probabilities)
    return [replace(check, scope=f"captured: {check.scope}") for check in parity_checks(config, parity)]


def run(ctx: StageContext) -> ExportResult:
    result = export(ctx.config, ctx.workspace, ctx.reporter, model=ctx.model, fresh=ctx.args.fresh)
    record_release(ctx.config, ctx.workspace, ctx.model, ctx.reporter)  # the card's `release`
    if not ctx.args.from_capture:
        return result
    checks = captured_parity(ctx.config, ctx.workspace, ctx.reporter, model=ctx.model)
    ctx.reporter.checks(checks)
    status = checked_status([*result.checks, *checks])
    return replace(result, status=status, checks=[*result.checks, *checks], failures=[])
