"""What goes over the wire for one model card: rows checked against the card and put in its feature order,
the /v1 and /v2 request bodies, and the answers read back into a `Prediction`. No I/O.

/v2 requests carry one tensor per ONNX input of the card (FP32, FP64, INT64, BYTES), as binary tensor data
(the Open Inference Protocol's extension, model_service/protocol/v2_binary.py) unless `binary=False`; an
input holding a null goes as JSON in the same request, since binary floats are finite and BYTES has no null.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from model_client.errors import ClientError, RowError
from model_service.contract.card import CardError, Feature, ModelCard, OnnxInput, parse_card

Row = Mapping[str, Any] | Sequence[Any]
INFERENCE_HEADER = "inference-header-content-length"
_PACK_FORMATS = {"FP32": "f", "FP64": "d", "INT64": "q"}
_OUTPUT_FORMATS = {"FP32": "f", "FP64": "d", "INT64": "q", "INT32": "i"}


@dataclass(frozen=True)
class Prediction:
    """One call's answer: a prediction per row (a class, or a regression's predicted value) and, for a
    classifier, the class probabilities per row (None for a regression)."""

    predictions: list[Any]
    probabilities: list[list[float]] | None
    model_name: str
    model_version: str
    request_id: str


@dataclass
class Codec:
    """Rows in and answers out for the card GET /v1/model answered (`card_json`)."""

    card_json: dict[str, Any]

    @functools.cached_property
    def model_card(self) -> ModelCard:
        try:
            return parse_card(self.card_json)
        except CardError as exc:
            raise ClientError(
                f"model card (GET /v1/model): {exc}; this client reads card versions 1 and 2"
            ) from None

    @functools.cached_property
    def refused(self) -> tuple[frozenset[str] | None, ...]:
        """Per feature, the only strings accepted when the model refuses other categories; else None."""
        return tuple(
            frozenset(f.categories) if f.unknown_category == "error" and f.categories is not None else None
            for f in self.model_card.features
        )

    def matrix(self, rows: Sequence[Row]) -> list[list[Any]]:
        """Rows as lists in the card's feature order, each value checked against its feature (`RowError`)."""
        features = self.model_card.features
        names = {feature.name for feature in features}
        out = []
        for i, row in enumerate(rows):
            if isinstance(row, Mapping):
                unknown = sorted(set(row) - names)
                if unknown:
                    raise RowError(
                        f"rows[{i}]: unknown feature {unknown[0]!r}; the card names {len(features)}"
                    )
                missing = next((f.name for f in features if f.name not in row and f.default is None), None)
                if missing is not None:
                    raise RowError(f"rows[{i}]: missing feature {missing!r}")
                values = [row.get(feature.name, feature.default) for feature in features]
            elif isinstance(row, str | bytes) or len(row) != len(features):
                raise RowError(
                    f"rows[{i}]: expected {len(features)} values in the card's order or an object keyed by "
                    f"feature name, got {type(row).__name__ if isinstance(row, str | bytes) else len(row)}"
                )
            else:
                values = list(row)
            out.append(
                [
                    _checked(f"rows[{i}][{f.name!r}]", value, f, refused)
                    for value, f, refused in zip(values, features, self.refused, strict=True)
                ]
            )
        return out

    # -- /v1 ------------------------------------------------------------------------------------------
    def v1_body(self, rows: Sequence[Row]) -> bytes:
        return json.dumps({"instances": self.matrix(rows)}).encode()

    def v1_answer(self, response: httpx.Response) -> Prediction:
        body = response.json()
        return Prediction(
            predictions=body["predictions"],
            probabilities=body.get("probabilities"),
            model_name=body["model"]["name"],
            model_version=body["model"]["version"],
            request_id=body["request_id"],
        )

    # -- /v2 ------------------------------------------------------------------------------------------
    def v2_path(self) -> str:
        return f"/v2/models/{self.model_card.name}/infer"

    def v2_request(
        self, matrix: list[list[Any]], request_id: str, *, binary: bool
    ) -> tuple[bytes, dict[str, str]]:
        """One tensor per ONNX input of the card, `[N, its features]` in its datatype; as binary tensor
        data when `binary`, except an input holding a null (binary floats are finite, BYTES has no null),
        which goes as JSON `data` in the same request (the extension decides per input)."""
        tensors, chunks = [], []
        for spec in self.model_card.inputs:
            numeric = spec.v2_datatype != "BYTES"
            data = [
                int(value) if numeric and type(value) is bool else value  # bool → 0/1, as the card says
                for row in matrix
                for value in (row[column] for column in spec.columns)
            ]
            tensor: dict[str, Any] = {
                "name": spec.name,
                "shape": [len(matrix), len(spec.columns)],
                "datatype": spec.v2_datatype,
            }
            if binary and None not in data:
                chunk = self._pack(spec, data)
                tensor["parameters"] = {"binary_data_size": len(chunk)}
                chunks.append(chunk)
            else:
                tensor["data"] = data
            tensors.append(tensor)
        if not binary:
            body = {"id": request_id, "inputs": tensors}
            return json.dumps(body).encode(), {"content-type": "application/json"}
        header = json.dumps(
            {"id": request_id, "inputs": tensors, "parameters": {"binary_data_output": True}}
        ).encode()
        return b"".join((header, *chunks)), {
            "content-type": "application/octet-stream",
            INFERENCE_HEADER: str(len(header)),
        }

    def _pack(self, spec: OnnxInput, data: list[Any]) -> bytes:
        if spec.v2_datatype == "BYTES":
            encoded = [value.encode() for value in data]
            return b"".join(struct.pack("<I", len(raw)) + raw for raw in encoded)
        code = _PACK_FORMATS[spec.v2_datatype]
        try:
            return struct.pack(f"<{len(data)}{code}", *data)
        except (OverflowError, struct.error):
            k = next(k for k, value in enumerate(data) if not _packs(code, value))
            row, j = divmod(k, len(spec.columns))
            name = self.model_card.features[spec.columns[j]].name
            raise RowError(f"rows[{row}][{name!r}]: {data[k]} is beyond {spec.v2_datatype}'s range") from None

    def v2_answer(self, response: httpx.Response) -> Prediction:
        raw = response.content
        length = response.headers.get(INFERENCE_HEADER)
        split = int(length) if length is not None else len(raw)
        body = json.loads(raw[:split])
        offset = split
        outputs: dict[str, list[Any]] = {}
        shapes: dict[str, list[int]] = {}
        for output in body["outputs"]:
            size = output.get("parameters", {}).get("binary_data_size")
            if size is None:
                outputs[output["name"]] = output["data"]
            else:
                outputs[output["name"]] = _unpack(output["datatype"], raw[offset : offset + size])
                offset += size
            shapes[output["name"]] = output["shape"]
        names = self.model_card.outputs
        probabilities = None
        if "value" in names:  # a regression: one value per row, from [N, 1] or [N]
            predictions = outputs[names["value"]]
        else:
            predictions = outputs[names["label"]]
            flat = outputs[names["probabilities"]]
            n_classes = shapes[names["probabilities"]][1]
            probabilities = [flat[i : i + n_classes] for i in range(0, len(flat), n_classes)]
        return Prediction(
            predictions=predictions,
            probabilities=probabilities,
            model_name=body["model_name"],
            model_version=body["model_version"],
            request_id=body["id"],
        )


