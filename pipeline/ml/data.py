"""Load the configured dataset, infer its column types and task once, and split it the same way every time."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn import datasets
from sklearn.model_selection import train_test_split

from model_service.contract.card import Feature, FeatureType
from pipeline.config import ConfigError, DataSpec, Task


@dataclass(frozen=True)
class Dataset:
    columns: list[Feature]
    """Each column as the card describes its feature (type, nullable, categories)."""
    train: pd.DataFrame
    test: pd.DataFrame
    y_train: NDArray[Any]
    y_test: NDArray[Any]
    task: Task
    sha256: str
    """Hash of the data itself: the file's bytes, or the bundled arrays."""

    @property
    def features(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def numeric(self) -> bool:
        """Every feature is a number (float, int or bool): the model takes one float matrix."""
        return all(column.numeric for column in self.columns)

    @property
    def x_train(self) -> NDArray[np.float64]:
        """The training rows as one float matrix (numeric features only; missing values are NaN)."""
        return _matrix(self.train, self.numeric)

    @property
    def x_test(self) -> NDArray[np.float64]:
        """The evaluation rows as one float matrix (numeric features only; missing values are NaN)."""
        return _matrix(self.test, self.numeric)

    def test_rows(self) -> list[list[Any]]:
        """The evaluation rows as a client sends them: numbers, true/false, strings, null for missing."""
        columns = []
        for column in self.columns:
            series = self.test[column.name]
            values: list[Any]
            if column.type == "string":
                values = [None if v == "" and column.nullable else str(v) for v in series]
            elif column.type == "float":
                values = [None if np.isnan(v) else float(v) for v in series.astype(np.float64)]
            else:  # int and bool: nullable ones are float columns (NaN) in the frame
                cast = int if column.type == "int" else bool
                values = [None if v != v else cast(v) for v in series.astype(object)]  # noqa: PLR0124  (NaN)
            columns.append(values)
        return [list(row) for row in zip(*columns, strict=True)]


def _matrix(frame: pd.DataFrame, numeric: bool) -> NDArray[np.float64]:
    if not numeric:
        strings = [str(name) for name, dtype in frame.dtypes.items() if dtype == object]
        raise ValueError(f"string features {strings} have no float matrix: use the data frame")
    return frame.to_numpy(dtype=np.float64, na_value=np.nan)


_BUNDLED = {
    "breast_cancer": (datasets.load_breast_cancer, "binary"),
    "wine": (datasets.load_wine, "multiclass"),
    "iris": (datasets.load_iris, "multiclass"),
    "diabetes": (datasets.load_diabetes, "regression"),
}


def load_dataset(spec: DataSpec, root: Path, task: Task | None = None) -> Dataset:
    """The configured data, split; `task` (model.task) when set, else inferred from the target."""
    if spec.source == "sklearn":
        load, bundled_task = _BUNDLED[spec.dataset]
        bunch = load()
        x = np.asarray(bunch.data, dtype=np.float64)
        y = np.asarray(bunch.target)
        digest = hashlib.sha256(x.astype("<f8").tobytes() + json.dumps(y.tolist()).encode()).hexdigest()
        frame = pd.DataFrame(x, columns=[str(name) for name in bunch.feature_names])
        target = pd.Series(y, name="target")
        where = f"data.dataset {spec.dataset!r}"
        task = _check_task(task or bundled_task, target, where)  # type: ignore[arg-type]
    else:
        assert spec.path is not None and spec.target is not None  # guaranteed by DataSpec's validator
        path = root / spec.path
        frame, target, digest = _read_file(path, spec.source, spec.target)
        where = f"data.target {spec.target!r} in {path}"
        task = _check_task(task, target, where) if task is not None else infer_task(target, where)
    kinds = {str(name): _kind(series) for name, series in frame.items()}
    frame = _normalise(frame, kinds)
    y = target.to_numpy()
    classification = task != "regression"
    try:
        train, test, y_train, y_test = train_test_split(
            frame, y, test_size=spec.test_size, random_state=spec.seed, stratify=y if classification else None
        )
    except ValueError as exc:  # a stratified split needs two rows of each class, one on each side
        msg = (
            f"data.test_size: {where} cannot be split into training and evaluation rows ({exc}); add rows of "
            "the rare classes or change data.test_size"
        )
        raise ConfigError(msg) from None
    columns = infer_columns(frame, train, kinds)
    return Dataset(
        columns,
        train.reset_index(drop=True),
        test.reset_index(drop=True),
        np.asarray(y_train),
        np.asarray(y_test),
        task,
        digest,
    )


def _read_file(path: Path, source: str, target: str) -> tuple[pd.DataFrame, pd.Series[Any], str]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"data.path: cannot read {path}: {exc.strerror}") from None
    try:
        frame = pd.read_csv(path) if source == "csv" else pd.read_parquet(path, engine="pyarrow")
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise ConfigError(f"data.path: {path} is not a readable {source} file: {exc}") from None
    if target not in frame.columns:
        found = ", ".join(str(c) for c in frame.columns) or "no columns"
        raise ConfigError(f"data.target: column {target!r} not in {path} (columns: {found})")
    if len(frame.columns) < 2:
        raise ConfigError(f"data.path: {path} has no feature column besides the target {target!r}")
    labels = frame[target]
    if labels.isna().any():
        rows = [int(i) for i in np.flatnonzero(labels.isna().to_numpy())[:5]]
        raise ConfigError(f"data.target: column {target!r} in {path} has missing values (rows {rows})")
    if labels.dtype == object:
        labels = labels.astype(str)
    return frame.drop(columns=[target]), labels, hashlib.sha256(raw).hexdigest()


