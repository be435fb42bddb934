"""The ceiling of a Python HTTP path here: Starlette + orjson + the same onnxruntime session.

No validation, no metrics, no request ids, no logs. `BENCH_MODEL_DIR` names the exported model folder.
Run: `BENCH_MODEL_DIR=DIR uvicorn benchmarks.minimal_app:app --workers 2 --no-access-log`.
"""

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_MODEL_DIR = Path(os.environ.get("BENCH_MODEL_DIR", "."))
_session: ort.InferenceSession | None = None


def _load() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(_MODEL_DIR / "model.onnx"), options, providers=["CPUExecutionProvider"])


async def predict(request: Request) -> Response:
    global _session  # noqa: PLW0603 - one session per worker, built on first use
    if _session is None:
        _session = _load()
    rows = np.asarray(orjson.loads(await request.body())["instances"], dtype=np.float32)
    probabilities = _session.run(["probabilities"], {"input": rows})[0]
    body = {"predictions": probabilities.argmax(axis=1), "probabilities": probabilities}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(
    routes=[Route("/predict", predict, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
)
