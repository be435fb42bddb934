"""Request payloads → a numpy matrix `[N, F]` in the model's dtype, with plain code (no pydantic on the hot path).

Every rejection is an `InvalidInput` (422) whose message names the field and what was expected.
"""

from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from model_service.errors import InvalidInput

_NUMBER = frozenset({int, float})  # exact types: JSON true/false arrive as bool, which is not a number here
V2_DATATYPES = {"FP32": np.float32, "FP64": np.float64}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_PYTHON_RANGE_CHECK_MAX = 256
"""Numbers per request up to which the float32 range check runs in Python (cheaper than numpy there)."""


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


@dataclass(frozen=True)
class RowParser:
    """Parses rows for one model: its feature names (order matters), dtype and row limit."""

    features: tuple[str, ...]
    dtype: np.dtype[Any]
    max_rows: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pick", itemgetter(*self.features))
        object.__setattr__(self, "_feature_set", frozenset(self.features))

    def v1(self, body: object) -> npt.NDArray[Any]:
        """`{"instances": [[...]]}`, `{"instances": [{...}]}` or a bare `[{...}]`."""
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
        self._check_count(field, len(rows))
        if type(rows[0]) is dict:
            rows = [self._from_object(field, i, row) for i, row in enumerate(rows)]
        elif field == "body":
            raise InvalidInput(
                "body: a bare list must hold objects keyed by feature name; wrap lists of "
                'numbers as {"instances": [[...]]}'
            )
        return self._matrix(field, rows)

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
        self._check_count("inputs[0].shape[0]", shape[0])
        data = tensor.get("data")
        if type(data) is np.ndarray:  # binary tensor data, decoded by model_service/v2_binary.py
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

    def _check_count(self, field: str, n: int) -> None:
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
            if missing:
                raise InvalidInput(f"{field}[{i}]: missing feature {missing[0]!r} ({len(missing)} missing)")
            unknown = sorted(str(k) for k in row if k not in self._feature_set)  # type: ignore[attr-defined]
            raise InvalidInput(
                f"{field}[{i}]: unknown feature {unknown[0]!r}; expected {len(self.features)} "
                "features named as in GET /v1/model"
            )
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
        n_features = len(self.features)
        for i, row in enumerate(rows):
            if type(row) is not list:
                raise InvalidInput(
                    f"{field}[{i}]: expected a list of {n_features} numbers, got {_type_name(row)}"
                )
            if len(row) != n_features:
                raise InvalidInput(f"{field}[{i}]: expected {n_features} numbers, got {len(row)}")
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
