"""The benchmark run: prepare the model, time the pipeline, measure onnxruntime alone, then drive every
server with wrk in interleaved rounds and write the report.

Over 400 lines on purpose: one run's steps in order (model, pipeline timing, onnxruntime alone, every
server in interleaved rounds), each a function; the report is benchmarks/report.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import report, venvs, wrk
from benchmarks.servers import REPO, Form, Server, cpu_seconds, cpu_used, memory, post, running
from pipeline.artifacts import ModelDir, current_model_dir
from pipeline.config import Config, ConfigError, load_config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.workspace import Workspace, new_run_id, read_json

PEERS = ("kserve", "mlserver", "bentoml", "litserve")
"""The model servers a team would deploy instead, each in its own venv (benchmarks/venvs.py)."""
SERVERS = ("service", "minimal", "mlflow", "flask", "v2", "capture", *PEERS)
PEERS_DIR = REPO / "benchmarks" / "peers"
CONNECTIONS = (8, 32)
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Serve the same model with this template's service and its peers; wrk drives each in "
        "interleaved rounds; report requests/s, latency, errors, memory and the ratios.",
    )
    parser.add_argument("--quick", action="store_true", help="3 s runs, one round, no pipeline timing")
    parser.add_argument("--env", default="dev", help="environment whose model is served (default: dev)")
    parser.add_argument("--workdir", type=Path, default=Path(), help="workspace root (default: .)")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma list of {', '.join(SERVERS)} (v2: the service's Open Inference Protocol route, "
        f"{report.V2_ROWS} rows per request as JSON and as binary tensor data; capture: the service with 2 "
        "workers capturing answers, --capture-ratio of them)",
    )
    parser.add_argument(
        "--capture-ratio",
        type=float,
        default=1.0,
        help="capture: share of answers the capturing service captures (default: 1, every answer)",
    )
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default: 15, quick: 3)")
    parser.add_argument("--rounds", type=int, help="rounds over all servers (default: 2, quick: 1)")
    parser.add_argument("--skip-pipeline", action="store_true", help="do not time `nox -s pipeline`")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    reporter = Reporter()
    wrk_path = shutil.which("wrk")
    if wrk_path is None:
        reporter.error(f"wrk is not installed; install it with:\n\n    {wrk.INSTALL_HINT}\n")
        return EXIT_USAGE
    selected = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(SERVERS))
    if unknown or "service" not in selected:
        reporter.error(f"--servers: expected 'service' and any of {', '.join(SERVERS)}; got {args.servers}")
        return EXIT_USAGE
    duration = args.duration or (3.0 if args.quick else 15.0)
    rounds = args.rounds or (1 if args.quick else 2)
    warmup = 1.0 if args.quick else 2.0
    workdir: Path = args.workdir.resolve()
    try:
        config = load_config(args.env, workdir / "environments")
        workspace = Workspace(workdir)
        run_id = new_run_id()
        out = workspace.reports / "bench" / run_id
        machine: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_before": _loadavg()}
        with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
            tmp = Path(scratch)
            with reporter.stage("bench: model", config.name):
                model_dir = _model(config, workspace, reporter)
            pipeline = []
            if not (args.quick or args.skip_pipeline):
                with reporter.stage("bench: pipeline wall time", config.name):
                    pipeline = _time_pipeline(config, workdir, tmp, reporter)
            with reporter.stage("bench: onnxruntime in-process", config.name):
                ceiling = _onnxruntime(model_dir, 0.5 if args.quick else 2.0)
            with reporter.stage("bench: servers", config.name):
                servers, not_run = _servers(selected, model_dir, tmp, reporter, args.capture_ratio)
                runs = _drive(
                    servers, wrk_path, tmp, not_run,
                    duration=duration, warmup=warmup, rounds=rounds, reporter=reporter,
                )  # fmt: skip
        machine["loadavg_after"] = _loadavg()
        table = report.rows(runs)
        ratio, ratio_rounds = report.ratios(table, runs)
        result = {
            "run_id": run_id,
            "model": {"name": config.model.name, "version": model_dir.name, "dir": str(model_dir)},
            "machine": machine,
            "settings": {
                "duration_s": duration,
                "rounds": rounds,
                "warmup_s": warmup,
                "connections": list(CONNECTIONS),
                "wrk": "wrk -t1 --timeout 5s -s benchmarks/post_row.lua",
                "quick": bool(args.quick),
                "capture_ratio": args.capture_ratio,
            },
            "rows": table,
            "not_run": not_run,
            "servers": [_described(server) for server in servers],
            "ratios": ratio,
            "ratios_per_round": ratio_rounds,
            "targets": report.targets(table, ratio, ratio_rounds),
            "v2_binary_vs_json": report.v2_binary_vs_json(table),
            "capture_vs_off": report.capture_vs_off(table),
            "onnxruntime": ceiling,
            "pipeline": pipeline,
            "runs": [report.run_dict(run) for run in runs],
        }
        report.write(out, result)
    except ConfigError as exc:
        reporter.error(str(exc))
        return EXIT_USAGE
    except (StageError, RuntimeError, ValueError, OSError, subprocess.SubprocessError) as exc:
        reporter.error(f"bench failed: {exc}")
        return EXIT_FAILED
    report.print_report(reporter, result)
    reporter.line(f"report: {out / 'bench.md'} (json, chart beside it; {out.parent / 'latest'} points here)")
    return EXIT_OK


def _loadavg() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# -- the model -----------------------------------------------------------------------------------------


def _model(config: Config, workspace: Workspace, reporter: Reporter) -> Path:
    """The environment's current export, trained and exported here first when the workspace has none."""
    from pipeline.stages import export, train  # noqa: PLC0415  (scikit-learn and MLflow are slow imports)

    model = current_model_dir(config, workspace)
    trained = train.train(config, workspace, reporter, model=model)
    export.export(config, workspace, reporter, model=model)
    reporter.note(
        f"model {config.model.name} {model.version} (trained: {'reused' if trained.reused else 'now'})"
    )
    return model.path


