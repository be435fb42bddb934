"""The real Dockerfile, built on a private Docker engine from a local Debian base, smoke-tested by the stage.

The engine and the base image come from scripts/dockerd.sh and scripts/base-image.sh (state under
/var/tmp, so the base image and the build cache persist between runs on the same machine). When the
engine cannot start here, the test is skipped with the engine's own error.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.cli import main

pytestmark = pytest.mark.slow  # builds the Docker image on a private engine

REPO = Path(__file__).parents[3]
MODEL = "breast-cancer-classifier"
BASE_IMAGE = "model-cicd-base:bookworm"


def _script(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def docker_host() -> Iterator[str]:
    was_running = _script("scripts/dockerd.sh", "status").returncode == 0
    started = _script("scripts/dockerd.sh", "start")
    if started.returncode != 0:
        pytest.skip(f"no Docker engine could start here: {started.stderr.strip() or started.stdout.strip()}")
    host = started.stdout.strip().removeprefix("DOCKER_HOST=")
    env = {**os.environ, "DOCKER_HOST": host}
    base = _script("scripts/base-image.sh", BASE_IMAGE, env=env, timeout=600)
    assert base.returncode == 0, base.stderr
    yield host
    if not was_running:
        _script("scripts/dockerd.sh", "stop")


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workspace = tmp_path_factory.mktemp("image-workspace")
    shutil.copytree(REPO / "environments", workspace / "environments")
    for stage in ("train", "export", "gate", "register"):
        assert main([stage, "--env", "dev", "--workdir", str(workspace)]) == 0, stage
    return workspace


def test_the_image_is_built_offline_smoke_tested_and_recorded(
    docker_host: str, registered: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    command = [sys.executable, "-m", "pipeline", "image", "--env", "dev", "--workdir", str(registered)]
    command += ["--set", f"image.base_image={BASE_IMAGE}"]
    env = {**os.environ, "DOCKER_HOST": docker_host}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "prediction 200, wrong shape 422" in done.stdout
    assert "drained and exited 0" in done.stdout

    [report] = list((registered / "reports" / "dev").glob("*/image/image.json"))
    record = json.loads(report.read_text())
    assert record["model_version"] == "1"
    assert record["tag"].endswith("-1")
    assert record["reference"] == f"model-service:{record['tag']}"
    assert record["base_image"] == BASE_IMAGE
    assert record["smoke"]["predict_status"] == 200
    assert record["smoke"]["bad_request_status"] == 422
    assert record["smoke"]["exit_code"] == 0
    assert record["pushed"] is False
    assert record["size_bytes"] > 0
    assert record["audit"]["status"] in {"clean", "vulnerable", "unreachable"}

    sbom = json.loads((report.parent / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    names = {component["name"] for component in sbom["components"]}
    assert {"onnxruntime", "uvicorn", "starlette"} <= names
    assert not names & {"mlflow", "mlflow-skinny", "scikit-learn"}
    assert (report.parent / "pip-audit.json").is_file() or record["audit"]["status"] == "unreachable"

    uri = f"sqlite:///{registered / '.mlflow' / 'mlflow.db'}"
    tags = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(MODEL, "1").tags
    # Not pushed: a local image id is no registry digest, so `image_digest` stays unset.
    assert "image_digest" not in tags
    assert tags["image_id"] == record["image_id"]
    assert tags["image"] == record["reference"]

    # What was built runs as a non-root numeric user, with a health check and the model baked in.
    inspect = subprocess.run(
        ["docker", "image", "inspect", record["reference"]],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    config = json.loads(inspect.stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert config["Entrypoint"] == ["python", "-m", "model_service"]
    assert "MODEL_SERVICE_MODEL_DIR=/model" in config["Env"]


def test_the_fallback_is_baked_in_beside_the_model(
    docker_host: str, registered: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # A named export as the fallback (here the version itself: the test is about where its files go).
    [exported] = (registered / "artifacts" / MODEL).iterdir()
    command = [sys.executable, "-m", "pipeline", "image", "--env", "dev", "--workdir", str(registered)]
    command += ["--set", f"image.base_image={BASE_IMAGE}"]
    command += ["--set", f"service.fallback={{source: export, version: {exported.name}}}"]
    env = {**os.environ, "DOCKER_HOST": docker_host}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=900
    )
    # The smoke test started the service with MODEL_SERVICE_FALLBACK_DIR=/fallback: it loaded both.
    assert done.returncode == 0, done.stdout + done.stderr
    assert "prediction 200, wrong shape 422" in done.stdout
    [report] = sorted((registered / "reports" / "dev").glob("*/image/image.json"))[-1:]
    reference = json.loads(report.read_text())["reference"]
    inspect = subprocess.run(
        ["docker", "image", "inspect", reference], env=env, capture_output=True, text=True, check=True
    )
    assert "MODEL_SERVICE_FALLBACK_DIR=/fallback" in json.loads(inspect.stdout)[0]["Config"]["Env"]
    listed = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "ls", reference, "/fallback"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert listed.stdout.split() == ["model.json", "model.onnx"]
