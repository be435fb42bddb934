"""LitServe around the shared onnxruntime session.

The documented way ("LitAPI", https://lightning.ai/docs/litserve/api-reference/litapi, and "LitServer",
https://lightning.ai/docs/litserve/api-reference/litserver): a `LitAPI` with `setup`, `decode_request`,
`predict` and `encode_response`, served by `LitServer(api, accelerator="cpu", workers_per_device=2)`;
`run()` starts as many API server processes as inference workers (its default), each handing requests
to the workers through queues.
"""

import argparse
from typing import Any

import litserve as ls
import numpy as np
import onnx_session


class OnnxAPI(ls.LitAPI):  # type: ignore[misc]  # litserve ships no type information
    def setup(self, device: str) -> None:
        self.session = onnx_session.load()

    def decode_request(self, request: dict[str, Any]) -> np.ndarray:
        return np.asarray(request["instances"], dtype=np.float32)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        probabilities: np.ndarray = onnx_session.probabilities(self.session, rows)
        return probabilities

    def encode_response(self, probabilities: np.ndarray) -> dict[str, list[object]]:
        return {"predictions": probabilities.argmax(axis=1).tolist(), "probabilities": probabilities.tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    server = ls.LitServer(OnnxAPI(), accelerator="cpu", workers_per_device=args.workers)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False)