def _time_pipeline(config: Config, workdir: Path, tmp: Path, reporter: Reporter) -> list[dict[str, Any]]:
    """Wall time of the pipeline on a fresh workspace (cold: train, MLflow store, every stage), then again
    on it (warm: valid artifacts reused). It runs what `nox -s pipeline` runs, in this venv, so the times
    leave out nox creating a venv and installing into it."""
    target = tmp / "pipeline-workspace"
    target.mkdir()
    command = [sys.executable, "-m", "pipeline", "run", "--env", config.name, "--workdir", str(target),
               "--config-dir", str(workdir / "environments")]  # fmt: skip
    shown = f"python -m pipeline run --env {config.name}"
    results = []
    for name in ("cold", "warm"):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        seconds = round(time.perf_counter() - started, 1)
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
        reporter.note(f"{name}: {seconds}s ({shown}, {status})")
        if done.returncode != 0:
            reporter.note(" | ".join((done.stdout + done.stderr).strip().splitlines()[-3:]))
        results.append({"run": name, "seconds": seconds, "command": shown, "status": status})
    return results


def _onnxruntime(model_dir: Path, seconds: float) -> list[dict[str, Any]]:
    """Predictions/s of the bare onnxruntime session, one thread, batch 1 and 64: the model's own cost."""
    import numpy as np  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    rows = np.asarray(read_json(model_dir / "eval.json")["rows"], dtype=np.float32)
    out = []
    for batch in (1, 64):
        feed = {"input": np.resize(rows, (batch, rows.shape[1]))}
        for _ in range(200):
            session.run(["probabilities"], feed)
        calls = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            for _ in range(100):
                session.run(["probabilities"], feed)
            calls += 100
        elapsed = time.perf_counter() - started
        out.append(
            {
                "batch": batch,
                "predictions_per_s": round(calls * batch / elapsed),
                "us_per_call": round(elapsed / calls * 1e6, 2),
            }
        )
    return out


# -- the servers ---------------------------------------------------------------------------------------


