"""image: build the service image with the current export baked in, smoke-test it, push it by digest.

The build is hermetic: a context is staged under build/ with the service's source, its lock file, a
wheelhouse of the lock (linux/amd64, cp311) and the model, and built with the network off. The image
is tagged `<repository>:<git-sha>-<model-version>`, started, asked for a prediction and a bad request,
and stopped with SIGTERM (it must drain and exit 0). Then, when configured, it is pushed and the
registry's digest recorded. Supply chain: a CycloneDX SBOM and a pip-audit of the lock sit next to
image.json in reports/<env>/<run-id>/image/. Without a Docker daemon the stage is skipped, saying so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_service.contract.signature import SIGNATURE_FILE
from pipeline.adapters import registry
from pipeline.adapters.docker_engine import build, connect, push, require_daemon
from pipeline.adapters.github_actions import write_step_outputs
from pipeline.adapters.processes import free_port
from pipeline.adapters.python_lock import LOCK_FILE, audit_lock, wheelhouse, write_sbom
from pipeline.artifacts import ModelDir
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.stage import StageContext, StageResult
from pipeline.workspace import Workspace, write_json

if TYPE_CHECKING:
    from docker import DockerClient

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DIR = ROOT / "model_service"
STATIC_DIR = SERVICE_DIR / "protocol" / "static"
"""The /docs page's vendored files (model_service/protocol/openapi.py DOCS_ASSETS): data, not modules."""
DOCKERFILE = SERVICE_DIR / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

IMAGE_FILE = "image.json"
SBOM_FILE = "sbom.cdx.json"
AUDIT_FILE = "pip-audit.json"
CONTAINER_PORT_ENV = "MODEL_SERVICE_PORT"
FALLBACK_BUILD_ARG = "FALLBACK_DIR"
"""Build argument that becomes MODEL_SERVICE_FALLBACK_DIR in the image (empty: no fallback)."""
IMAGE_FALLBACK_DIR = "/fallback"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30


@dataclass(frozen=True)
class Smoke:
    ready_seconds: float
    predict_status: int
    bad_request_status: int
    bad_request_code: str
    exit_code: int


@dataclass(frozen=True, kw_only=True)
class ImageResult(StageResult):
    reference: str
    image_id: str
    digest: str | None
    """`repository@sha256:…` from the registry when pushed, else None."""
    model_version: str
    size_bytes: int
    build_seconds: float
    smoke: Smoke


def image(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    model: ModelDir,
    fallback: ModelDir | None = None,
) -> ImageResult:
    """Build (and smoke-test, push) the image of `model`, with `fallback` baked in beside it when given."""
    client = connect()
    try:
        return _image(client, config, workspace, reporter, model, fallback=fallback)
    finally:
        client.close()


