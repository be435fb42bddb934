"""The onnxruntime session every peer serves: the minimal app's, one thread (imported by each peer from
its own venv, so it needs numpy and onnxruntime only). `BENCH_MODEL_DIR` names the exported model folder."""

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort


def load() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    model = Path(os.environ["BENCH_MODEL_DIR"]) / "model.onnx"
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def probabilities(session: ort.InferenceSession, rows: np.ndarray) -> np.ndarray:
    """[N, classes] float32 probabilities of `rows` ([N, features] float32)."""
    return np.asarray(session.run(["probabilities"], {"input": rows})[0])