def _servers(
    selected: list[str], model_dir: Path, tmp: Path, reporter: Reporter, capture_ratio: float = 1.0
) -> tuple[list[Server], list[dict[str, str]]]:
    """The servers to drive, and a reason for each selected peer that cannot run here."""
    evaluation = read_json(model_dir / "eval.json")
    row = evaluation["rows"][0]
    instances = _json({"instances": [row]})
    python = sys.executable
    servers = []
    for workers in (1, 2):
        servers.append(
            Server(
                key=report.SERVICE,
                workers=workers,
                command=[python, "-m", "model_service", "--model-dir", str(model_dir), "--host", "127.0.0.1",
                         "--port", "{port}", "--metrics-port", "{metrics_port}", "--workers", str(workers)],
                forms=(Form(report.SERVICE, "/v1/predict", instances, CONNECTIONS),),
            )
        )  # fmt: skip
    if "minimal" in selected:
        servers.append(
            Server(
                key=report.MINIMAL,
                workers=2,
                command=[python, "-m", "uvicorn", "benchmarks.minimal_app:app", "--host", "127.0.0.1",
                         "--port", "{port}", "--workers", "2", "--no-access-log", "--log-level", "warning"],
                forms=(Form(report.MINIMAL, "/predict", instances, CONNECTIONS),),
                env={"BENCH_MODEL_DIR": str(model_dir)},
            )
        )  # fmt: skip
    if "mlflow" in selected:
        uri, tracking = _log_to_mlflow(model_dir, tmp / "mlflow", reporter)
        dataframe = _json({"dataframe_split": {"columns": evaluation["features"], "data": [row]}})
        servers.append(
            Server(
                key="mlflow",
                workers=2,
                command=[python, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                         "--host", "127.0.0.1", "--port", "{port}", "--workers", "2"],
                forms=(
                    Form(report.MLFLOW_TENSOR, "/invocations", _json({"inputs": [row]}), CONNECTIONS),
                    # About ten times slower (pandas converts each column): one run at 32 connections says it.
                    Form(report.MLFLOW_DATAFRAME, "/invocations", dataframe, (32,), first_round_only=True),
                ),
                env={"MLFLOW_TRACKING_URI": tracking},
            )
        )  # fmt: skip
    if "flask" in selected:
        servers.append(
            Server(
                key=report.FLASK,
                workers=2,
                command=[python, "-m", "gunicorn", "--workers", "2", "--worker-class", "sync",
                         "--bind", "127.0.0.1:{port}", "benchmarks.flask_app:app"],
                forms=(Form(report.FLASK, "/predict", instances, CONNECTIONS),),
                env={"BENCH_PICKLE": str(model_dir / "estimator.pkl")},
            )
        )  # fmt: skip
    if "v2" in selected:
        servers.append(_v2_server(model_dir, python))
    if "capture" in selected:  # the capture's cost: the same service capturing a share of its answers
        servers.append(
            Server(
                key=report.CAPTURE,
                workers=2,
                command=[python, "-m", "model_service", "--model-dir", str(model_dir), "--host", "127.0.0.1",
                         "--port", "{port}", "--metrics-port", "{metrics_port}", "--workers", "2"],
                forms=(Form(report.CAPTURE, "/v1/predict", instances, CONNECTIONS),),
                env={"MODEL_SERVICE_CAPTURE_DIR": str(tmp / "capture"),
                     "MODEL_SERVICE_CAPTURE_SAMPLE_RATIO": f"{capture_ratio:g}"},
            )
        )  # fmt: skip
    not_run = []
    for peer in (name for name in PEERS if name in selected):
        with reporter.stage(f"bench: {peer} venv", str(REPO / ".nox" / f"bench-{peer}")):
            try:
                servers += _peer(peer, venvs.ensure(peer), model_dir, row, tmp)
            except venvs.PeerUnavailable as exc:
                reporter.note(f"{peer} cannot run here: {exc}")
                not_run.append({"server": peer, "reason": str(exc)})
    return servers, not_run


