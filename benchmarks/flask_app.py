"""The tutorial-style peer: Flask + a pickled scikit-learn model, served by gunicorn sync workers.

`BENCH_PICKLE` names the pickle. Run: `BENCH_PICKLE=F gunicorn -w 2 -b 127.0.0.1:P benchmarks.flask_app:app`.
"""

import os
import pickle
from pathlib import Path

import numpy as np
from flask import Flask, jsonify, request

app = Flask(__name__)
model = pickle.loads(Path(os.environ["BENCH_PICKLE"]).read_bytes())  # our own file, written by `train`


@app.post("/predict")
def predict():  # type: ignore[no-untyped-def]
    rows = np.asarray(request.get_json()["instances"], dtype=np.float64)
    probabilities = model.predict_proba(rows)
    return jsonify(predictions=model.predict(rows).tolist(), probabilities=probabilities.tolist())


@app.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify(status="ok")
