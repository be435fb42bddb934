"""Request payloads → a numpy matrix `[N, F]` in the model's dtype, with plain code (no pydantic on the hot path).

Every rejection is an `InvalidInput` (422) whose message names the field and what was expected.

Over 400 lines on purpose: the v1 and v2 parsers are hand-written for the hot path and share the
per-feature converters; splitting them would put one request's path in two files.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from types import MappingProxyType
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from model_service.contract.card import Feature, ModelCard, OnnxInput
from model_service.protocol.errors import InvalidInput

_NUMBER = frozenset({int, float})  # exact types: JSON true/false arrive as bool, which is not a number here
V2_DATATYPES = {"FP32": np.float32, "FP64": np.float64}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_PYTHON_RANGE_CHECK_MAX = 256
"""Numbers per request up to which the float32 range check runs in Python (cheaper than numpy there)."""


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _check_row_length(field: str, i: int, row: object, n_features: int, what: str) -> None:
    if type(row) is not list:
        raise InvalidInput(f"{field}[{i}]: expected a list of {n_features} {what}, got {_type_name(row)}")
    if len(row) != n_features:
        raise InvalidInput(f"{field}[{i}]: expected {n_features} {what}, got {len(row)}")


@dataclass(frozen=True)
class RowParser:
    """Parses rows for one model: its feature names (order matters), dtype and row limit, and the values
    filled in for features a request leaves out (the card's defaults: docs/model-card.md)."""

    features: tuple[str, ...]
    dtype: np.dtype[Any]
    max_rows: int
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pick", itemgetter(*self.features))
        object.__setattr__(self, "_feature_set", frozenset(self.features))
        # A list row may end before the last features when each of those has a default: the rows of
        # clients of a release without them (a feature added with a default is appended).
        tail: list[Any] = []
        for name in reversed(self.features):
            if name not in self.defaults:
                break
            tail.insert(0, self.defaults[name])
        object.__setattr__(self, "_tail", tuple(tail))

    def v1(self, body: object) -> npt.NDArray[Any]:
        """`{"instances": [[...]]}`, `{"instances": [{...}]}` or a bare `[{...}]`."""
        field, rows, _ = self.rows_of(body)
        return self._matrix(field, rows)

    def rows_of(self, body: object) -> tuple[str, list[Any], bool]:
        """(field, rows as lists in feature order, whether they came as objects) of a v1 body."""
        if isinstance(body, dict):
            if "instances" not in body:
                raise InvalidInput(
                    "body: expected an object with 'instances' (a list of rows) or a list of objects keyed "
                    f"by feature name; got keys {sorted(body)[:5]}"
                )
            rows = body["instances"]
            field = "instances"
        else:
            rows = body
            field = "body"
        if type(rows) is not list:
            raise InvalidInput(f"{field}: expected a list of rows, got {_type_name(rows)}")
        self.check_count(field, len(rows))
        if type(rows[0]) is dict:
            return field, [self._from_object(field, i, row) for i, row in enumerate(rows)], True
        if field == "body":
            raise InvalidInput(
                "body: a bare list must hold objects keyed by feature name; wrap lists of "
                'numbers as {"instances": [[...]]}'
            )
        if self._tail:  # type: ignore[attr-defined]
            rows = [self._completed(row) for row in rows]
        return field, rows, False

    def _completed(self, row: object) -> object:
        """A list row that ends before features with defaults, with their defaults appended."""
        tail: tuple[Any, ...] = self._tail  # type: ignore[attr-defined]
        short = len(self.features) - len(row) if type(row) is list else 0
        return [*row, *tail[len(tail) - short :]] if 0 < short <= len(tail) else row  # type: ignore[misc]

    def v2(self, tensor: object, expected_name: str) -> npt.NDArray[Any]:
        """One Open Inference Protocol input tensor of shape [N, F], FP32 or FP64, data flat or nested."""
        if type(tensor) is not dict:
            raise InvalidInput(
                f"inputs[0]: expected an object with name, shape, datatype, data; got {_type_name(tensor)}"
            )
        name = tensor.get("name")
        if type(name) is not str or name != expected_name:
            raise InvalidInput(f"inputs[0].name: expected {expected_name!r}, got {name!r}")
        datatype = tensor.get("datatype")
        if type(datatype) is not str or datatype not in V2_DATATYPES:
            raise InvalidInput(
                f"inputs[0].datatype: expected one of {sorted(V2_DATATYPES)}, got {datatype!r}"
            )
        shape = tensor.get("shape")
        n_features = len(self.features)
        if (
            type(shape) is not list
            or len(shape) != 2
            or any(type(dim) is not int for dim in shape)
            or shape[1] != n_features
        ):
            raise InvalidInput(f"inputs[0].shape: expected [N, {n_features}], got {shape!r}")
        self.check_count("inputs[0].shape[0]", shape[0])
        data = tensor.get("data")
        if type(data) is np.ndarray:  # binary tensor data, decoded by model_service/protocol/v2_binary.py
            return self._binary(data, shape[0])
        if type(data) is not list:
            raise InvalidInput(f"inputs[0].data: expected a list of numbers, got {_type_name(data)}")
        if data and type(data[0]) is list:
            return self._matrix("inputs[0].data", data, expected_rows=shape[0])
        expected = shape[0] * n_features
        if len(data) != expected:
            raise InvalidInput(
                f"inputs[0].data: expected {expected} numbers for shape {shape}, got {len(data)}"
            )
        self._check_numbers("inputs[0].data", data)
        return self._array("inputs[0].data", data, (shape[0], n_features))

    def _binary(self, data: npt.NDArray[Any], n_rows: int) -> npt.NDArray[Any]:
        n_features = len(self.features)
        if len(data) != n_rows * n_features:
            raise InvalidInput(
                f"inputs[0].data: expected {n_rows * n_features} numbers for shape {[n_rows, n_features]}, "
                f"got {len(data)}"
            )
        if data.dtype == self.dtype:
            return data.reshape(n_rows, n_features)
        return self._array("inputs[0].data", data, (n_rows, n_features))  # type: ignore[arg-type]

    def check_count(self, field: str, n: int) -> None:
        if n < 1:
            raise InvalidInput(f"{field}: expected at least 1 row, got {n}")
        if n > self.max_rows:
            raise InvalidInput(f"{field}: expected at most {self.max_rows} rows per request, got {n}")

    def _from_object(self, field: str, i: int, row: object) -> list[object]:
        if type(row) is not dict:
            raise InvalidInput(
                f"{field}[{i}]: expected an object keyed by feature name, got {_type_name(row)}"
            )
        if len(row) != len(self.features) or row.keys() != self._feature_set:  # type: ignore[attr-defined]
            missing = [f for f in self.features if f not in row]
            required = [f for f in missing if f not in self.defaults]
            if required:
                raise InvalidInput(f"{field}[{i}]: missing feature {required[0]!r} ({len(required)} missing)")
            unknown = sorted(str(k) for k in row if k not in self._feature_set)  # type: ignore[attr-defined]
            if unknown:
                raise InvalidInput(
                    f"{field}[{i}]: unknown feature {unknown[0]!r}; expected {len(self.features)} "
                    "features named as in GET /v1/model"
                )
            row = {**{name: self.defaults[name] for name in missing}, **row}
        return list(self._pick(row))  # type: ignore[attr-defined]

    def _matrix(self, field: str, rows: list[Any], expected_rows: int | None = None) -> npt.NDArray[Any]:
        if expected_rows is not None and len(rows) != expected_rows:
            raise InvalidInput(f"{field}: expected {expected_rows} rows for the given shape, got {len(rows)}")
        n_features = len(self.features)
        for row in rows:
            if type(row) is not list or len(row) != n_features or not _NUMBER.issuperset(map(type, row)):
                self._reject_rows(field, rows)
        return self._array(field, rows)

    def _reject_rows(self, field: str, rows: list[Any]) -> NoReturn:
        """Name the first row that is not a list of numbers of the right length (the fast test failed)."""
        for i, row in enumerate(rows):
            _check_row_length(field, i, row, len(self.features), "numbers")
            self._check_numbers(f"{field}[{i}]", row)
        raise AssertionError("a row failed the fast test but none fails the detailed one")

    def _check_numbers(self, field: str, values: list[Any]) -> None:
        if _NUMBER.issuperset(map(type, values)):
            return
        j, bad = next((j, v) for j, v in enumerate(values) if type(v) not in _NUMBER)
        name = f" ({self.features[j]!r})" if field.startswith(("instances[", "body[")) else ""
        raise InvalidInput(f"{field}[{j}]{name}: expected a number, got {_type_name(bad)}")

    def _array(self, field: str, values: list[Any], shape: tuple[int, int] | None = None) -> npt.NDArray[Any]:
        """Checked numbers → the model's matrix. orjson gives finite doubles (it refuses NaN, infinities
        and numbers beyond float64), so only a float32 model needs a range check: in Python for a few
        numbers (a one-row request: ~0.5 µs, where numpy's abs and max cost ~3.5 µs), in numpy for more."""
        if self.dtype == np.float32 and _within_float32(
            values, nested=shape is None, n_features=len(self.features)
        ):
            matrix = np.asarray(values, dtype=np.float32)
            return matrix if shape is None else matrix.reshape(shape)
        matrix = np.asarray(values, dtype=np.float64)
        if shape is not None:
            matrix = matrix.reshape(shape)
        if self.dtype == np.float64:
            return matrix
        if np.abs(matrix).max() <= _FLOAT32_MAX:
            return matrix.astype(self.dtype)
        i, j = (int(k) for k in np.argwhere(np.abs(matrix) > _FLOAT32_MAX)[0])
        raise InvalidInput(
            f"{field}[{i}][{j}] ({self.features[j]!r}): expected a finite {self.dtype} number, "
            f"got {matrix[i, j]} (beyond its range)"
        )


def _within_float32(values: list[Any], *, nested: bool, n_features: int) -> bool:
    """True when a few numbers (rows of `n_features`, or flat) are all within float32's range; False
    when one is not, or when there are too many to check in Python (numpy checks those)."""
    if (len(values) * n_features if nested else len(values)) > _PYTHON_RANGE_CHECK_MAX:
        return False
    highest, lowest = (max(map(max, values)), min(map(min, values))) if nested else (max(values), min(values))
    return bool(highest <= _FLOAT32_MAX and lowest >= -_FLOAT32_MAX)


# --- typed features (card version 2: int, bool, string, nullable; several inputs) ----------------------
_NUMPY_OF = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "string": object}
_ACCEPTED: dict[str, frozenset[type]] = {
    "float": _NUMBER,
    "int": frozenset({int}),
    "bool": frozenset({bool}),
    "string": frozenset({str}),
}
_EXPECTED = {"float": "a number", "int": "an integer", "bool": "true or false", "string": "a string"}
_KIND_OF_DATATYPE = {"FP32": "float", "FP64": "float", "INT64": "int", "BOOL": "bool", "BYTES": "string"}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_LISTED_CATEGORIES = 20


