"""Hand-written card v2 exports (docs/model-card.md, the issue-22 contract) for the consumers' tests: a
small ONNX graph built with onnx.helper (no trainer involved), its model.json and eval.json.

Features: `age` float nullable, `n` int, `city` string nullable with categories Lyon and Paris (unknown:
ignore). One ONNX input per feature, shape [N, 1]. Classification (binary): P(1) = sigmoid(0.05 age + 0.2 n
+ 1.0 [city == Paris] - 3.5), missing age imputed as 50; regression: the same linear value.
"""

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from model_service.contract.card import Feature, ModelCard, parse_card

NAME = "mixed-model"
VERSION = "c0ffee000001"
WEIGHTS = (0.05, 0.2, 1.0)
BIAS = -3.5
SCORE_EDGES = [round(i / 10, 1) for i in range(11)]
FEATURES = [
    {"name": "age", "type": "float", "nullable": True},
    {"name": "n", "type": "int", "nullable": False},
    {
        "name": "city",
        "type": "string",
        "nullable": True,
        "categories": ["Lyon", "Paris"],
        "unknown_category": "ignore",
    },
]
EVAL_ROWS: list[list[Any]] = [
    [25.0, 1, "Lyon"],
    [35.5, 3, "Paris"],
    [None, 8, "Paris"],
    [45.0, 2, None],
    [55.0, 9, "Lyon"],
    [65.0, 4, "Marseille"],
    [75.0, 6, "Paris"],
    [30.0, 7, "Lyon"],
]
REFERENCE_FEATURES = [
    # age: 3 value bins and the missing bin; n: 2 bins; city: Lyon, Paris, other.
    {
        "name": "age",
        "kind": "numeric",
        "edges": [20.0, 40.0, 60.0, 80.0],
        "frequencies": [0.3, 0.3, 0.3, 0.1],
    },
    {"name": "n", "kind": "numeric", "edges": [0.0, 5.0, 10.0], "frequencies": [0.5, 0.5]},
    {"name": "city", "kind": "categorical", "categories": ["Lyon", "Paris"], "frequencies": [0.5, 0.4, 0.1]},
]


def predicted(row: list[Any], task: str) -> float:
    """What the graph computes for one row (classification: P(1); regression: the value)."""
    import math  # noqa: PLC0415

    age = 50.0 if row[0] is None else float(row[0])
    value = WEIGHTS[0] * age + WEIGHTS[1] * float(row[1]) + WEIGHTS[2] * (row[2] == "Paris") + BIAS
    return value if task == "regression" else 1 / (1 + math.exp(-value))


def _graph(task: str) -> onnx.ModelProto:
    nodes = [
        helper.make_node(
            "Imputer",
            ["age"],
            ["age_filled"],
            domain="ai.onnx.ml",
            imputed_value_floats=[50.0],
            replaced_value_float=float("nan"),
        ),
        helper.make_node(
            "LabelEncoder",
            ["city"],
            ["city_paris"],
            domain="ai.onnx.ml",
            keys_strings=["Lyon", "Paris"],
            values_floats=[0.0, 1.0],
            default_float=0.0,
        ),
        helper.make_node("Concat", ["age_filled", "n", "city_paris"], ["x"], axis=1),
        helper.make_node("MatMul", ["x", "weights"], ["linear"]),
        helper.make_node("Add", ["linear", "bias"], ["value"]),
    ]
    initializers = [
        helper.make_tensor("weights", TensorProto.FLOAT, [3, 1], list(WEIGHTS)),
        helper.make_tensor("bias", TensorProto.FLOAT, [1], [BIAS]),
    ]
    if task == "regression":
        nodes.append(helper.make_node("Identity", ["value"], ["variable"]))
        outputs = [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])]
    else:
        initializers.append(helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
        nodes += [
            helper.make_node("Sigmoid", ["value"], ["positive"]),
            helper.make_node("Sub", ["one", "positive"], ["negative"]),
            helper.make_node("Concat", ["negative", "positive"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ]
        outputs = [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ]
    inputs = [
        helper.make_tensor_value_info("age", TensorProto.FLOAT, [None, 1]),
        helper.make_tensor_value_info("n", TensorProto.FLOAT, [None, 1]),
        helper.make_tensor_value_info("city", TensorProto.STRING, [None, 1]),
    ]
    graph = helper.make_graph(nodes, NAME, inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_export(out: Path, task: str = "binary", *, score_edges: list[float] | None = None) -> Path:
    """model.onnx, model.json (card v2 with a reference) and eval.json for `task` (binary or regression)."""
    out.mkdir(parents=True, exist_ok=True)
    onnx_bytes = _graph(task).SerializeToString()
    (out / "model.onnx").write_bytes(onnx_bytes)
    regression = task == "regression"
    edges = score_edges or ([-3.0, -1.0, 0.0, 1.0, 3.0] if regression else SCORE_EDGES)
    card: dict[str, Any] = {
        "card_version": 2,
        "name": NAME,
        "version": VERSION,
        "created_at": "2026-01-01T00:00:00+00:00",
        "task": task,
        "onnx": {
            "file": "model.onnx",
            "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "opset": 17,
            "inputs": [
                {"name": "age", "dtype": "float32", "features": ["age"]},
                {"name": "n", "dtype": "float32", "features": ["n"]},
                {"name": "city", "dtype": "string", "features": ["city"]},
            ],
            "outputs": {"value": "variable"}
            if regression
            else {"label": "label", "probabilities": "probabilities"},
        },
        "features": FEATURES,
        "metrics": {"rmse": 1.0} if regression else {"roc_auc": 0.9},
        "parity": {"rows": len(EVAL_ROWS), "max_abs_diff": 0.0},
        "lineage": {
            "git_sha": "unknown",
            "data_sha256": "0" * 64,
            "config_sha256": "0" * 64,
            "mlflow_run_id": "0" * 32,
            "environment": "dev",
        },
        "reference": {
            "rows": {"train": 100, "eval": len(EVAL_ROWS)},
            "features": REFERENCE_FEATURES,
            "score": {"edges": edges, "frequencies": [1 / (len(edges) - 1)] * (len(edges) - 1)},
        },
    }
    if not regression:
        card["classes"] = [0, 1]
        card["reference"]["classes"] = {"0": 0.5, "1": 0.5}
    (out / "model.json").write_text(json.dumps(card, indent=2))
    labels = [
        round(predicted(row, task), 3) if regression else int(predicted(row, task) >= 0.5)
        for row in EVAL_ROWS
    ]
    (out / "eval.json").write_text(
        json.dumps({"features": [f["name"] for f in FEATURES], "rows": EVAL_ROWS, "labels": labels})
    )
    return out


def card_of(task: str, features: Sequence[Feature], onnx_part: dict[str, Any]) -> ModelCard:
    """The card of an ONNX graph under test: `onnx_part` holds its inputs and outputs (as `to_onnx` gives
    them); a classifier's classes are 0 and 1."""
    card: dict[str, Any] = {
        "card_version": 2,
        "name": "under-test",
        "version": "0",
        "task": task,
        "onnx": {"file": "m.onnx", "sha256": "0" * 64, "opset": 17, **onnx_part},
        "features": [feature.to_json() for feature in features],
    }
    if task != "regression":
        card["classes"] = [0, 1]
    return parse_card(card)
