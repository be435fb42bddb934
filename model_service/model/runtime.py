"""The onnxruntime session: built from verified bytes, checked against the card, warmed before serving."""

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from model_service.contract.card import CardError, ModelCard, read_card
from model_service.protocol.errors import StartupError

_ORT_TYPES = {
    "float32": "tensor(float)",
    "float64": "tensor(double)",
    "int64": "tensor(int64)",
    "string": "tensor(string)",
}
_FLOAT_OUTPUTS = frozenset({"tensor(float)", "tensor(double)"})
_WARMUP_ROWS = (1, 8, 64)
NUMPY_DTYPES: dict[str, npt.DTypeLike] = {
    "float32": np.float32,
    "float64": np.float64,
    "int64": np.int64,
    "string": object,  # onnxruntime takes Python strings in an object array
}


def load_card(model_dir: Path) -> ModelCard:
    """The card of `model_dir`, or `StartupError` with the card's one-line reason (file and key)."""
    try:
        return read_card(model_dir)
    except CardError as exc:
        raise StartupError(str(exc)) from None


def read_verified_onnx(card: ModelCard, registered_sha256: str | None = None) -> bytes:
    """The ONNX file's bytes, once its sha256 matches the card and, when the deployment names it, the
    registry's record (`MODEL_SERVICE_EXPECTED_SHA256`); hashing the bytes that get loaded."""
    try:
        data = card.onnx_path.read_bytes()
    except FileNotFoundError:
        raise StartupError(f"{card.onnx_path}: ONNX file named by the card not found") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != card.sha256:
        raise StartupError(
            f"{card.onnx_path}: sha256 {digest} differs from the card's onnx.sha256 {card.sha256}; "
            "the file was changed after export"
        )
    if registered_sha256 is not None and digest != registered_sha256:
        raise StartupError(
            f"{card.onnx_path}: sha256 {digest} differs from the registry's onnx_sha256 {registered_sha256} "
            "(MODEL_SERVICE_EXPECTED_SHA256): this is not the model version the deployment names"
        )
    return data


class OnnxModel:
    """One session per worker process. `predict` serves the numeric fast path (one float matrix, a
    classifier); `predict_feeds` serves every card (named inputs; classifier or regression)."""

    def __init__(
        self,
        card: ModelCard,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
        registered_sha256: str | None = None,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                read_verified_onnx(card, registered_sha256),
                sess_options=options,
                providers=["CPUExecutionProvider"],
            )
        except StartupError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for unreadable models
            raise StartupError(f"{card.onnx_path}: onnxruntime cannot load it ({exc})") from None
        _check_signature(session, card)
        self.card = card
        first = card.inputs[0]
        self.dtype: np.dtype[Any] = np.dtype(NUMPY_DTYPES[first.dtype])
        """The fast path's matrix dtype (the first input's; meaningful when `card.numeric_only`)."""
        self._session = session
        self._regression = card.is_regression
        self._outputs = [card.outputs["value" if self._regression else "probabilities"]]
        self._input = first.name
        read = next(output for output in session.get_outputs() if output.name == self._outputs[0])
        self.value_datatype = "FP32" if read.type == "tensor(float)" else "FP64"
        """Open Inference Protocol datatype of the output read: probabilities, or a regression's values."""
        self.value_shape = [-1, *(1 for _ in read.shape[1:])]
        """That output's shape with -1 for the batch (a regression's: [-1] or [-1, 1])."""
        classes = np.asarray(card.classes)
        # Integer classes 0..C-1 are the argmax itself; anything else is looked up.
        self._identity_classes = classes.dtype.kind == "i" and bool(
            (classes == np.arange(len(classes))).all()
        )
        self._classes = classes

    def predict(self, rows: npt.NDArray[Any]) -> tuple[Any, npt.NDArray[Any]]:
        """Rows `[N, F]` of a numeric-only classifier → (predictions `[N]`, probabilities `[N, C]`)."""
        probabilities: npt.NDArray[Any] = self._session.run(self._outputs, {self._input: rows})[0]
        index = probabilities.argmax(axis=1)
        if self._identity_classes:
            return index, probabilities
        return self._classes[index].tolist(), probabilities

    def predict_feeds(self, feeds: dict[str, npt.NDArray[Any]]) -> tuple[Any, npt.NDArray[Any]]:
        """Named inputs → (predictions `[N]`, scores): probabilities `[N, C]` for a classifier; for a
        regression the predicted values `[N]` are both."""
        output: npt.NDArray[Any] = self._session.run(self._outputs, feeds)[0]
        if self._regression:
            values = output.reshape(len(output))
            return values, values
        index = output.argmax(axis=1)
        if self._identity_classes:
            return index, output
        return self._classes[index].tolist(), output

    def warm_up(self) -> None:
        """Run a few batch sizes once so the first real request does not pay for allocations; the rows
        are valid (0 for numbers, a string feature's first category or "")."""
        for n in _WARMUP_ROWS:
            self.predict_feeds(self._example_feeds(n))

    def _example_feeds(self, n: int) -> dict[str, npt.NDArray[Any]]:
        feeds = {}
        for spec in self.card.inputs:
            if spec.dtype == "string":
                row = [_example_string(self.card.features[c].categories) for c in spec.columns]
                feeds[spec.name] = np.array([row] * n, dtype=object)
            else:
                feeds[spec.name] = np.zeros((n, len(spec.columns)), dtype=NUMPY_DTYPES[spec.dtype])
        return feeds

    @property
    def label_datatype(self) -> str:
        """Open Inference Protocol datatype of a classifier's predictions."""
        return "INT64" if self._classes.dtype.kind == "i" else "BYTES"


