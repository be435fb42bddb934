"""The input is checked whole before any row is scored, read in chunks of at most `chunk_rows`, and the
output folder is never one that exists with files in it."""

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.batch.source import open_source, read_chunks
from pipeline.config import ConfigError
from pipeline.stages.batch import output_folder

COLUMNS = ["x", "y"]


def _parquet(path: Path, rows: int) -> Path:
    pq.write_table(pa.table({"x": list(range(rows)), "y": [0.5] * rows, "other": ["a"] * rows}), path)
    return path


REFUSED = {
    "missing": "no such file or folder",
    "empty-folder": "holds no data files",
    "unknown-format": "unknown format .json",
    "not-parquet": "not a readable Parquet",
    "missing-column": "no column 'y'",
}


def _bad_input(case: str, root: Path) -> Path:
    if case == "missing":
        return root / "missing.parquet"
    if case == "empty-folder":
        (root / "empty").mkdir()
        return root / "empty"
    path, text = {
        "unknown-format": ("rows.json", "{}"),
        "not-parquet": ("rows.parquet", "x,y\n"),
        "missing-column": ("rows.csv", "x,z\n1,2\n"),
    }[case]
    (root / path).write_text(text)
    return root / path


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_an_input_that_cannot_be_scored_is_refused_naming_it(case: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=REFUSED[case]):
        open_source(_bad_input(case, tmp_path), COLUMNS)


def test_a_folder_of_mixed_formats_is_refused(tmp_path: Path) -> None:
    _parquet(tmp_path / "a.parquet", 3)
    (tmp_path / "b.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ConfigError, match="CSV and Parquet parts mixed"):
        open_source(tmp_path, COLUMNS)


def test_parts_are_read_in_name_order_in_bounded_chunks_keyed_by_part_and_row(tmp_path: Path) -> None:
    _parquet(tmp_path / "part-1.parquet", 250)
    _parquet(tmp_path / "part-0.parquet", 120)
    (tmp_path / "_SUCCESS").touch()  # a finished Spark output's marker is no part
    source = open_source(tmp_path, COLUMNS)
    chunks = [(part, first, batch.num_rows) for part, first, batch in read_chunks(source, COLUMNS, 100)]
    assert chunks == [
        ("part-0.parquet", 0, 100),
        ("part-0.parquet", 100, 20),
        ("part-1.parquet", 0, 100),
        ("part-1.parquet", 100, 100),
        ("part-1.parquet", 200, 50),
    ]
    first = next(read_chunks(source, COLUMNS, 100))[2]
    assert first.schema.names == COLUMNS


def test_csv_is_read_as_text_in_chunks(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("y,x,unused\n" + "".join(f"0.5,{i},z\n" for i in range(7)) + ",,z\n")
    source = open_source(tmp_path / "rows.csv", COLUMNS)
    chunks = list(read_chunks(source, COLUMNS, 3))
    assert [(first, batch.num_rows) for _, first, batch in chunks] == [(0, 3), (3, 3), (6, 2)]
    last = chunks[-1][2]
    assert last.schema == pa.schema([("x", pa.string()), ("y", pa.string())])
    assert last.column("x").to_pylist() == ["6", None]  # an empty cell is missing


def test_the_output_is_a_new_folder_and_date_is_today(tmp_path: Path) -> None:
    today = datetime(2026, 12, 6, tzinfo=UTC)
    assert output_folder(tmp_path / "scored-{date}", today) == tmp_path / "scored-2026-12-06"
    (tmp_path / "empty").mkdir()
    assert output_folder(tmp_path / "empty") == tmp_path / "empty"
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "part-00000.parquet").touch()
    with pytest.raises(ConfigError, match="exists and is not an empty folder"):
        output_folder(tmp_path / "used")


def test_a_defaulted_column_is_in_every_part_or_in_none(tmp_path: Path) -> None:
    _parquet(tmp_path / "part-0.parquet", 3)
    _parquet(tmp_path / "part-1.parquet", 3)
    assert open_source(tmp_path, ["x"], optional=["y", "z"]).absent == ("z",)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "part-2.parquet")
    with pytest.raises(ConfigError, match=r"part-2\.parquet: no column 'y', which other parts have"):
        open_source(tmp_path, ["x"], optional=["y"])
