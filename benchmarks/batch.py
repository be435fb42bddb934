"""`python -m benchmarks.batch [--quick]`: rows per second of batch scoring, side by side in one run.

The model is the environment's current export (trained and exported first when there is none). One
generated Parquet folder (breast-cancer rows resampled with noise, four parts) is scored by:

- `onnxruntime (in memory)`: the bare session (one thread) on float32 batches of `batch.chunk_rows` already
  in memory: the model's own cost, the limit of this machine;
- `embedded`: `pipeline/batch`'s engine, Parquet read, the service's validation, scoring, drift bins and
  Parquet write (one thread);
- `spark local[1]`, `spark local[2]`: the Spark engine on one and two local cores (the job from
  reading to writing, and the wall time with the session's start);
- `mlflow spark_udf local[2]`: MLflow's own batch path, `mlflow.pyfunc.spark_udf` on the same fitted
  scikit-learn model (its ONNX flavor cannot return a classifier's [N, C] probabilities), Parquet in and out.

Each measurement runs in a process of its own (its peak memory is its own; a Spark session per run), in
rounds over all of them so that the machine's drift hits all alike; the best round counts. The embedded
engine's peak memory is also measured on an input four times larger: it must not grow with the input.
The report lands in reports/bench/batch-<run-id>/ (batch.json, batch.md).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.run import _model
from benchmarks.servers import REPO
from pipeline.batch.embedded import peak_rss_mib
from pipeline.config import ConfigError, load_config
from pipeline.console import Reporter
from pipeline.workspace import Workspace, new_run_id, write_json

ENGINES = ("onnxruntime", "embedded", "spark-1", "spark-2", "mlflow-spark-2")
LABELS = {
    "onnxruntime": "onnxruntime (in memory)",
    "embedded": "embedded",
    "spark-1": "spark local[1]",
    "spark-2": "spark local[2]",
    "mlflow-spark-2": "mlflow spark_udf local[2]",
}
PARTS = 4
TARGET_EMBEDDED = 0.5
"""The embedded engine's rows/s as a share of the in-memory onnxruntime limit (issue 35)."""
TARGET_SPARK_SCALING = 1.6
"""Spark local[2] over local[1] (issue 35)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 rows, one round")
    parser.add_argument("--rows", type=int, help="rows of the input (default 2,000,000; quick: 200,000)")
    parser.add_argument("--rounds", type=int, help="rounds over all engines (default 2; quick: 1)")
    parser.add_argument("--env", default="dev", help="environment whose export scores (default: dev)")
    parser.add_argument("--workdir", type=Path, default=Path(), help="workspace root (default: .)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma list of {', '.join(ENGINES)}")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one measurement, in a child process
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--chunk-rows", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.measure:
        measured = measure(args.measure, args.model_dir, args.input, args.output, args.chunk_rows)
        print(json.dumps(measured))  # noqa: T201  (the parent reads this line)
        return 0
    reporter = Reporter()
    rows = args.rows or (200_000 if args.quick else 2_000_000)
    rounds = args.rounds or (1 if args.quick else 2)
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    if set(engines) - set(ENGINES):
        reporter.error(f"--engines: expected any of {', '.join(ENGINES)}; got {args.engines}")
        return 2
    workdir: Path = args.workdir.resolve()
    try:
        config = load_config(args.env, workdir / "environments")
    except ConfigError as exc:
        reporter.error(str(exc))
        return 2
    workspace = Workspace(workdir)
    chunk = config.batch.chunk_rows
    machine = {"cpus": os.cpu_count(), "loadavg_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        tmp = Path(scratch)
        with reporter.stage("bench batch: model", config.name):
            model_dir = _model(config, workspace, reporter)
        with reporter.stage("bench batch: inputs", config.name):
            small = generate(tmp / "input", rows)
            large = generate(tmp / "input-4x", rows * 4)
            reporter.note(f"{rows:,} rows in {PARTS} Parquet parts; {rows * 4:,} for the memory check")
        runs: list[dict[str, Any]] = []
        with reporter.stage("bench batch: engines", config.name):
            for number in range(1, rounds + 1):
                for engine in engines:
                    result = _child(engine, model_dir, small, tmp / f"out-{engine}-{number}", chunk)
                    runs.append({"round": number, "engine": engine, **result})
                    reporter.note(f"round {number} {LABELS[engine]}: {_shown(result)}")
            memory = _child("embedded", model_dir, large, tmp / "out-4x", chunk)
            reporter.note(f"embedded on {rows * 4:,} rows: {_shown(memory)}")
    machine["loadavg_after"] = list(os.getloadavg())
    result = summarize(runs, memory, rows=rows, chunk=chunk, machine=machine)
    out = workspace.reports / "bench" / f"batch-{new_run_id()}"
    out.mkdir(parents=True)
    write_json(out / "batch.json", result)
    (out / "batch.md").write_text(markdown(result))
    reporter.line(markdown(result))
    reporter.line(f"report: {out / 'batch.md'}")
    return 0


def generate(folder: Path, rows: int) -> Path:
    """`rows` breast-cancer rows resampled with 1 % noise, in PARTS Parquet parts."""
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415
    from sklearn.datasets import load_breast_cancer  # noqa: PLC0415

    data = load_breast_cancer()
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    per = rows // PARTS
    for p in range(PARTS):
        sample = data.data[rng.integers(0, len(data.data), per)] * rng.normal(1.0, 0.01, (per, 30))
        table = pa.table({str(name): sample[:, j] for j, name in enumerate(data.feature_names)})
        pq.write_table(table, folder / f"part-{p:05d}.parquet", row_group_size=100_000)
    return folder


def _child(engine: str, model_dir: Path, source: Path, out: Path, chunk: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.batch", "--measure", engine, "--model-dir", str(model_dir),
               "--input", str(source), "--output", str(out), "--chunk-rows", str(chunk)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    shutil.rmtree(out, ignore_errors=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        return {"error": f"exit {done.returncode}: {tail}"}
    return dict(json.loads(lines[-1]))


def _shown(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"not run: {result['error']}"
    return (
        f"{result['rows']:,} rows, {result['rows_per_s']:,.0f} rows/s (job {result['seconds']:.1f}s, "
        f"wall {result['wall_seconds']:.1f}s), peak RSS {result['peak_rss_mib']:.0f} MiB"
    )


# --- one measurement, in its own process ----------------------------------------------------------------


def measure(engine: str, model_dir: Path, source: Path, out: Path, chunk: int) -> dict[str, Any]:
    started = time.perf_counter()
    if engine == "onnxruntime":
        rows, seconds, cpu = _raw(model_dir, source, chunk)
    elif engine == "embedded":
        rows, seconds, cpu = _embedded(model_dir, source, out, chunk)
    else:
        rows, seconds, cpu = _spark(engine, model_dir, source, out, chunk)
    return {
        "rows": rows,
        "seconds": seconds,
        "cores": cpu / seconds,
        "wall_seconds": time.perf_counter() - started,
        "rows_per_s": rows / seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def _cpu_seconds() -> float:
    """CPU time of this process and every process below it (Spark's JVM and its Python workers)."""
    import psutil  # noqa: PLC0415

    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue  # it ended meanwhile
        total += times.user + times.system
    return total


def _raw(model_dir: Path, source: Path, chunk: int) -> tuple[int, float, float]:
    import numpy as np  # noqa: PLC0415
    import pyarrow.dataset as ds  # noqa: PLC0415

    from model_service.model.runtime import OnnxModel, load_card  # noqa: PLC0415

    card = load_card(model_dir)
    session = OnnxModel(card)
    table = ds.dataset(source).to_table(columns=list(card.feature_names))
    (spec,) = card.inputs
    matrix = np.column_stack([table[name].to_numpy() for name in card.feature_names]).astype(spec.dtype)
    started, cpu = time.perf_counter(), _cpu_seconds()
    for start in range(0, len(matrix), chunk):
        session.predict_feeds({spec.name: matrix[start : start + chunk]})
    return len(matrix), time.perf_counter() - started, _cpu_seconds() - cpu


def _embedded(model_dir: Path, source: Path, out: Path, chunk: int) -> tuple[int, float, float]:
    import pyarrow as pa  # noqa: PLC0415

    from pipeline.batch.embedded import run_embedded  # noqa: PLC0415
    from pipeline.batch.scoring import Scorer  # noqa: PLC0415
    from pipeline.batch.source import open_source  # noqa: PLC0415

    started, cpu = time.perf_counter(), _cpu_seconds()
    scorer = Scorer(model_dir, registry_version="bench", key_schema=pa.schema([]), text_input=False)
    totals = run_embedded(open_source(source, scorer.columns), scorer, out, chunk, Reporter(io.StringIO()))
    return totals.rows, time.perf_counter() - started, _cpu_seconds() - cpu


def _spark(engine: str, model_dir: Path, source: Path, out: Path, chunk: int) -> tuple[int, float, float]:
    import pyarrow as pa  # noqa: PLC0415

    from pipeline.batch.scoring import Scorer  # noqa: PLC0415
    from pipeline.batch.source import open_source  # noqa: PLC0415
    from pipeline.batch.spark import _score_frame, start_session  # noqa: PLC0415
    from pipeline.config.models import SparkSpec  # noqa: PLC0415

    master = f"local[{engine.rsplit('-', 1)[1]}]"
    scorer = Scorer(model_dir, registry_version="bench", key_schema=pa.schema([]), text_input=False)
    src = open_source(source, scorer.columns)
    session = start_session(master, SparkSpec(), chunk, name="bench-batch", csv=False)
    try:
        session.range(1).collect()  # the JVM and the first job's planning are the session's cost
        started, cpu = time.perf_counter(), _cpu_seconds()
        if engine.startswith("mlflow"):
            rows = _mlflow_udf(session, model_dir, src.parts, out)
        else:
            collected = _score_frame(
                session, src, model_dir, scorer, out=out, reporter=Reporter(io.StringIO())
            )
            rows = sum(row["_rows"] for row in collected)
        return rows, time.perf_counter() - started, _cpu_seconds() - cpu
    finally:
        session.stop()


def _mlflow_udf(session: Any, model_dir: Path, parts: Sequence[Path], out: Path) -> int:
    """MLflow's batch path: the fitted scikit-learn model saved as an MLflow model (predict_proba) and
    applied with `mlflow.pyfunc.spark_udf` (env_manager local: this interpreter, nothing downloaded)."""
    import logging  # noqa: PLC0415

    import mlflow.pyfunc  # noqa: PLC0415
    import mlflow.sklearn  # noqa: PLC0415
    from pyspark.sql import functions as sql  # noqa: PLC0415

    from pipeline.artifacts import ModelDir  # noqa: PLC0415

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    saved = out.parent / f"{out.name}-mlflow-model"
    mlflow.sklearn.save_model(
        ModelDir(model_dir).read_estimator(), str(saved), serialization_format="cloudpickle",
        pyfunc_predict_fn="predict_proba",
    )  # fmt: skip
    udf = mlflow.pyfunc.spark_udf(session, str(saved), result_type="array<double>", env_manager="local")
    frame = session.read.parquet(*[str(part) for part in parts])
    scored = frame.select(udf(*[sql.col(f"`{name}`") for name in frame.columns]).alias("probabilities"))
    scored.write.parquet(str(out))
    return int(session.read.parquet(str(out)).count())


# --- the report ---------------------------------------------------------------------------------------


def summarize(
    runs: list[dict[str, Any]],
    memory: dict[str, Any],
    *,
    rows: int,
    chunk: int,
    machine: dict[str, Any],
) -> dict[str, Any]:
    best: dict[str, dict[str, Any]] = {}
    for run in runs:
        if "error" in run:
            best.setdefault(run["engine"], run)
        elif (
            "error" in best.get(run["engine"], {"error": ""})
            or run["rows_per_s"] > best[run["engine"]]["rows_per_s"]
        ):
            best[run["engine"]] = run
    rate: dict[str, float] = {
        engine: float(run["rows_per_s"]) for engine, run in best.items() if "rows_per_s" in run
    }
    ratios = {}
    if "embedded" in rate and "onnxruntime" in rate:
        ratios["embedded / onnxruntime"] = rate["embedded"] / rate["onnxruntime"]
    if "spark-2" in rate and "spark-1" in rate:
        ratios["spark local[2] / local[1]"] = rate["spark-2"] / rate["spark-1"]
    embedded = best.get("embedded", {})
    return {
        "rows": rows,
        "chunk_rows": chunk,
        "machine": machine,
        "best": best,
        "runs": runs,
        "ratios": ratios,
        "targets": {
            "embedded / onnxruntime": TARGET_EMBEDDED,
            "spark local[2] / local[1]": TARGET_SPARK_SCALING,
        },
        "memory": {
            "rows": rows,
            "peak_rss_mib": embedded.get("peak_rss_mib"),
            "rows_4x": rows * 4,
            "peak_rss_mib_4x": memory.get("peak_rss_mib"),
        },
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        (
            f"{result['rows']:,} rows (Parquet, {PARTS} parts), chunks of {result['chunk_rows']:,}; "
            f"{result['machine']['cpus']} CPUs, load average {result['machine']['loadavg_before'][0]:.1f} "
            f"before and {result['machine']['loadavg_after'][0]:.1f} after"
        ),
        "",
        "| engine | rows/s (best round) | job s | wall s | CPU cores busy | peak RSS MiB (the Python driver) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for engine, run in result["best"].items():
        if "error" in run:
            lines.append(f"| {LABELS[engine]} | not run: {run['error'][:120]} | | | | |")
            continue
        rss = run["peak_rss_mib"]
        lines.append(
            f"| {LABELS[engine]} | {run['rows_per_s']:,.0f} | {run['seconds']:.1f} "
            f"| {run['wall_seconds']:.1f} "
            f"| {run['cores']:.2f} | {rss:,.0f} |"
        )
    lines += ["", "| ratio | measured | target |", "| --- | ---: | ---: |"]
    for name, value in result["ratios"].items():
        lines.append(f"| {name} | {value:.2f} | {result['targets'][name]} |")
    memory = result["memory"]
    if memory["peak_rss_mib"] and memory["peak_rss_mib_4x"]:
        lines += [
            "",
            (
                f"embedded peak RSS: {memory['peak_rss_mib']:.0f} MiB on {memory['rows']:,} rows, "
                f"{memory['peak_rss_mib_4x']:.0f} MiB on {memory['rows_4x']:,} rows"
            ),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
