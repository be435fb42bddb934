"""The input of a batch: a CSV or Parquet file, or a folder of parts of one format, checked before any row
is scored (every part readable, every feature and key column present), then read in bounded chunks."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa

from pipeline.config import ConfigError

Format = Literal["csv", "parquet"]
SUFFIXES: dict[str, Format] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
"""How a part's name says its format."""


@dataclass(frozen=True)
class Source:
    """The parts of one input, in name order; `root` is the file or folder given."""

    root: Path
    format: Format
    parts: tuple[Path, ...]
    absent: tuple[str, ...] = ()
    """Optional columns no part has (features with a default: the service fills it in, so does the batch)."""

    @property
    def part_names(self) -> tuple[str, ...]:
        """What a row's `source_file` holds: the part's file name (parts sit side by side in one folder)."""
        return tuple(part.name for part in self.parts)


def is_part(path: Path) -> bool:
    """A data file of a folder of parts; `_SUCCESS`, `.crc` files and other hidden names are not (as Spark
    reads a folder)."""
    return path.is_file() and not path.name.startswith(("_", "."))


def open_source(path: Path, columns: Sequence[str], optional: Sequence[str] = ()) -> Source:
    """The parts of `path` with their format, each checked for `columns` and for each `optional` column
    (in every part or in none); ConfigError naming the file and the fix when the input cannot be scored
    as a whole (missing, empty, unknown or mixed format, a column missing, unreadable)."""
    if not path.exists():
        raise ConfigError(f"--input {path}: no such file or folder")
    if path.is_dir():
        parts = sorted(p for p in path.iterdir() if is_part(p))
        if not parts:
            raise ConfigError(f"--input {path}: the folder holds no data files (.csv or .parquet parts)")
    else:
        parts = [path]
    formats = {SUFFIXES.get(part.suffix.lower()) for part in parts}
    if None in formats:
        odd = next(part for part in parts if part.suffix.lower() not in SUFFIXES)
        raise ConfigError(
            f"--input {odd}: unknown format {odd.suffix or '(no suffix)'}; give .csv or .parquet files"
        )
    if len(formats) > 1:
        raise ConfigError(f"--input {path}: CSV and Parquet parts mixed; give a folder of one format")
    (fmt,) = formats
    assert fmt is not None  # None was refused above
    present = {part: set(_columns(part, fmt)) for part in parts}
    for part, names in present.items():
        missing = [name for name in columns if name not in names]
        if missing:
            raise ConfigError(
                f"--input {part}: no column {missing[0]!r} ({len(missing)} of the model's features and "
                "batch.key_columns missing); the header must name every feature without a default"
            )
    absent = tuple(name for name in optional if not any(name in names for names in present.values()))
    for name in set(optional) - set(absent):
        lacking = next((part for part, names in present.items() if name not in names), None)
        if lacking is not None:
            raise ConfigError(
                f"--input {lacking}: no column {name!r}, which other parts have; give it in every part "
                "or in none (then every row takes the card's default)"
            )
    return Source(path, fmt, tuple(parts), absent)


def _columns(part: Path, fmt: Format) -> list[str]:
    if fmt == "parquet":
        import pyarrow.parquet as pq  # noqa: PLC0415

        try:
            return list(pq.read_schema(part).names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConfigError(f"--input {part}: not a readable Parquet file ({exc})") from None
    try:
        with part.open(newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"--input {part}: not a UTF-8 CSV file with a header row ({exc})") from None


def text_schema(columns: Sequence[str]) -> pa.Schema:
    """How a CSV part is read, by both engines: every used column as text, typed later per the card (a
    cell that is no number becomes that row's reject, not the whole file's failure)."""
    return pa.schema([(name, pa.string()) for name in columns])


def read_chunks(
    source: Source, columns: Sequence[str], chunk_rows: int
) -> Iterator[tuple[str, int, pa.RecordBatch]]:
    """(part name, index of the chunk's first row in that part, at most `chunk_rows` rows of `columns`),
    part after part: one chunk in memory at a time, whatever the input's size."""
    for part in source.parts:
        first = 0
        for batch in _part_batches(part, source.format, columns, chunk_rows):
            if batch.num_rows:
                yield part.name, first, batch
                first += batch.num_rows


def _part_batches(
    part: Path, fmt: Format, columns: Sequence[str], chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    if fmt == "parquet":
        import pyarrow.parquet as pq  # noqa: PLC0415

        # No pre-buffering: it would keep every column chunk of the part read so far (memory growing
        # with the part's size); a row group at a time is what bounds memory, with the chunk.
        with pq.ParquetFile(part, pre_buffer=False) as reader:
            yield from reader.iter_batches(batch_size=chunk_rows, columns=list(columns))
        return
    import pyarrow.csv as pcsv  # noqa: PLC0415

    # Only an empty unquoted cell is missing, as Spark reads CSV: "NA" or "nan" are text, typed later.
    options = pcsv.ConvertOptions(
        column_types=text_schema(columns),
        include_columns=list(columns),
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    # Blocks are bytes, not rows: re-cut them into chunks of at most `chunk_rows`.
    reader = pcsv.open_csv(part, read_options=pcsv.ReadOptions(block_size=1 << 22), convert_options=options)
    try:
        for block in reader:
            for start in range(0, block.num_rows, chunk_rows):
                yield block.slice(start, chunk_rows)
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"--input {part}: not a well-formed CSV file ({exc})") from None
    finally:
        reader.close()
