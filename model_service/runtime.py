"""The onnxruntime session: built from verified bytes, checked against the card, warmed before serving."""

from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from model_service.card import ModelCard, read_verified_onnx
from model_service.errors import StartupError

_ORT_TYPES = {"float32": "tensor(float)", "float64": "tensor(double)"}
_WARMUP_ROWS = (1, 8, 64)


class OnnxModel:
    """One session per worker process; `predict` maps rows to (predictions, probabilities)."""

    def __init__(self, card: ModelCard, intra_op_threads: int = 1, inter_op_threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                read_verified_onnx(card), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except StartupError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for unreadable models
            raise StartupError(f"{card.onnx_path}: onnxruntime cannot load it ({exc})") from None
        _check_signature(session, card)
        self.card = card
        self.dtype: np.dtype[Any] = np.dtype(card.input_dtype)
        self._session = session
        self._outputs = [card.probabilities_output]
        self._input = card.input_name
        classes = np.asarray(card.classes)
        # Integer classes 0..C-1 are the argmax itself; anything else is looked up.
        self._identity_classes = classes.dtype.kind == "i" and bool(
            (classes == np.arange(len(classes))).all()
        )
        self._classes = classes

    def predict(self, rows: npt.NDArray[Any]) -> tuple[Any, npt.NDArray[Any]]:
        """Rows `[N, F]` in the card's dtype → (predictions `[N]`, probabilities `[N, C]`)."""
        probabilities: npt.NDArray[Any] = self._session.run(self._outputs, {self._input: rows})[0]
        index = probabilities.argmax(axis=1)
        if self._identity_classes:
            return index, probabilities
        return self._classes[index].tolist(), probabilities

    def warm_up(self) -> None:
        """Run a few batch sizes once so the first real request does not pay for allocations."""
        for n in _WARMUP_ROWS:
            self.predict(np.zeros((n, self.card.n_features), dtype=self.dtype))

    @property
    def label_datatype(self) -> str:
        """Open Inference Protocol datatype of the predictions."""
        return "INT64" if self._classes.dtype.kind == "i" else "BYTES"


def _check_signature(session: Any, card: ModelCard) -> None:
    inputs = session.get_inputs()
    where = f"{card.onnx_path}"
    if len(inputs) != 1:
        raise StartupError(f"{where}: expected 1 input as the card says, the model has {len(inputs)}")
    model_input = inputs[0]
    if model_input.name != card.input_name:
        raise StartupError(
            f"{where}: input is named {model_input.name!r}, the card says onnx.input.name {card.input_name!r}"
        )
    if model_input.type != _ORT_TYPES[card.input_dtype]:
        raise StartupError(
            f"{where}: input type is {model_input.type}, the card says onnx.input.dtype {card.input_dtype!r}"
        )
    shape = model_input.shape
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != card.n_features):
        raise StartupError(
            f"{where}: input shape is {shape}, the card lists {card.n_features} features (expected [N, "
            f"{card.n_features}])"
        )
    outputs = {output.name: output for output in session.get_outputs()}
    for role, name in (("label", card.label_output), ("probabilities", card.probabilities_output)):
        if name not in outputs:
            raise StartupError(
                f"{where}: no output {name!r} (card onnx.outputs.{role}); has {sorted(outputs)}"
            )
    proba_shape = outputs[card.probabilities_output].shape
    n_classes = len(card.classes)
    if len(proba_shape) != 2 or (isinstance(proba_shape[1], int) and proba_shape[1] != n_classes):
        raise StartupError(
            f"{where}: output {card.probabilities_output!r} has shape {proba_shape}, "
            f"the card lists {n_classes} classes"
        )
