"""Load the configured dataset and split it the same way every time."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn import datasets
from sklearn.model_selection import train_test_split

from pipeline.config import ConfigError, DataSpec

Label = int | str


@dataclass(frozen=True)
class Dataset:
    features: list[str]
    x_train: NDArray[np.float64]
    x_test: NDArray[np.float64]
    y_train: NDArray[Any]
    y_test: NDArray[Any]
    sha256: str
    """Hash of the data itself: the CSV file's bytes, or the bundled arrays."""


_BUNDLED = {
    "breast_cancer": datasets.load_breast_cancer,
    "wine": datasets.load_wine,
    "iris": datasets.load_iris,
}


def load_dataset(spec: DataSpec, root: Path) -> Dataset:
    if spec.source == "csv":
        assert spec.path is not None and spec.target is not None  # guaranteed by DataSpec's validator
        features, x, y, digest = _read_csv(root / spec.path, spec.target)
    else:
        bunch = _BUNDLED[spec.dataset]()
        features = [str(name) for name in bunch.feature_names]
        x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
        digest = hashlib.sha256(x.astype("<f8").tobytes() + json.dumps(y.tolist()).encode()).hexdigest()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=spec.test_size, random_state=spec.seed, stratify=y
    )
    return Dataset(features, x_train, x_test, y_train, y_test, digest)


def _read_csv(path: Path, target: str) -> tuple[list[str], NDArray[np.float64], NDArray[Any], str]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"data.path: cannot read {path}: {exc.strerror}") from None
    reader = csv.reader(raw.decode("utf-8").splitlines())
    header = next(reader, None)
    if not header or target not in header:
        found = ", ".join(header or []) or "no header row"
        raise ConfigError(f"data.target: column {target!r} not in {path} (columns: {found})")
    column = header.index(target)
    features = [name for i, name in enumerate(header) if i != column]
    rows: list[list[float]] = []
    labels: list[Label] = []
    for line_no, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ConfigError(f"{path}:{line_no}: expected {len(header)} columns, got {len(row)}")
        try:
            rows.append([float(value) for i, value in enumerate(row) if i != column])
        except ValueError:
            bad = next(
                h
                for i, (h, v) in enumerate(zip(header, row, strict=True))
                if i != column and not _is_float(v)
            )
            raise ConfigError(f"{path}:{line_no}: column {bad!r}: expected a number") from None
        label = row[column]
        labels.append(int(label) if label.lstrip("-").isdigit() else label)
    if len(set(labels)) < 2:
        raise ConfigError(f"{path}: column {target!r} needs at least two classes")
    return features, np.asarray(rows, dtype=np.float64), np.asarray(labels), hashlib.sha256(raw).hexdigest()


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
