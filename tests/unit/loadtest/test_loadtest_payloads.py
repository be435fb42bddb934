"""The load test's payloads follow the card: the locustfile, imported in a child process on a profile the
pipeline writes, sends the evaluation rows with their strings and nulls as v1 lists, v1 objects and v2
tensors with the card's inputs and datatypes (BYTES for strings)."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.adapters.locust import LOCUSTFILE, locust_profile
from pipeline.artifacts import ModelDir
from pipeline.config import load_config
from pipeline.errors import StageError
from pipeline.ml.onnx_model import onnx_feeds
from tests._card_v2 import EVAL_ROWS, write_export

REPO = Path(__file__).parents[3]
ROWS = EVAL_ROWS[1:4]  # a string, a null number, a null string

PRINT_PAYLOADS = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("locustfile", {str(LOCUSTFILE)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
rows = json.loads(sys.argv[1])
print(json.dumps({{route: module._payload(route, rows) for route in module.ROUTES}}))
"""


def _payloads(profile: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    done = subprocess.run(
        [sys.executable, "-c", PRINT_PAYLOADS, json.dumps(ROWS)],
        env={"LOADTEST_PROFILE": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_payloads_carry_strings_and_nulls_on_every_route(tmp_path: Path) -> None:
    model = ModelDir(write_export(tmp_path / "model"))
    profile = locust_profile(load_config("dev", REPO / "environments"), model)
    assert profile["inputs"] == [
        {"name": "age", "datatype": "FP32", "columns": [0]},
        {"name": "n", "datatype": "FP32", "columns": [1]},
        {"name": "city", "datatype": "BYTES", "columns": [2]},
    ]
    payloads = _payloads(profile, tmp_path)
    assert payloads["v1_instances"] == ["/v1/predict", {"instances": ROWS}]
    assert payloads["v1_records"] == [
        "/v1/predict",
        [
            {"age": 35.5, "n": 3, "city": "Paris"},
            {"age": None, "n": 8, "city": "Paris"},
            {"age": 45.0, "n": 2, "city": None},
        ],
    ]
    path, body = payloads["v2_infer"]
    assert path == "/v2/models/mixed-model/infer"
    assert body["inputs"] == [
        {"name": "age", "shape": [3, 1], "datatype": "FP32", "data": [35.5, None, 45.0]},
        {"name": "n", "shape": [3, 1], "datatype": "FP32", "data": [3, 8, 2]},
        {"name": "city", "shape": [3, 1], "datatype": "BYTES", "data": ["Paris", "Paris", None]},
    ]
    # Each tensor is what the card's input of that name takes, row by row.
    feeds = onnx_feeds(model.read_card(), ROWS)
    assert {t["name"]: list(t["shape"]) for t in body["inputs"]} == {
        n: list(a.shape) for n, a in feeds.items()
    }


def test_a_card_v1_export_keeps_its_one_float_input(plain_model_dir: Path, tmp_path: Path) -> None:
    profile = locust_profile(load_config("dev", REPO / "environments"), ModelDir(plain_model_dir))
    features = profile["features"]
    assert profile["inputs"] == [{"name": "input", "datatype": "FP32", "columns": list(range(len(features)))}]


def test_eval_rows_whose_features_differ_from_the_card_are_refused(tmp_path: Path) -> None:
    model = ModelDir(write_export(tmp_path / "model"))
    evaluation = json.loads(model.evaluation.read_text())
    model.evaluation.write_text(json.dumps({**evaluation, "features": ["n", "age", "city"]}))
    with pytest.raises(
        StageError, match=r"eval\.json: features differ from the card's .*re-export the model"
    ):
        locust_profile(load_config("dev", REPO / "environments"), model)
