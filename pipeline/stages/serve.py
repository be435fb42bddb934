"""serve: the environment's model on 127.0.0.1 in the foreground, until Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sys

from pipeline.adapters.processes import spawn, stop
from pipeline.adapters.service_process import FALLBACK_DIR_ENV, service_environment
from pipeline.artifacts import ModelDir
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.quality.join import capture_directory
from pipeline.stage import StageContext
from pipeline.workspace import Workspace, read_json


def serve(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    model: ModelDir,
    port: int,
    metrics_port: int,
    fallback: ModelDir | None = None,
) -> None:
    """Serve `model` in the foreground until Ctrl-C (with `fallback` behind the circuit breaker)."""
    model_dir = model.path
    extra = {FALLBACK_DIR_ENV: str(fallback.path)} if fallback is not None else {}
    capture_dir = (
        capture_directory(config.capture.directory, workspace.root) if config.capture.enabled else None
    )
    env_vars, headers = service_environment(config, capture_dir=capture_dir, **extra)
    url = f"http://127.0.0.1:{port}"
    auth = "".join(f" -H '{k}: {v}'" for k, v in headers.items())
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    reporter.note(f"listening on {url}  (docs {url}/docs, metrics {metrics}); Ctrl-C stops")
    if capture_dir is not None:
        ratio = f"{config.capture.sample_ratio:.0%}"
        reporter.note(f"capturing {ratio} of the answers in {capture_dir}; labels: POST {url}/v1/feedback")
    evaluation = model_dir / "eval.json"
    if evaluation.is_file():
        row = [round(v, 4) if type(v) is float else v for v in read_json(evaluation)["rows"][0]]
        body = json.dumps({"instances": [row]}, separators=(",", ":"))
        reporter.note(f"try: curl -s {url}/v1/predict -H 'Content-Type: application/json'{auth} -d '{body}'")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_SERVICE_")}
    command = [sys.executable, "-m", "model_service", "--model-dir", str(model_dir), "--port", str(port)]
    command += ["--metrics-port", str(metrics_port)]
    process = spawn(command, env={**inherited, **env_vars})
    try:
        process.wait()
    except KeyboardInterrupt:
        reporter.note("stopping the service (draining in-flight requests)")
    finally:
        stop(process)
    if process.returncode not in (0, -signal.SIGTERM):
        raise StageError(f"the service exited with {process.returncode}")


def run(ctx: StageContext) -> None:
    model = ctx.served_model()
    c, w, r, args = ctx.config, ctx.workspace, ctx.reporter, ctx.args
    fallback = ctx.fallback_model(model)
    serve(c, w, r, model=model, fallback=fallback, port=args.port, metrics_port=args.metrics_port)
