"""`pipeline batch` for real: the registry's release, a Parquet or CSV folder several chunks long, rejects
with reasons, parity with the running service, a drift failure, bad input refused with nothing written,
and the Spark engine writing what the embedded engine writes."""

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from pipeline.adapters import registry
from pipeline.adapters.service_process import running_service
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.workspace import Workspace
from tests.integration.batch.conftest import CHUNK_ROWS, PART_ROWS, PARTS, PLANTED, tables, write_parquet

OPTIONS = ("--set", f"batch.chunk_rows={CHUNK_ROWS}", "--set", "batch.key_columns=[customer_id]")
KEY = [("source_file", "ascending"), ("source_row", "ascending")]


def batch(root: Path, source: Path, out: Path, *extra: str, env: str = "dev") -> int:
    return main(
        [
            "batch",
            "--env",
            env,
            "--workdir",
            str(root),
            "--input",
            str(source),
            "--output",
            str(out),
            *OPTIONS,
            *extra,
        ]
    )


def read(folder: Path, fmt: str = "parquet") -> pa.Table:
    return ds.dataset(folder, format=fmt).to_table().sort_by(KEY)


def summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "batch.json").read_text()))


@pytest.fixture(scope="module")
def embedded_run(
    released: Path, parquet_parts: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """The Parquet folder scored by the embedded engine, parity checked against a service running on the
    release (given by --url); (output folder, what it printed)."""
    out = tmp_path_factory.mktemp("out") / "scored"
    config = load_config("dev", released / "environments")
    found = registry.alias_model_dir(config, Workspace(released), "dev")
    assert found is not None
    model, _ = found
    log = tmp_path_factory.mktemp("service") / "service.log"
    printed = io.StringIO()  # a module fixture has no capsys
    with running_service(config, model.path, log) as service, contextlib.redirect_stdout(printed):
        assert batch(released, parquet_parts, out, "--url", service.url) == 0
    return out, printed.getvalue()


def test_the_release_scores_every_valid_row_with_its_key_and_version(embedded_run: tuple[Path, str]) -> None:
    out, printed = embedded_run
    assert (out / "_SUCCESS").is_file()
    report = summary(out)
    assert report["status"] == "pass"
    assert report["model"]["registry_version"] == "1"
    scores = read(out / "scores")
    assert scores.num_rows == PARTS * PART_ROWS - len(PLANTED) == report["rows"] - report["rejected"]
    assert set(scores["model_version"].to_pylist()) == {report["model"]["version"]}
    assert set(scores["registry_version"].to_pylist()) == {"1"}
    first = scores.slice(0, 3).to_pydict()
    assert first["source_file"] == ["part-00000.parquet"] * 3
    assert first["source_row"] == first["customer_id"] == [0, 1, 2]
    assert (
        sum("rows in" in line and line.strip().startswith("chunk ") for line in printed.splitlines())
        >= PARTS * 2
    )


def test_planted_bad_rows_are_rejected_with_their_reason(embedded_run: tuple[Path, str]) -> None:
    out, _ = embedded_run
    rejects = read(out / "rejects")
    found = {
        (file.removesuffix(".parquet"), row): reason
        for file, row, reason in zip(
            *(rejects[c].to_pylist() for c in ("source_file", "source_row", "reason")), strict=True
        )
    }
    assert found == {key: reason for key, (_, _, reason) in PLANTED.items()}
    assert summary(out)["rejected"] == len(PLANTED)


def test_batch_answers_equal_the_running_services(embedded_run: tuple[Path, str]) -> None:
    out, _ = embedded_run
    checks = {check["check"]: check for check in summary(out)["checks"]}
    assert checks["parity label agreement"]["value"] == 1.0
    # The first 200 rows less the two planted in them.
    assert checks["parity label agreement"]["note"] == "198 rows vs the service"
    assert checks["parity max abs probability diff"]["result"] == "pass"


def test_a_csv_folder_scores_as_the_parquet_one(
    released: Path, csv_parts: Path, embedded_run: tuple[Path, str], tmp_path: Path
) -> None:
    out = tmp_path / "csv-scored"
    assert batch(released, csv_parts, out) == 0  # parity against a service the stage starts itself
    csv, parquet = read(out / "scores", "csv"), read(embedded_run[0] / "scores")
    assert [name.removesuffix(".csv") for name in csv["source_file"].to_pylist()] == [
        name.removesuffix(".parquet") for name in parquet["source_file"].to_pylist()
    ]
    for column in ("source_row", "customer_id", "prediction", "probability_0", "probability_1"):
        assert csv[column].to_pylist() == pytest.approx(parquet[column].to_pylist(), abs=1e-7), column
    assert (
        read(out / "rejects", "csv")["reason"].to_pylist()
        == read(embedded_run[0] / "rejects")["reason"].to_pylist()
    )


def test_a_shifted_batch_fails_on_drift_and_is_not_marked_done(released: Path, tmp_path: Path) -> None:
    shifted = write_parquet(tmp_path / "shifted", tables(shift=1.6, seed=1))
    out = tmp_path / "shifted-scored"
    assert batch(released, shifted, out, "--set", "batch.parity_rows=0") == 1
    report = summary(out)
    assert report["status"] == "fail"
    assert not (out / "_SUCCESS").exists()
    failed = [check["check"] for check in report["checks"] if check["result"] == "fail"]
    assert failed and all(name.endswith(("psi", "ks_binned")) for name in failed)


REFUSED = {
    "missing": (2, "no such file or folder"),
    "wrong-format": (2, "unknown format .txt"),
    "no-alias": (1, "no version of breast-cancer-classifier holds alias 'staging'"),
    "output-exists": (2, "exists and is not an empty folder"),
}
"""Bad input: (exit code, what the error says)."""


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_input_is_refused_and_nothing_is_written(
    case: str, released: Path, parquet_parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, message = REFUSED[case]
    source, out, env = parquet_parts, tmp_path / "out", "dev"
    if case == "missing":
        source = tmp_path / "nothing.parquet"
    elif case == "wrong-format":
        source = tmp_path / "rows.txt"
        source.write_text("a,b\n1,2\n")
    elif case == "no-alias":
        env = "staging"
    else:
        out.mkdir()
        (out / "kept.txt").write_text("an earlier run's file")
    before = sorted(tmp_path.iterdir())
    assert batch(released, source, out, env=env) == code
    assert message in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == before  # no output, no partial folder
    if case == "output-exists":
        assert sorted(p.name for p in out.iterdir()) == ["kept.txt"]


def test_an_unknown_engine_is_a_usage_error(released: Path, parquet_parts: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        batch(released, parquet_parts, tmp_path / "out", "--engine", "gpu")
    assert exited.value.code == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.needs_tool("java", "openjdk-17-jre-headless")
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_spark_writes_what_the_embedded_engine_writes(
    fmt: str, released: Path, parquet_parts: Path, csv_parts: Path, tmp_path: Path
) -> None:
    source = parquet_parts if fmt == "parquet" else csv_parts
    embedded, spark = tmp_path / "embedded", tmp_path / "spark"
    assert batch(released, source, embedded, "--set", "batch.parity_rows=0") == 0
    # Two local workers, several Arrow batches each: the parity check runs on Spark's output.
    assert batch(released, source, spark, "--engine", "spark", "--master", "local[2]") == 0
    for folder in ("scores", "rejects"):
        assert read(spark / folder, fmt).equals(read(embedded / folder, fmt)), folder
    spark_checks = {
        c["check"]: c["value"] for c in summary(spark)["checks"] if not c["check"].startswith("parity")
    }
    assert spark_checks == {c["check"]: c["value"] for c in summary(embedded)["checks"]}
    assert (spark / "_SUCCESS").is_file()