def _normalise(frame: pd.DataFrame, kinds: dict[str, FeatureType]) -> pd.DataFrame:
    """One dtype per feature type: float64 (NaN for missing), int64, bool, or object of str ("" missing)."""
    out = {}
    for name, series in frame.items():
        kind = kinds[str(name)]
        if kind == "string":
            out[str(name)] = series.astype(object).where(series.notna(), "").astype(str).astype(object)
        elif kind == "bool" and series.notna().all():
            out[str(name)] = series.astype(bool)
        elif kind == "int" and series.notna().all():
            out[str(name)] = series.astype(np.int64)
        else:
            out[str(name)] = pd.to_numeric(series.astype(object), errors="raise").astype(np.float64)
    return pd.DataFrame(out)


def _kind(series: pd.Series[Any]) -> FeatureType:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    present = series.dropna()
    if len(present) and all(isinstance(v, bool | np.bool_) for v in present):
        return "bool"  # a boolean column with missing values reads as object
    return "string"


def infer_columns(frame: pd.DataFrame, train: pd.DataFrame, kinds: dict[str, FeatureType]) -> list[Feature]:
    """Each feature's type (as read), nullability (all rows) and categories (training rows)."""
    columns = []
    for name in frame.columns:
        kind = kinds[str(name)]
        if kind == "string":
            seen = sorted({str(v) for v in train[name]} - {""})
            columns.append(Feature(str(name), kind, bool((frame[name] == "").any()), tuple(seen)))
        else:
            columns.append(Feature(str(name), kind, bool(frame[name].isna().any())))
    return columns


def infer_task(target: pd.Series[Any], where: str) -> Task:
    """Classification for strings, booleans or two values; regression for fractional numbers; else ask."""
    values = target.unique()
    numeric = pd.api.types.is_numeric_dtype(target.dtype) and not pd.api.types.is_bool_dtype(target.dtype)
    if numeric and not np.all(np.mod(values.astype(np.float64), 1) == 0):
        return "regression"
    if len(values) == 2:
        return "binary"
    if not numeric:
        return "multiclass"
    raise ConfigError(
        f"model.task: {where} holds {len(values)} distinct whole numbers, which could be classes or "
        "values; set model.task to multiclass or regression in the environment's YAML"
    )


def _check_task(task: Task, target: pd.Series[Any], where: str) -> Task:
    classes = target.nunique()
    if task == "regression" and not (
        pd.api.types.is_numeric_dtype(target.dtype) and not pd.api.types.is_bool_dtype(target.dtype)
    ):
        raise ConfigError(f"model.task: regression needs a numeric target; {where} is not numeric")
    if task == "binary" and classes != 2:
        raise ConfigError(f"model.task: binary needs two classes; {where} has {classes}")
    if task == "multiclass" and classes < 3:
        raise ConfigError(f"model.task: multiclass needs three classes or more; {where} has {classes}")
    return task