def _example_string(categories: tuple[str, ...] | None) -> str:
    return categories[0] if categories else ""


def _check_signature(session: Any, card: ModelCard) -> None:
    where = f"{card.onnx_path}"
    model_inputs = {model_input.name: model_input for model_input in session.get_inputs()}
    names = [spec.name for spec in card.inputs]
    if sorted(model_inputs) != sorted(names):
        if card.card_version == 1 and len(model_inputs) == 1:
            raise StartupError(
                f"{where}: input is named {next(iter(model_inputs))!r}, the card says onnx.input.name {names[0]!r}"
            )
        raise StartupError(
            f"{where}: the model's inputs are {sorted(model_inputs)}, the card's onnx.inputs name {sorted(names)}"
        )
    for i, spec in enumerate(card.inputs):
        model_input = model_inputs[spec.name]
        key = "onnx.input" if card.card_version == 1 else f"onnx.inputs[{i}]"
        if model_input.type != _ORT_TYPES[spec.dtype]:
            raise StartupError(
                f"{where}: input {spec.name!r} type is {model_input.type}, the card says {key}.dtype {spec.dtype!r}"
            )
        shape = model_input.shape
        n = len(spec.columns)
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n):
            raise StartupError(
                f"{where}: input {spec.name!r} shape is {shape}, the card lists {n} features for it "
                f"(expected [N, {n}])"
            )
    outputs = {output.name: output for output in session.get_outputs()}
    for role, name in card.outputs.items():
        if name not in outputs:
            raise StartupError(
                f"{where}: no output {name!r} (card onnx.outputs.{role}); has {sorted(outputs)}"
            )
    if card.is_regression:
        value = outputs[card.outputs["value"]]
        shape = value.shape
        column = len(shape) == 2 and (shape[1] == 1 or not isinstance(shape[1], int))
        if value.type not in _FLOAT_OUTPUTS or not (len(shape) == 1 or column):
            raise StartupError(
                f"{where}: output {value.name!r} (card onnx.outputs.value) is {value.type} {shape}; "
                "expected a float tensor [N] or [N, 1]"
            )
        return
    proba_shape = outputs[card.outputs["probabilities"]].shape
    n_classes = len(card.classes)
    if len(proba_shape) != 2 or (isinstance(proba_shape[1], int) and proba_shape[1] != n_classes):
        raise StartupError(
            f"{where}: output {card.outputs['probabilities']!r} has shape {proba_shape}, "
            f"the card lists {n_classes} classes"
        )
