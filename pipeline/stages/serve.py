"""serve: the environment's model on 127.0.0.1 in the foreground, until Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.adapters.service_process import service_environment, stop
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.workspace import Workspace, read_json


def served_model_dir(config: Config, workspace: Workspace, reporter: Reporter) -> Path:
    """The folder of the version serving the environment (alias `<env>`), else of the current export."""
    from pipeline.adapters import registry  # noqa: PLC0415  (MLflow is a slow import)
    from pipeline.stages.export import CARD_FILE, exported_model  # noqa: PLC0415

    mlflow = registry.client(config, workspace)
    serving = registry.alias_version(mlflow, config.model.name, config.alias)
    if serving is not None:
        artifact_version = registry.version_tags(serving).get("artifact_version", f"v{serving.version}")
        directory = workspace.version_dir(config, artifact_version)
        if not (directory / CARD_FILE).is_file():
            registry.download_version(mlflow, serving, directory)
        reporter.note(f"serving version {serving.version} (alias {config.alias!r}) from {directory}")
        return directory
    reporter.note(f"no version holds alias {config.alias!r}; serving the current export")
    _, directory = exported_model(config, workspace, reporter)
    return directory


def serve(config: Config, workspace: Workspace, reporter: Reporter, port: int) -> None:
    """Serve the environment's model in the foreground until Ctrl-C."""
    model_dir = served_model_dir(config, workspace, reporter)
    env_vars, headers = service_environment(config)
    url = f"http://127.0.0.1:{port}"
    auth = "".join(f" -H '{k}: {v}'" for k, v in headers.items())
    reporter.note(f"listening on {url}  (docs {url}/docs, metrics {url}/metrics); Ctrl-C stops")
    evaluation = model_dir / "eval.json"
    if evaluation.is_file():
        row = [round(value, 4) for value in read_json(evaluation)["rows"][0]]
        body = json.dumps({"instances": [row]}, separators=(",", ":"))
        reporter.note(f"try: curl -s {url}/v1/predict -H 'Content-Type: application/json'{auth} -d '{body}'")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_SERVICE_")}
    command = [sys.executable, "-m", "model_service", "--model-dir", str(model_dir), "--port", str(port)]
    process = subprocess.Popen(command, env={**inherited, **env_vars}, start_new_session=True)
    try:
        process.wait()
    except KeyboardInterrupt:
        reporter.note("stopping the service (draining in-flight requests)")
    finally:
        stop(process)
    if process.returncode not in (0, -signal.SIGTERM):
        raise StageError(f"the service exited with {process.returncode}")