def _peer(peer: str, venv: venvs.PeerVenv, model_dir: Path, row: list[float], tmp: Path) -> list[Server]:
    """One peer, served the documented way (see its module in benchmarks/peers/), 2 workers (kserve: 1 and
    2), defaults otherwise. v2 bodies carry the row as a flat FP32 tensor of shape [1, features]."""
    env = {
        "BENCH_MODEL_DIR": str(model_dir),
        "PYTHONPATH": str(PEERS_DIR),  # the peer modules import onnx_session beside them
        "PATH": f"{venv.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv.bin.parent),
    }
    v2 = _json({"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]})
    instances = _json({"instances": [row]})
    python = str(venv.python)
    if peer == "kserve":
        return [
            Server(
                key=peer, workers=workers, versions=venv.versions, env=env,
                command=[python, str(PEERS_DIR / "kserve_model.py"), "--http_port", "{port}",
                         "--grpc_port", "{grpc_port}", "--workers", str(workers), "--model_name", "model"],
                forms=(
                    Form(report.KSERVE_V2, "/v2/models/model/infer", v2, CONNECTIONS),
                    Form(report.KSERVE_V1, "/v1/models/model:predict", instances, (32,), first_round_only=True),
                ),
            )
            # With 2 workers kserve spawns them and kills any that does not answer its ping within 5 s
            # of starting (kserve/protocol/rest/multiprocess/server.py): on a loaded machine that can
            # be every one. 1 worker runs in the launcher's process and always starts.
            for workers in (1, 2)
        ]  # fmt: skip
    if peer == "mlserver":
        folder = tmp / "mlserver"  # `mlserver start FOLDER`: server settings, and the model's beside them
        folder.mkdir(exist_ok=True)
        (folder / "settings.json").write_text(json.dumps({"host": "127.0.0.1", "parallel_workers": 2}))
        (folder / "model-settings.json").write_text(
            json.dumps({"name": "model", "implementation": "mlserver_runtime.OnnxRuntime"})
        )
        ports = {"MLSERVER_HTTP_PORT": "{port}", "MLSERVER_GRPC_PORT": "{grpc_port}",
                 "MLSERVER_METRICS_PORT": "{metrics_port}"}  # fmt: skip
        return [Server(
            key=peer, workers=2, versions=venv.versions, env={**env, **ports}, cwd=folder,
            command=[str(venv.bin / "mlserver"), "start", str(folder)],
            forms=(Form(report.MLSERVER, "/v2/models/model/infer", v2, CONNECTIONS),),
        )]  # fmt: skip
    if peer == "bentoml":
        return [Server(
            key=peer, workers=2, versions=venv.versions, cwd=PEERS_DIR,
            env={**env, "BENTOML_HOME": str(tmp / "bentoml-home"), "BENTOML_DO_NOT_TRACK": "true"},
            command=[str(venv.bin / "bentoml"), "serve", "bentoml_service:Predictor", "--host", "127.0.0.1",
                     "--port", "{port}"],
            forms=(Form(report.BENTOML, "/predict", instances, CONNECTIONS),),
        )]  # fmt: skip
    if peer == "litserve":
        return [Server(
            key=peer, workers=2, versions=venv.versions, env=env,
            command=[python, str(PEERS_DIR / "litserve_app.py"), "--port", "{port}", "--workers", "2"],
            forms=(Form(report.LITSERVE, "/predict", instances, CONNECTIONS),),
        )]  # fmt: skip
    raise ValueError(f"unknown peer {peer!r}; expected one of {', '.join(PEERS)}")


def _described(server: Server) -> dict[str, Any]:
    """What bench.json says about a server: its command, versions and each form's path and body."""
    return {
        "server": server.key,
        "workers": server.workers,
        "command": " ".join(server.command),
        "versions": dict(server.versions),
        "forms": [
            {"label": form.label, "path": form.path, "body": body_described(form)} for form in server.forms
        ],
    }


def body_described(form: Form) -> Any:
    """A form's body as JSON; a binary tensor data body as its JSON header and the count of raw bytes after it."""
    header = form.headers.get("Inference-Header-Content-Length")
    if header is None:
        return json.loads(form.body)
    return {"json": json.loads(form.body[: int(header)]), "binary_bytes": len(form.body) - int(header)}


def _v2_server(model_dir: Path, python: str) -> Server:
    """The service's v2 infer route with a batch of `report.V2_ROWS` rows, as JSON and as binary tensor
    data (the Open Inference Protocol's extension, as tritonclient can send it): what the framing saves."""
    card = ModelDir(model_dir).read_card()
    rows = read_json(model_dir / "eval.json")["rows"]
    data = [value for row in (rows * report.V2_ROWS)[: report.V2_ROWS] for value in row]
    tensor = {
        "name": card.inputs[0].name,
        "shape": [report.V2_ROWS, len(rows[0])],
        "datatype": "FP32",
    }
    as_json = _json({"inputs": [{**tensor, "data": data}]})
    packed = struct.pack(f"<{len(data)}f", *data)
    header = _json(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(packed)}}],
            "parameters": {"binary_data_output": True},
        }
    )
    path = f"/v2/models/{card.name}/infer"
    return Server(
        key="v2",
        workers=2,
        command=[python, "-m", "model_service", "--model-dir", str(model_dir), "--host", "127.0.0.1",
                 "--port", "{port}", "--metrics-port", "{metrics_port}", "--workers", "2"],
        forms=(
            Form(report.V2_JSON, path, as_json, (32,)),
            Form(report.V2_BINARY, path, header + packed, (32,),
                 headers={"Inference-Header-Content-Length": str(len(header))}),
        ),
    )  # fmt: skip