def _image(
    client: DockerClient,
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    model: ModelDir,
    *,
    fallback: ModelDir | None,
) -> ImageResult:
    registration = model.read_optional(model.registration)
    model_version = registration["model_version"] if registration else model.version
    git_sha = workspace.git_sha()
    tag = f"{git_sha[:12]}-{model_version}"
    reference = f"{config.image.repository}:{tag}"
    report_dir = workspace.run_dir(config) / "image"

    wheels = wheelhouse(workspace, config.image.platform, reporter)
    context = stage_context(workspace.root / "build" / "image-context", model, wheels, fallback)
    base = config.image.base_image or dockerfile_base_image(DOCKERFILE.read_text(encoding="utf-8"))
    reporter.note(f"building {reference} from {base} (network off)")
    if "@sha256:" not in base:  # a local base (scripts/base-image.sh) has no registry digest to pin
        reporter.note(f"base image {base} is not pinned by digest: the same tag may build from another image")
    fallback_args = {FALLBACK_BUILD_ARG: IMAGE_FALLBACK_DIR} if fallback is not None else {}
    built, build_seconds = build(client, context, reference, config, fallback_args)
    size = int(built.attrs.get("Size", 0))
    reporter.note(f"built {built.id} ({size / 1e6:.0f} MB) in {build_seconds:.1f}s")

    smoke = smoke_test(client, reference, model, config, reporter)
    digest = push(client, config, tag, reporter) if config.image.push else None
    if not config.image.push:
        reporter.note("not pushed (image.push is false): no registry digest; deploys name the tag")

    sbom = write_sbom(report_dir / SBOM_FILE, reporter)
    audit = audit_lock(report_dir / AUDIT_FILE, reporter)
    record = {
        "reference": reference,
        "repository": config.image.repository,
        "tag": tag,
        "image_id": built.id,
        "digest": digest,
        "pushed": digest is not None,
        "model_name": config.model.name,
        "model_version": model_version,
        "artifact_version": model.version,
        "registered": registration is not None,
        "git_sha": git_sha,
        "base_image": base,
        "platform": config.image.platform,
        "lock_sha256": hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest(),
        "size_bytes": size,
        "build_seconds": round(build_seconds, 2),
        "smoke": asdict(smoke),
        "sbom": SBOM_FILE if sbom else None,
        "audit": audit,
    }
    write_json(report_dir / IMAGE_FILE, record)
    # The latest image of this model version, for the stages after (load test, GitOps overlay).
    write_json(model.image, record)
    # In a workflow step, the image and pushed digest as step outputs: CD reads them, not these files.
    write_step_outputs({"image": reference, "digest": digest or ""})
    tags = {**registry.image_tags(digest or reference, digest), "image_id": str(built.id)}
    registry.tag_registered(config, workspace, model, tags, reporter)
    reporter.note(f"report: {report_dir / IMAGE_FILE}")
    return ImageResult(
        headline=f"{digest or reference}, {size / 1e6:.0f} MB",
        artifacts={"record": report_dir / IMAGE_FILE, "sbom": report_dir / SBOM_FILE},
        reference=reference,
        image_id=str(built.id),
        digest=digest,
        model_version=model_version,
        size_bytes=size,
        build_seconds=build_seconds,
        smoke=smoke,
    )


# --- build -------------------------------------------------------------------------------------------


def dockerfile_base_image(dockerfile: str) -> str:
    """The default of the Dockerfile's `ARG BASE_IMAGE=...`: the base it builds from without a build argument."""
    for line in dockerfile.splitlines():
        if line.startswith("ARG BASE_IMAGE="):
            return line.removeprefix("ARG BASE_IMAGE=").strip()
    raise StageError(
        f"{DOCKERFILE}: no `ARG BASE_IMAGE=` line; the image stage reads the pinned base from it"
    )


