"""A released model to score with (a copy of the workspace where version 1 serves dev), and generated
inputs several chunks long: breast-cancer rows resampled with a little noise, a customer id, planted bad
rows."""

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_breast_cancer

CHUNK_ROWS = 1000
PART_ROWS = 1500
PARTS = 4
"""6000 rows in four parts: six chunks of the embedded engine, several Arrow batches for Spark."""
PLANTED = {
    ("part-00000", 7): ("mean radius", None, "mean radius: expected a number, got null"),
    ("part-00000", 8): ("mean radius", None, "mean radius: expected a number, got null"),
    ("part-00001", 100): (
        "mean texture",
        float("nan"),
        "mean texture: expected a finite number, got nan (a missing value is null)",
    ),
    ("part-00002", 200): (
        "worst area",
        float("inf"),
        "worst area: expected a finite number, got inf (a missing value is null)",
    ),
    ("part-00003", 300): (
        "mean area",
        1e39,
        "mean area: expected a finite float32 number, got 1e+39 (beyond its range)",
    ),
}
"""(part, row) -> (feature, value planted, the reject's reason)."""


def tables(shift: float = 1.0, seed: int = 0) -> dict[str, pa.Table]:
    """The parts by name (no suffix); `shift` scales every feature (a drifted batch)."""
    data = load_breast_cancer()
    names = [str(name) for name in data.feature_names]
    rng = np.random.default_rng(seed)
    out = {}
    for p in range(PARTS):
        part = f"part-{p:05d}"
        rows = data.data[rng.integers(0, len(data.data), PART_ROWS)] * rng.normal(1.0, 0.01, (PART_ROWS, 30))
        columns: dict[str, list[float | None]] = {
            name: list(rows[:, j] * shift) for j, name in enumerate(names)
        }
        for (planted_part, row), (feature, value, _) in PLANTED.items():
            if planted_part == part:
                columns[feature][row] = value
        table = pa.table({name: pa.array(values, pa.float64()) for name, values in columns.items()})
        out[part] = table.append_column("customer_id", pa.array(range(p * PART_ROWS, (p + 1) * PART_ROWS)))
    return out


def write_parquet(folder: Path, parts: dict[str, pa.Table]) -> Path:
    folder.mkdir(parents=True)
    for name, table in parts.items():
        pq.write_table(table, folder / f"{name}.parquet", row_group_size=700)
    return folder


def write_csv(folder: Path, parts: dict[str, pa.Table]) -> Path:
    folder.mkdir(parents=True)
    for name, table in parts.items():
        pcsv.write_csv(table, folder / f"{name}.csv")
    return folder


@pytest.fixture(scope="module")
def released(stable_and_candidate: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace where version 1 holds alias dev (and no version holds staging)."""
    root = tmp_path_factory.mktemp("batch") / "workspace"
    shutil.copytree(stable_and_candidate, root)
    return root


@pytest.fixture(scope="module")
def parquet_parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_parquet(tmp_path_factory.mktemp("inputs") / "parquet", tables())


@pytest.fixture(scope="module")
def csv_parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("inputs") / "csv", tables())