@dataclass(frozen=True)
class Batch:
    """Parsed rows of a typed model: the ONNX feeds, and each feature's values (null as NaN or "")."""

    n: int
    feeds: dict[str, npt.NDArray[Any]]
    columns: list[list[Any]]


class TypedRowParser:
    """Parses rows for a card whose features are not all non-null floats in one input: each value is
    checked by its feature's type, then the columns are stacked into each ONNX input's dtype."""

    def __init__(self, card: ModelCard, max_rows: int) -> None:
        self.card = card
        self._envelope = RowParser(card.feature_names, np.dtype(np.float64), max_rows, card.defaults)
        self._inputs = {spec.name: spec for spec in card.inputs}
        # A nullable feature's missing values were "" in training (the card lists categories without it),
        # so the encoder knows "": a null is never an unknown category.
        self._categories = [
            frozenset(f.categories) | ({""} if f.nullable else set())
            if f.categories is not None and f.unknown_category == "error"
            else None
            for f in card.features
        ]
        self._float32_columns = frozenset(
            c for spec in card.inputs if spec.dtype == "float32" for c in spec.columns
        )

    def v1(self, body: object) -> Batch:
        """`{"instances": [[...]]}`, `{"instances": [{...}]}` or a bare `[{...}]`, values typed per feature."""
        field, rows, objects = self._envelope.rows_of(body)
        for i, row in enumerate(rows):
            _check_row_length(field, i, row, self.card.n_features, "values")
        columns = []
        for j, feature in enumerate(self.card.features):

            def where(i: int, j: int = j, name: str = feature.name) -> str:
                return f"{field}[{i}].{name}" if objects else f"{field}[{i}][{j}] ({name!r})"

            values = [row[j] for row in rows]
            columns.append(self._column(values, feature.type, j, where))
        return self._batch(len(rows), columns)

    def v2(self, tensors: object) -> Batch:
        """Open Inference Protocol inputs, one tensor per ONNX input of the card (by name, any order)."""
        expected = list(self._inputs)
        if type(tensors) is not list or len(tensors) != len(expected):
            raise InvalidInput(f"inputs: expected a list of {len(expected)} tensors named {expected}")
        n_rows: int | None = None
        columns: list[list[Any] | None] = [None] * self.card.n_features
        seen: set[str] = set()
        for k, tensor in enumerate(tensors):
            if type(tensor) is not dict:
                raise InvalidInput(
                    f"inputs[{k}]: expected an object with name, shape, datatype, data; got {_type_name(tensor)}"
                )
            name = tensor.get("name")
            if type(name) is not str or name not in self._inputs:
                raise InvalidInput(f"inputs[{k}].name: expected one of {expected}, got {name!r}")
            if name in seen:
                raise InvalidInput(f"inputs[{k}].name: {name!r} given twice")
            seen.add(name)
            spec = self._inputs[name]
            n = self._v2_tensor(f"inputs[{k}]", tensor, spec, columns)
            if n_rows is not None and n != n_rows:
                raise InvalidInput(f"inputs[{k}].shape[0]: expected {n_rows} rows as inputs[0], got {n}")
            n_rows = n
        assert n_rows is not None
        filled = [column for column in columns if column is not None]
        return self._batch(n_rows, filled)

    def _v2_tensor(
        self, at: str, tensor: dict[str, Any], spec: OnnxInput, columns: list[list[Any] | None]
    ) -> int:
        """Check one tensor and put its features' values into `columns`; returns its rows."""
        width = len(spec.columns)
        allowed = [spec.v2_datatype]
        if width == 1 and self.card.features[spec.columns[0]].type == "bool":
            allowed.append("BOOL")
        datatype = tensor.get("datatype")
        if type(datatype) is not str or datatype not in allowed:
            raise InvalidInput(
                f"{at}.datatype: expected {' or '.join(allowed)} for {spec.name!r}, got {datatype!r}"
            )
        shape = tensor.get("shape")
        valid_shape = (
            type(shape) is list
            and all(type(dim) is int for dim in shape)
            and ((len(shape) == 2 and shape[1] == width) or (len(shape) == 1 and width == 1))
        )
        if not valid_shape:
            accepted = f"[N, {width}]" + (" or [N]" if width == 1 else "")
            raise InvalidInput(f"{at}.shape: expected {accepted}, got {shape!r}")
        n: int = shape[0]  # type: ignore[index]  # checked just above
        self._envelope.check_count(f"{at}.shape[0]", n)
        data = tensor.get("data")
        # Binary tensor data, decoded flat by model_service/protocol/v2_binary.py.
        if type(data) is np.ndarray:
            data = _binary_values(f"{at}.data", data)
        if type(data) is not list:
            raise InvalidInput(f"{at}.data: expected a list, got {_type_name(data)}")
        if data and type(data[0]) is list:
            if len(data) != n or any(type(row) is not list or len(row) != width for row in data):
                raise InvalidInput(f"{at}.data: expected {n} rows of {width} values for shape {shape}")
            data = [value for row in data for value in row]
        elif len(data) != n * width:
            raise InvalidInput(f"{at}.data: expected {n * width} values for shape {shape}, got {len(data)}")
        kind = _KIND_OF_DATATYPE[datatype]
        for j, column in enumerate(spec.columns):

            def where(i: int, j: int = j, name: str = spec.features[j]) -> str:
                return f"{at}.data[{i * width + j}] ({name!r})"

            columns[column] = self._column(data[j::width], kind, column, where)
        return n

    def _column(self, values: list[Any], kind: str, column: int, where: Any) -> list[Any]:
        """One feature's values checked as `kind` (the feature's type, or the v2 tensor's datatype); null
        becomes NaN (numbers) or "" (strings)."""
        feature: Feature = self.card.features[column]
        accepted = _ACCEPTED[kind]
        types = set(map(type, values))
        has_null = type(None) in types
        if not accepted.issuperset(types - {type(None)}) or (has_null and not feature.nullable):
            i, bad = next(
                (i, v)
                for i, v in enumerate(values)
                if type(v) not in accepted and (v is not None or not feature.nullable)
            )
            got = "a number with a fraction" if kind == "int" and type(bad) is float else _type_name(bad)
            null = " or null" if feature.nullable else ""
            raise InvalidInput(f"{where(i)}: expected {_EXPECTED[kind]}{null}, got {got}")
        if kind == "string":
            if has_null:
                values = ["" if v is None else v for v in values]
            categories = self._categories[column]
            if categories is not None and not categories.issuperset(values):
                i, bad = next((i, v) for i, v in enumerate(values) if v not in categories)
                listed = sorted(feature.categories or ())  # as the card lists them
                shown = ", ".join(repr(c) for c in listed[:_MAX_LISTED_CATEGORIES])
                more = f", ... ({len(listed)} in all)" if len(listed) > _MAX_LISTED_CATEGORIES else ""
                raise InvalidInput(
                    f"{where(i)}: unknown category {bad[:64]!r}; the model was trained on [{shown}{more}]"
                )
            return values
        if kind == "int" and types:
            outside = next(
                (i for i, v in enumerate(values) if v is not None and not _INT64_MIN <= v <= _INT64_MAX), None
            )
            if outside is not None:
                raise InvalidInput(
                    f"{where(outside)}: expected an integer within int64, got {values[outside]}"
                )
        if has_null:
            values = [np.nan if v is None else v for v in values]
        if column in self._float32_columns and types:
            beyond = next((i for i, v in enumerate(values) if abs(v) > _FLOAT32_MAX), None)  # NaN: False
            if beyond is not None:
                raise InvalidInput(
                    f"{where(beyond)}: expected a finite float32 number, got {values[beyond]} (beyond its range)"
                )
        return values

    def _batch(self, n: int, columns: list[list[Any]]) -> Batch:
        feeds = {}
        for spec in self.card.inputs:
            dtype = _NUMPY_OF[spec.dtype]
            if len(spec.columns) == 1:
                matrix = np.asarray(columns[spec.columns[0]], dtype=dtype).reshape(n, 1)
            else:
                matrix = np.column_stack([np.asarray(columns[c], dtype=dtype) for c in spec.columns])
            feeds[spec.name] = matrix
        return Batch(n, feeds, columns)


def _binary_values(field: str, data: npt.NDArray[Any]) -> list[Any]:
    """A binary tensor's values as JSON gives them: numbers and booleans, and BYTES elements (bytes) as
    text, which is what a string feature takes."""
    if data.dtype != object:
        return data.tolist()  # type: ignore[no-any-return]
    values = []
    for i, element in enumerate(data):
        try:
            values.append(element.decode())
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"{field}[{i}]: expected UTF-8 text; byte {exc.start} of this element is not UTF-8"
            ) from None
    return values
