"""KServe's Python model server with a custom `Model` around the shared onnxruntime session.

The documented way ("Deploy Custom Python Serving Runtime", https://kserve.github.io/website/master/
modelserving/v1beta1/custom/custom_model/): subclass `kserve.Model`, load in `load()`, answer in `predict()`,
start `kserve.ModelServer().start([model])`; its flags (`--http_port`, `--grpc_port`, `--workers`) come
from kserve's own argument parser. One `predict` serves both protocols: a dict for v1
(`/v1/models/model:predict`), an `InferRequest` for v2 (`/v2/models/model/infer`).
"""

import argparse

import numpy as np
import onnx_session
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.utils.utils import generate_uuid


class OnnxModel(Model):  # type: ignore[misc]  # kserve ships no type information
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self.session = onnx_session.load()
        self.ready = True
        return True

    # With --workers > 1 kserve spawns its uvicorn workers and pickles the model repository into them
    # (an onnxruntime session cannot be pickled: https://github.com/kserve/kserve/discussions/3566):
    # each worker loads its own session instead.
    def __getstate__(self) -> dict[str, object]:
        return {key: value for key, value in self.__dict__.items() if key != "session"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.load()

    def predict(
        self,
        payload: dict[str, list[list[float]]] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, list[object]] | InferResponse:
        if isinstance(payload, InferRequest):
            rows = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
            probabilities = onnx_session.probabilities(self.session, rows)
            outputs = [
                InferOutput("predictions", [len(rows)], "INT64", probabilities.argmax(axis=1)),
                InferOutput("probabilities", list(probabilities.shape), "FP32", probabilities),
            ]
            return InferResponse(payload.id or generate_uuid(), self.name, outputs)
        probabilities = onnx_session.probabilities(
            self.session, np.asarray(payload["instances"], dtype=np.float32)
        )
        return {"predictions": probabilities.argmax(axis=1).tolist(), "probabilities": probabilities.tolist()}


if __name__ == "__main__":
    args = argparse.ArgumentParser(parents=[model_server.parser]).parse_args()
    ModelServer().start([OnnxModel(args.model_name)])
