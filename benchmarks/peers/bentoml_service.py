"""A BentoML service around the shared onnxruntime session.

The documented way ("Services", https://docs.bentoml.com/en/latest/build-with-bentoml/services.html, and
"Workers", https://docs.bentoml.com/en/latest/build-with-bentoml/parallelize-requests.html): a class
decorated with `@bentoml.service(workers=2)` loading the model in `__init__`, an `@bentoml.api` method whose
parameters are the JSON body's fields; served by `bentoml serve bentoml_service:Predictor`.
"""

import bentoml
import numpy as np
import onnx_session


@bentoml.service(workers=2)
class Predictor:
    def __init__(self) -> None:
        self.session = onnx_session.load()

    @bentoml.api  # type: ignore[untyped-decorator]  # bentoml is not installed in the lint venv
    def predict(self, instances: list[list[float]]) -> dict[str, list[object]]:
        probabilities = onnx_session.probabilities(self.session, np.asarray(instances, dtype=np.float32))
        return {"predictions": probabilities.argmax(axis=1).tolist(), "probabilities": probabilities.tolist()}
