"""The embedded engine's memory is bounded by the chunk, not by the input: its peak resident memory on
an input eight times larger (one part, so a reader that kept the part's pages would show) stays put."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import export_model

REPO = Path(__file__).parents[3]
CHUNK_ROWS = 10_000
GROWTH_BOUND_MIB = 40
"""What eight times the rows may add to the peak; the larger part alone is some 200 MiB more as float64."""


def _part(folder: Path, features: list[str], rows: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    table = pa.table({name: rng.normal(10.0, 3.0, rows) for name in features})
    pq.write_table(table, folder / "part-00000.parquet", row_group_size=CHUNK_ROWS)
    return folder


def _peak_mib(model: Path, source: Path, out: Path) -> float:
    """The embedded engine's peak RSS scoring `source`, in a process of its own (the bench's measurement)."""
    command = [sys.executable, "-m", "benchmarks.batch", "--measure", "embedded", "--model-dir", str(model),
               "--input", str(source), "--output", str(out), "--chunk-rows", str(CHUNK_ROWS)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.splitlines()[-1])["peak_rss_mib"])


def test_peak_memory_does_not_grow_with_the_input(tmp_path: Path) -> None:
    model = export_model(tmp_path / "model")
    features = [feature["name"] for feature in json.loads((model / "model.json").read_text())["features"]]
    small = _peak_mib(model, _part(tmp_path / "small", features, 12 * CHUNK_ROWS), tmp_path / "out-small")
    large = _peak_mib(model, _part(tmp_path / "large", features, 96 * CHUNK_ROWS), tmp_path / "out-large")
    assert large - small < GROWTH_BOUND_MIB, f"peak RSS {small:.0f} MiB on 12 chunks, {large:.0f} MiB on 96"
