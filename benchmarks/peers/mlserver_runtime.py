"""MLServer with a custom inference runtime around the shared onnxruntime session (v2 protocol).

The documented way ("Custom Inference Runtimes", https://docs.seldon.ai/mlserver/user-guide/custom):
subclass `mlserver.MLModel`, load in `load()`, answer `predict(InferenceRequest)` with an
`InferenceResponse`; `model-settings.json` names the class (`implementation`), `settings.json` the server
(`parallel_workers`: the inference worker pool, "Parallel Inference",
https://docs.seldon.ai/mlserver/user-guide/parallel-inference). Served by `mlserver start FOLDER`.
"""

import numpy as np
import onnx_session
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):  # type: ignore[misc]  # mlserver ships no type information
    async def load(self) -> bool:
        self.session = onnx_session.load()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        probabilities = onnx_session.probabilities(self.session, rows)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output("predictions", probabilities.argmax(axis=1)),
                NumpyCodec.encode_output("probabilities", probabilities),
            ],
        )
