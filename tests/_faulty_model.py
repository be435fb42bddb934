"""Model folders for the fallback tests: a primary whose ONNX graph itself fails or is slow on some
inputs (no switch in the service: the model is what misbehaves), and a fallback version of the same model.

The faulty graph is the plain model's graph behind a guard on its input: a row holding a value below
`RAISE_BELOW` makes a Gather index out of range (onnxruntime raises), a value above `SLOW_ABOVE` makes it
multiply 1000x1000 matrices `_PRODUCTS` times first (about 40 GFLOP). Other rows get the plain answers.
"""

import hashlib
import json
import shutil
from pathlib import Path

import onnx
from onnx import TensorProto, helper

RAISE_BELOW = -1e8
SLOW_ABOVE = 1e8
_SIDE = 1000
_PRODUCTS = 20


def faulty_primary(plain: Path, out: Path, version: str) -> Path:
    """Copy the plain model folder to `out` with the guarded graph and a card for `version`."""
    shutil.copytree(plain, out)
    model = onnx.load(plain / "model.onnx")
    graph = model.graph
    name = graph.input[0].name
    inner = f"{name}_guarded"
    for node in graph.node:
        node.input[:] = [inner if each == name else each for each in node.input]
    i64 = TensorProto.INT64

    def const(
        tensor_name: str, dtype: int, values: list[float] | list[int], dims: list[int]
    ) -> onnx.NodeProto:
        tensor = helper.make_tensor(f"{tensor_name}_value", dtype, dims, values)
        return helper.make_node("Constant", [], [tensor_name], value=tensor)

    guard = [
        const("raise_below", TensorProto.FLOAT, [RAISE_BELOW], []),
        const("slow_above", TensorProto.FLOAT, [SLOW_ABOVE], []),
        const("bad_index", i64, [7], []),
        const("one_value", TensorProto.FLOAT, [0.0], [1]),
        const("side", i64, [_SIDE], [1]),
        const("square", i64, [_SIDE, _SIDE], [2]),
        const("zero", TensorProto.FLOAT, [0.0], []),
        helper.make_node("ReduceMin", [name], ["row_min"], keepdims=0),
        helper.make_node("ReduceMax", [name], ["row_max"], keepdims=0),
        # raise: Gather([0.0], 7) when a value is below RAISE_BELOW, Gather([0.0], 0) otherwise
        helper.make_node("Less", ["row_min", "raise_below"], ["raise_flag"]),
        helper.make_node("Cast", ["raise_flag"], ["raise_int"], to=i64),
        helper.make_node("Mul", ["raise_int", "bad_index"], ["gather_index"]),
        helper.make_node("Gather", ["one_value", "gather_index"], ["gathered"]),
        # slow: [n, SIDE] @ [SIDE, SIDE] with n = SIDE when a value is above SLOW_ABOVE, else 0 rows
        helper.make_node("Greater", ["row_max", "slow_above"], ["slow_flag"]),
        helper.make_node("Cast", ["slow_flag"], ["slow_int"], to=i64),
        helper.make_node("Mul", ["slow_int", "side"], ["slow_rows"]),
        helper.make_node("Concat", ["slow_rows", "side"], ["left_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            ["left_shape"],
            ["left"],
            value=helper.make_tensor("l", TensorProto.FLOAT, [1], [1.0]),
        ),
        helper.make_node(
            "ConstantOfShape",
            ["square"],
            ["right"],
            value=helper.make_tensor("r", TensorProto.FLOAT, [1], [1 / _SIDE]),
        ),
        # each product keeps the values at 1.0: no overflow to inf, whose inf * 0 would poison the answer
        *[
            helper.make_node("MatMul", [f"product{i}" if i else "left", "right"], [f"product{i + 1}"])
            for i in range(_PRODUCTS)
        ],
        helper.make_node("ReduceSum", [f"product{_PRODUCTS}"], ["product_sum"], keepdims=0),
        # both results feed the model's input as +0, so neither branch can be skipped
        helper.make_node("Add", ["gathered", "product_sum"], ["guard_sum"]),
        helper.make_node("Mul", ["guard_sum", "zero"], ["guard_zero"]),
        helper.make_node("Add", [name, "guard_zero"], [inner]),
    ]
    nodes = [*guard, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    (out / "model.onnx").write_bytes(data)
    _rewrite_card(out, version, hashlib.sha256(data).hexdigest())
    return out


def other_version(plain: Path, out: Path, version: str) -> Path:
    """The plain model folder copied to `out` as version `version` (the fallback)."""
    shutil.copytree(plain, out)
    _rewrite_card(out, version, None)
    return out


def _rewrite_card(folder: Path, version: str, sha256: str | None) -> None:
    card = json.loads((folder / "model.json").read_text())
    card["version"] = version
    if sha256 is not None:
        card["onnx"]["sha256"] = sha256
    (folder / "model.json").write_text(json.dumps(card, indent=2))