def _json(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _log_to_mlflow(model_dir: Path, root: Path, reporter: Reporter) -> tuple[str, str]:
    """Log the trained scikit-learn model (the one exported to ONNX) to a throw-away MLflow store."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow  # noqa: PLC0415
    import mlflow.sklearn  # noqa: PLC0415

    # Cloudpickle (skops is not installed) makes mlflow.sklearn warn about pickles: this one is ours.
    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
    root.mkdir(parents=True)
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=tracking)
    experiment = client.create_experiment("bench", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_tracking_uri(tracking)
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(
            ModelDir(model_dir).read_estimator(), name="model", serialization_format="cloudpickle"
        )
    reporter.note(f"logged the scikit-learn model to MLflow ({info.model_uri}) for `mlflow models serve`")
    return str(info.model_uri), tracking


def _check(server: Server, url: str, reporter: Reporter) -> None:
    """The server answers each form's body with 200 (the answer is shown) before any load."""
    for form in server.forms:
        answer = post(url + form.path, form.body, form.headers).decode(errors="replace")
        reporter.note(f"{form.label} x{server.workers} answers: {answer[:100]}")


def _drive(
    servers: list[Server],
    wrk_path: str,
    tmp: Path,
    not_run: list[dict[str, str]],
    *,
    duration: float,
    warmup: float,
    rounds: int,
    reporter: Reporter,
) -> list[report.Run]:
    """Rounds of A B C D: each server started, warmed up, driven at each connection count, stopped.

    Each server takes the connection counts in the opposite order to the one before it, so neighbours'
    runs at the same count are back to back (the service's 2 workers and the minimal app at 32 above all:
    their pair gives the ratio that is closest to its bound). A peer that fails to start or to answer
    is dropped from later rounds and listed in `not_run` with the error; its runs so far are kept."""
    runs: list[report.Run] = []
    failed: set[tuple[str, int]] = set()
    for round_ in range(1, rounds + 1):
        for index, server in enumerate(servers):
            if (server.key, server.workers) in failed:
                continue
            try:
                runs += _drive_one(
                    server, index, round_, wrk_path, tmp, duration=duration, warmup=warmup, reporter=reporter
                )
            except (StageError, OSError) as exc:
                if server.key not in PEERS:
                    raise
                failed.add((server.key, server.workers))
                name = f"{server.key} x{server.workers}"
                reporter.note(f"round {round_}: {name} failed, left out from here on: {exc}")
                not_run.append({"server": name, "reason": f"round {round_}: {exc}"})
    return runs


def _drive_one(
    server: Server,
    index: int,
    round_: int,
    wrk_path: str,
    tmp: Path,
    *,
    duration: float,
    warmup: float,
    reporter: Reporter,
) -> list[report.Run]:
    """One start of one server: the runs of each of its forms at each connection count."""
    runs = []
    log = tmp / "logs" / f"{server.key}-{server.workers}-{round_}.log"
    with running(server, log) as live:
        reporter.note(
            f"round {round_}: {server.key} x{server.workers} first 200 after {live.startup_s:.2f} s"
        )
        body_files = {}
        for form in server.forms:
            body_files[form.label] = tmp / f"{form.label.replace(' ', '_')}.json"
            body_files[form.label].write_bytes(form.body)
        if round_ == 1:
            _check(server, live.url, reporter)
        first = server.forms[0]
        wrk.run(wrk_path, live.url + first.path, body_files[first.label], connections=32,
                duration_s=warmup, headers=first.headers)  # fmt: skip
        for form in server.forms:
            if form.first_round_only and round_ > 1:
                continue
            for connections in form.connections if index % 2 else form.connections[::-1]:
                cpu_before = cpu_seconds(live.process.pid)
                result = wrk.run(
                    wrk_path,
                    live.url + form.path,
                    body_files[form.label],
                    connections=connections,
                    duration_s=duration,
                    headers=form.headers,
                )
                server_cpu = cpu_used(cpu_before, cpu_seconds(live.process.pid))
                used = memory(live.process.pid)
                runs.append(
                    report.Run(
                        server=form.label,
                        workers=server.workers,
                        connections=connections,
                        round=round_,
                        rps=round(result.rps, 1),
                        p50_ms=result.p50_ms,
                        p95_ms=result.p95_ms,
                        p99_ms=result.p99_ms,
                        errors=result.errors,
                        rss_mb=used.rss_mb,
                        worker_rss_mb=used.worker_rss_mb,
                        processes=used.processes,
                        loadgen_cpu_s=result.loadgen_cpu_s,
                        duration_s=result.duration_s,
                        requests=result.requests,
                        startup_s=live.startup_s,
                        server_cpu_s=round(server_cpu, 3),
                    )
                )
                reporter.note(
                    f"round {round_}: {form.label} x{server.workers} c{connections}: "
                    f"{result.rps:,.0f} req/s, p99 {result.p99_ms:.2f} ms, errors {result.errors}, "
                    f"RSS {used.rss_mb:.0f} MB, wrk {result.loadgen_cpu_s / result.duration_s:.2f} cores"
                )
    return runs