_EXPECTED = {"float": "a number", "int": "an integer", "bool": "true or false", "string": "a string"}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_LISTED_CATEGORIES = 20


def _checked(where: str, value: Any, feature: Feature, refused: frozenset[str] | None) -> Any:
    """The value as JSON carries it, when it fits the feature (as the service checks it); raises
    `RowError` naming `where` otherwise. `refused`: the only strings accepted, when the model refuses
    other categories. NaN stands for null (pandas' missing value); numpy numbers become Python's."""
    expected = _EXPECTED.get(feature.type, feature.type) + (" or null" if feature.nullable else "")
    number = _number(value)
    if value is None or (isinstance(number, float) and math.isnan(number)):
        if feature.nullable:
            return None
        raise RowError(f"{where}: expected {expected}, got {'null' if value is None else 'NaN'}")
    kind = feature.type
    if kind == "string" and isinstance(value, str):
        if refused is not None and value not in refused:
            listed = sorted(refused)
            shown = ", ".join(repr(c) for c in listed[:_MAX_LISTED_CATEGORIES])
            more = f", ... ({len(listed)} in all)" if len(listed) > _MAX_LISTED_CATEGORIES else ""
            raise RowError(
                f"{where}: unknown category {value[:64]!r}; the model was trained on [{shown}{more}] and "
                "refuses others"
            )
        return value
    is_bool = isinstance(value, bool)  # a bool is an int in Python, never a number in the card
    if kind == "bool" and is_bool:
        return value
    if kind == "int" and not is_bool and isinstance(value, numbers.Integral):
        integer = int(value)
        if not _INT64_MIN <= integer <= _INT64_MAX:
            raise RowError(f"{where}: expected an integer within int64, got {integer}")
        return integer
    if kind == "float" and number is not None:
        if isinstance(number, float) and not math.isfinite(number):
            raise RowError(f"{where}: expected a finite number, got {number}")  # JSON has no infinity
        return number
    got = type(value).__name__
    if kind == "int" and number is not None:
        got = f"{value!r} (a {got}; send integers as int)"
    raise RowError(f"{where}: expected {expected} ({kind}), got {got}")


def _number(value: Any) -> int | float | None:
    """A real number that is not a bool as Python's int or float (numpy's numbers too); else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    real: Any = value
    return real if isinstance(real, int) else float(real)


def _packs(code: str, value: Any) -> bool:
    try:
        struct.pack(f"<{code}", value)
    except (OverflowError, struct.error):
        return False
    return True


def _unpack(datatype: str, raw: bytes) -> list[Any]:
    if datatype == "BYTES":
        out, offset = [], 0
        while offset < len(raw):
            (length,) = struct.unpack_from("<I", raw, offset)
            out.append(raw[offset + 4 : offset + 4 + length].decode())
            offset += 4 + length
        return out
    code = _OUTPUT_FORMATS[datatype]
    return list(struct.unpack(f"<{len(raw) // struct.calcsize(code)}{code}", raw))