def stage_context(context: Path, model: ModelDir, wheels: Path, fallback: ModelDir | None = None) -> Path:
    """The build context, laid out as model_service/Dockerfile expects (see its header)."""
    shutil.rmtree(context, ignore_errors=True)
    (context / "model_service").mkdir(parents=True)
    (context / "model").mkdir()
    (context / "fallback").mkdir()  # empty without a fallback: the Dockerfile copies it either way
    (context / "wheels").mkdir()
    # The package and its subpackages' modules, and the files the /docs page loads (protocol/static/).
    sources = [*SERVICE_DIR.rglob("*.py"), *(p for p in STATIC_DIR.rglob("*") if p.is_file())]
    for source in sources:
        target = context / "model_service" / source.relative_to(SERVICE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    shutil.copy2(LOCK_FILE, context / LOCK_FILE.name)
    shutil.copy2(DOCKERFILE, context / "Dockerfile")
    shutil.copy2(DOCKERIGNORE, context / ".dockerignore")
    _copy_served_files(model, context / "model")
    if fallback is not None:
        _copy_served_files(fallback, context / "fallback")
    for wheel in wheels.glob("*.whl"):
        try:
            os.link(wheel, context / "wheels" / wheel.name)
        except OSError:
            shutil.copy2(wheel, context / "wheels" / wheel.name)
    # Artifacts are written 0600 (atomic temp files); the image runs as a non-root user that must read them.
    for path in (context / "model_service", context / "model", context / "fallback"):
        for file in path.rglob("*"):
            file.chmod(0o755 if file.is_dir() else 0o644)
    return context


def _copy_served_files(model: ModelDir, target: Path) -> None:
    """The ONNX file, the card and, when its version was signed at register, the signature."""
    signature = model.path / SIGNATURE_FILE
    for path in (model.onnx, model.card, *([signature] if signature.is_file() else [])):
        shutil.copy2(path, target / path.name)


# --- smoke test ----------------------------------------------------------------------------------------


def _request(url: str, body: object | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        return int(exc.code), json.loads(payload) if payload else {}


def sample_row(model: ModelDir) -> list[Any]:
    """A real evaluation row as a client sends it (numbers, strings, null) when export wrote one, else zeros
    of the card's width."""
    evaluation = model.read_optional(model.evaluation)
    rows = (evaluation or {}).get("rows") or []
    if rows:
        return list(rows[0])
    return [0.0] * model.read_card().n_features


def smoke_test(
    client: DockerClient, reference: str, model: ModelDir, config: Config, reporter: Reporter
) -> Smoke:
    """Run the image on the host network, wait for /readyz, predict, send a bad request, stop it."""
    from docker.errors import DockerException  # noqa: PLC0415

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    card = model.read_card()
    started = time.perf_counter()
    container = client.containers.run(
        reference,
        detach=True,
        network_mode="host",  # the engine may run without a bridge; -p would publish nothing then
        # On the host network the metrics port is the host's too: a free one, not the default 9000.
        environment={
            CONTAINER_PORT_ENV: str(port),
            "MODEL_SERVICE_METRICS_PORT": str(free_port()),
            "MODEL_SERVICE_ENVIRONMENT": config.name,
        },
    )
    try:
        ready = _wait_ready(container, base, started)
        reporter.note(f"container ready in {ready:.1f}s on {base}")
        status, answer = _request(f"{base}/v1/predict", {"instances": [sample_row(model)]})
        if status != 200 or len(answer.get("predictions", [])) != 1:
            raise StageError(f"smoke test: prediction answered {status} {answer}")
        if answer.get("model", {}).get("version") != card.version:
            raise StageError(f"smoke test: the container serves {answer.get('model')}, not {card.version}")
        bad_status, bad = _request(f"{base}/v1/predict", {"instances": [[1.0]]})
        bad_code = str(bad.get("error", {}).get("code", ""))
        if bad_status != 422 or not bad_code:
            raise StageError(f"smoke test: a wrong-shape request answered {bad_status} {bad}, not 422")
        reporter.note(f"prediction 200, wrong shape {bad_status} {bad_code}")
        container.stop(timeout=STOP_TIMEOUT_S)
        exit_code = int(container.wait(timeout=STOP_TIMEOUT_S)["StatusCode"])
        if exit_code != 0:
            raise StageError(f"smoke test: on SIGTERM the container exited {exit_code}, not 0")
        reporter.note("stopped with SIGTERM: drained and exited 0")
        return Smoke(round(ready, 2), status, bad_status, bad_code, exit_code)
    finally:
        with contextlib.suppress(DockerException):
            container.remove(force=True)


def _wait_ready(container: Any, base: str, started: float) -> float:
    while time.perf_counter() - started < READY_TIMEOUT_S:
        container.reload()
        if container.status in {"exited", "dead"}:
            logs = container.logs().decode(errors="replace").strip()[-600:]
            raise StageError(f"smoke test: the container exited before it was ready: {logs}")
        try:
            status, _ = _request(f"{base}/readyz")
        except (OSError, ValueError):
            status = 0
        if status == 200:
            return time.perf_counter() - started
        time.sleep(0.2)
    logs = container.logs().decode(errors="replace").strip()[-600:]
    raise StageError(f"smoke test: /readyz not 200 within {READY_TIMEOUT_S:.0f}s: {logs}")


# --- push and supply chain ------------------------------------------------------------------------------


def run(ctx: StageContext) -> ImageResult:
    require_daemon()  # skipped before any training when no engine answers
    model = ctx.exported_model()
    return image(ctx.config, ctx.workspace, ctx.reporter, model=model, fallback=ctx.fallback_model(model))
