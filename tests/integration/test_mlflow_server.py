"""The pipeline against a real MLflow tracking server on loopback (sqlite backend store, artifacts proxied
by the server), as a fork configures it with MLFLOW_TRACKING_URI: two environments' pipelines at once,
one of them trained with no server at all, as CD's `model` job does (it sees no environment's secrets).

The server needs the full `mlflow` package, which the pipeline's venv does not have (mlflow-skinny): it
runs from its own venv, created once per mlflow version under ~/.cache/mlflow-server (XDG_CACHE_HOME)."""

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.adapters.registry import alias_history

pytestmark = pytest.mark.slow  # a real MLflow server and two whole pipelines of processes

REPO = Path(__file__).parents[2]
MODEL = "breast-cancer-classifier"
STABLE = ("--set", "model.params.n_estimators=30", "--set", "model.params.max_depth=2")
"""The first version of each environment; the second is the default config (a different artifact)."""
OWN_SPLIT = {"dev": (), "staging": ("--set", "data.seed=7")}
"""Staging's models are other artifacts than dev's, so each environment registers its own versions and
which pipeline registers first does not change what the test sees."""


def server_venv() -> Path:
    """A venv with the full `mlflow` of the client's version, or the newest older one where the registry
    cannot complete that release yet (mlflow 3.18.0 came before its mlflow-tracing 3.18.0: the resolver
    backtracks), created once (uv, else venv + pip) under a lock, so concurrent test runs build it once;
    `.complete` marks a finished install."""
    version = importlib.metadata.version("mlflow-skinny")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlflow-server"
    venv = cache / version
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / ".complete").is_file():
            return venv
        shutil.rmtree(venv, ignore_errors=True)  # an install that was interrupted
        uv = shutil.which("uv")
        if uv:
            subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
            python = str(venv / "bin" / "python")
            subprocess.run(
                [uv, "pip", "install", "--quiet", "--python", python, f"mlflow<={version}"], check=True
            )
        else:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "--quiet", f"mlflow<={version}"], check=True
            )
        (venv / ".complete").touch()
    return venv


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`mlflow server` on 127.0.0.1 (sqlite store, --artifacts-destination a temp folder); its URI and
    artifacts folder. The whole process group (the server starts workers) is stopped at the end."""
    venv = server_venv()
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts = root / "artifacts"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    with (root / "server.log").open("wb") as log:  # the server writes to its own copy of the handle
        server = subprocess.Popen(
            [
                str(venv / "bin" / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (root / "server.log").read_text(errors="replace")[-2000:]
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(0.5)
        yield uri, artifacts
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def pipeline(workspace: Path, env: str, stage: str, *extra: str, server: str | None) -> str:
    """`python -m pipeline STAGE` as CI runs it; `server` None = no MLFLOW_TRACKING_URI (sqlite here)."""
    environ = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if server is not None:
        environ["MLFLOW_TRACKING_URI"] = server
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", stage, "--env", env, "--workdir", str(workspace), *extra],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{stage} --env {env} exited {done.returncode}:\n{output}"
    return output


def release(workspace: Path, env: str, server: str, *, train_on_server: bool) -> list[str]:
    """Two versions through train → export → gate → register → promote, then a rollback; the log."""
    trained_at = server if train_on_server else None
    log = []
    for params in ((*STABLE, *OWN_SPLIT[env]), OWN_SPLIT[env]):
        log += [pipeline(workspace, env, stage, *params, server=trained_at) for stage in ("train", "export")]
        log += [
            pipeline(workspace, env, stage, *params, server=server)
            for stage in ("gate", "register", "promote")
        ]
    log.append(pipeline(workspace, env, "rollback", server=server))
    return log


def registrations(workspace: Path) -> dict[str, dict[str, str]]:
    """artifact version -> registration.json of each model the workspace registered."""
    found = {}
    for path in sorted(workspace.glob("artifacts/**/registration.json")):
        record = json.loads(path.read_text())
        found[record["artifact_version"]] = record | {"dir": str(path.parent)}
    return found


def test_two_environments_release_and_roll_back_on_one_tracking_server(
    tracking_server: tuple[str, Path], tmp_path: Path
) -> None:
    uri, artifacts = tracking_server
    workspaces = {env: tmp_path / env for env in ("dev", "staging")}
    for workspace in workspaces.values():
        shutil.copytree(REPO / "environments", workspace / "environments")
    logs: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def release_env(env: str) -> None:
        try:
            # staging trains like CD's `model` job: no tracking server, runs land in the job's sqlite.
            logs[env] = release(workspaces[env], env, uri, train_on_server=env == "dev")
        except BaseException as exc:  # noqa: BLE001  (re-raised in the test's thread below)
            errors.append(exc)

    threads = [threading.Thread(target=release_env, args=(env,)) for env in workspaces]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    by_artifact = {v.tags["artifact_version"]: v for v in versions}
    assert len(by_artifact) == len(versions) == 4, "one registry version per artifact, two per environment"
    for env, workspace in workspaces.items():
        registered = registrations(workspace)
        assert len(registered) == 2, registered
        first, second = sorted(registered.values(), key=lambda r: int(r["model_version"]))
        for record in (first, second):
            version = by_artifact[record["artifact_version"]]
            run_id = str(version.run_id)
            assert str(version.version) == record["model_version"]
            assert version.tags[f"gate.{env}"] == "pass"
            # The artifacts are on the server (proxied into --artifacts-destination), byte for byte.
            local = Path(record["dir"]) / "model.onnx"
            fetched = Path(client.download_artifacts(run_id, "model/model.onnx", str(tmp_path)))
            assert (
                hashlib.sha256(fetched.read_bytes()).digest() == hashlib.sha256(local.read_bytes()).digest()
            )
            run = client.get_run(run_id)
            assert run.data.tags["artifact_version"] == record["artifact_version"]
            if env == "staging":  # trained elsewhere: register made a run here with the training lineage
                assert run.data.tags["training_run_id"] != run_id
                assert run.data.metrics and not run.data.params
            else:  # the training run itself, logged to the server
                assert "training_run_id" not in run.data.tags and run.data.params["estimator"]
        # After promote, promote, rollback: the alias is back on the first version, and history says so.
        assert str(client.get_model_version_by_alias(MODEL, env).version) == first["model_version"]
        history = [(e["action"], e["version"], e["previous"]) for e in alias_history(client, MODEL, env)]
        assert history == [
            ("promote", first["model_version"], None),
            ("promote", second["model_version"], first["model_version"]),
            ("rollback", first["model_version"], second["model_version"]),
        ]
        assert any("logged the version's artifacts" in line for line in logs[env]) == (env == "staging")
    assert any(artifacts.rglob("model.onnx")), "artifacts were not proxied into --artifacts-destination"
