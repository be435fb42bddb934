"""`service.fallback.source: previous` on a real registry: the version serving now for a candidate, the
alias history once the candidate serves, nothing for the first version; and the rehearsal and `serve`
starting the service with it."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipeline.adapters.registry import previous_model_dir
from pipeline.artifacts import current_model_dir
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.workspace import Workspace

pytestmark = pytest.mark.slow  # two trained versions
SERVE_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_previous_is_the_serving_version_then_the_history(stable_and_candidate: Path, tmp_path: Path) -> None:
    root = tmp_path / "workspace"
    shutil.copytree(stable_and_candidate, root, ignore=shutil.ignore_patterns("reports"))
    config = load_config("dev", root / "environments", ("service.fallback={source: previous}",))
    workspace = Workspace(root)
    candidate = current_model_dir(config, workspace)

    found = previous_model_dir(config, workspace, candidate)
    assert found is not None
    stable, version = found
    assert version == "1"
    assert stable.version != candidate.version
    assert stable.card.is_file()  # ready to be served or baked in
    assert previous_model_dir(config, workspace, stable) is None  # nothing served before version 1

    assert main(["promote", "--env", "dev", "--workdir", str(root)]) == 0
    # The candidate serves now: its fallback is the version it replaced, from the alias history.
    found = previous_model_dir(config, workspace, candidate)
    assert found is not None
    assert found[1] == "1"
    assert found[0].path == stable.path


def test_the_rehearsals_candidate_serves_stable_as_its_fallback(
    stable_and_candidate: Path, tmp_path: Path
) -> None:
    root = tmp_path / "workspace"
    shutil.copytree(stable_and_candidate, root, ignore=shutil.ignore_patterns("reports"))
    config = load_config("dev", root / "environments", ("service.fallback={source: previous}",))
    found = previous_model_dir(config, Workspace(root), current_model_dir(config, Workspace(root)))
    assert found is not None
    stable_version = json.loads(found[0].card.read_text())["version"]
    code = main(
        ["rollout", "--env", "dev", "--workdir", str(root), "--set", "service.fallback={source: previous}"]
    )
    assert code == 0
    [log] = (root / "reports" / "dev").glob("*/rollout/candidate.log")
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    loaded = [event for event in events if event["event"] == "fallback_loaded"]
    assert loaded, "the candidate started without a fallback"
    assert {event["fallback_version"] for event in loaded} == {stable_version}
    assert not any(event["event"] == "fallback_answer" for event in events)  # a healthy primary answered all


def test_serve_runs_the_serving_version_with_the_one_it_replaced(
    stable_and_candidate: Path, tmp_path: Path
) -> None:
    root = tmp_path / "workspace"
    shutil.copytree(stable_and_candidate, root, ignore=shutil.ignore_patterns("reports"))
    assert main(["promote", "--env", "dev", "--workdir", str(root)]) == 0  # version 2 serves, 1 served before
    port, metrics_port = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "serve",
        "--env",
        "dev",
        "--workdir",
        str(root),
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
    ]
    command += ["--set", "service.fallback={source: previous}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_SERVICE_")}
    with (tmp_path / "serve.log").open("w") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    closed = 'model_service_breaker_state{state="closed"} 1.0'
    try:
        metrics = ""
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        # Until the worker's gauge is there: the metrics process answers before the worker has started.
        while time.monotonic() < deadline and process.poll() is None and closed not in metrics:
            with contextlib.suppress(httpx.TransportError):
                metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
            time.sleep(0.5)
        assert closed in metrics, (tmp_path / "serve.log").read_text()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # nothing of the group outlives the test
    output = (tmp_path / "serve.log").read_text()
    assert "fallback: version 1" in output
    assert '"event":"fallback_loaded"' in output
