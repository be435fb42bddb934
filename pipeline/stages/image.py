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
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.adapters import registry
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError, StageSkipped
from pipeline.stages.export import CARD_FILE, EVAL_FILE, ONNX_FILE, exported_model
from pipeline.stages.register import REGISTRATION_FILE
from pipeline.workspace import Workspace, read_json, write_json

if TYPE_CHECKING:
    from docker import DockerClient

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DIR = ROOT / "model_service"
DOCKERFILE = SERVICE_DIR / "Dockerfile"
LOCK_FILE = SERVICE_DIR / "requirements.lock"
DOCKERIGNORE = ROOT / ".dockerignore"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"

IMAGE_FILE = "image.json"
SBOM_FILE = "sbom.cdx.json"
AUDIT_FILE = "pip-audit.json"
CONTAINER_PORT_ENV = "MODEL_SERVICE_PORT"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30
# pip does not widen a PEP 600 tag given with --platform to older glibc tags: list those the base
# (glibc 2.36 in bookworm) accepts.
_PLATFORM_TAGS = {
    "linux/amd64": [
        f"manylinux{tag}_x86_64"
        for tag in ("_2_28", "_2_27", "_2_24", "_2_17", "2014", "_2_12", "2010", "_2_5", "1")
    ]
}


@dataclass(frozen=True)
class Smoke:
    ready_seconds: float
    predict_status: int
    bad_request_status: int
    bad_request_code: str
    exit_code: int


@dataclass(frozen=True)
class ImageResult:
    reference: str
    image_id: str
    digest: str | None
    """`repository@sha256:…` from the registry when pushed, else None."""
    model_version: str
    size_bytes: int
    build_seconds: float
    smoke: Smoke
    report_dir: Path


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def connect() -> DockerClient:
    """A client that has answered a ping; StageSkipped naming where it looked when none answers."""
    try:
        import docker  # noqa: PLC0415  (only this stage needs it; the `image` dependency group)
    except ImportError:
        raise StageSkipped(
            "the `docker` package is not installed; run `nox -s image` (dependency group `image`)"
        ) from None
    where = docker_host()
    if where.startswith("unix://"):
        # docker-py leaks its socket when a unix socket refuses; ask it first with one closed properly.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(5)
            try:
                probe.connect(where.removeprefix("unix://"))
            except OSError as exc:
                raise StageSkipped(f"no Docker daemon at {where}: {exc}") from None
    client = None
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        if client is not None:
            client.close()
        raise StageSkipped(f"no Docker daemon at {where}: {exc}") from None
    return client


def image(config: Config, workspace: Workspace, reporter: Reporter) -> ImageResult:
    client = connect()
    try:
        return _image(client, config, workspace, reporter)
    finally:
        client.close()


def _image(client: DockerClient, config: Config, workspace: Workspace, reporter: Reporter) -> ImageResult:
    version, directory = exported_model(config, workspace, reporter)
    registration_path = directory / REGISTRATION_FILE
    registration = read_json(registration_path) if registration_path.is_file() else None
    model_version = registration["model_version"] if registration else version
    git_sha = workspace.git_sha()
    tag = f"{git_sha[:12]}-{model_version}"
    reference = f"{config.image.repository}:{tag}"
    report_dir = workspace.run_dir(config) / "image"

    wheels = wheelhouse(workspace, config.image.platform, reporter)
    context = stage_context(workspace.root / "build" / "image-context", directory, wheels)
    reporter.note(f"building {reference} from {config.image.base_image} (network off)")
    built, build_seconds = build(client, context, reference, config)
    size = int(built.attrs.get("Size", 0))
    reporter.note(f"built {built.id} ({size / 1e6:.0f} MB) in {build_seconds:.1f}s")

    smoke = smoke_test(client, reference, directory, config, reporter)
    digest = push(client, config, tag, reporter) if config.image.push else None
    if not config.image.push:
        reporter.note("not pushed (image.push is false); the local image id stands in for the digest")

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
        "artifact_version": version,
        "registered": registration is not None,
        "git_sha": git_sha,
        "base_image": config.image.base_image,
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
    write_json(directory / IMAGE_FILE, record)
    if registration is not None:
        mlflow = registry.client(config, workspace)
        name = registration["model_name"]
        mlflow.set_model_version_tag(name, model_version, "image", digest or reference)
        mlflow.set_model_version_tag(name, model_version, "image_digest", digest or str(built.id))
        reporter.note(f"tagged {name} version {model_version}: image_digest={digest or built.id}")
    reporter.note(f"report: {report_dir / IMAGE_FILE}")
    return ImageResult(
        reference, str(built.id), digest, model_version, size, build_seconds, smoke, report_dir
    )


# --- build -------------------------------------------------------------------------------------------


def wheelhouse(workspace: Workspace, platform: str, reporter: Reporter) -> Path:
    """Wheels of every locked dependency for the target platform, cached by the lock's hash."""
    lock_hash = hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()[:16]
    folder = workspace.root / "build" / "wheelhouse" / f"{platform.replace('/', '-')}-{lock_hash}"
    done = folder / ".complete"
    if done.is_file():
        reporter.note(f"reused wheelhouse {folder}")
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--no-deps", "--require-hashes",
        *(arg for tag in _PLATFORM_TAGS[platform] for arg in ("--platform", tag)),
        "--python-version", "3.11", "--implementation", "cp",
        "-r", str(LOCK_FILE), "-d", str(folder),
    ]  # fmt: skip
    reporter.note(f"downloading the wheelhouse of {LOCK_FILE.name} for {platform}")
    done_proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if done_proc.returncode != 0:
        tail = " ".join((done_proc.stderr or done_proc.stdout).strip().splitlines()[-3:])
        msg = f"could not download the wheelhouse for {LOCK_FILE} (a package index must answer): {tail}"
        raise StageError(msg)
    done.write_text(lock_hash + "\n", encoding="utf-8")
    return folder


def stage_context(context: Path, model_dir: Path, wheels: Path) -> Path:
    """The build context, laid out as model_service/Dockerfile expects (see its header)."""
    shutil.rmtree(context, ignore_errors=True)
    (context / "model_service").mkdir(parents=True)
    (context / "model").mkdir()
    (context / "wheels").mkdir()
    for source in SERVICE_DIR.glob("*.py"):
        shutil.copy2(source, context / "model_service" / source.name)
    shutil.copy2(LOCK_FILE, context / "model_service" / LOCK_FILE.name)
    shutil.copy2(DOCKERFILE, context / "Dockerfile")
    shutil.copy2(DOCKERIGNORE, context / ".dockerignore")
    for name in (ONNX_FILE, CARD_FILE):
        shutil.copy2(model_dir / name, context / "model" / name)
    for wheel in wheels.glob("*.whl"):
        try:
            os.link(wheel, context / "wheels" / wheel.name)
        except OSError:
            shutil.copy2(wheel, context / "wheels" / wheel.name)
    # Artifacts are written 0600 (atomic temp files); the image runs as a non-root user that must read them.
    for path in (context / "model_service", context / "model"):
        for file in path.iterdir():
            file.chmod(0o644)
    return context


def build(client: DockerClient, context: Path, reference: str, config: Config) -> tuple[Any, float]:
    from docker.errors import APIError, BuildError  # noqa: PLC0415

    started = time.perf_counter()
    try:
        built, _logs = client.images.build(
            path=str(context),
            tag=reference,
            buildargs={"BASE_IMAGE": config.image.base_image},
            network_mode="none",
            pull=False,
            rm=True,
            forcerm=True,
        )
    except BuildError as exc:
        lines = [str(entry.get("stream") or entry.get("error") or "").strip() for entry in exc.build_log]
        tail = " | ".join(line for line in lines if line)[-600:]
        raise StageError(f"docker build of {reference} failed: {exc.msg}; last output: {tail}") from None
    except APIError as exc:
        raise StageError(f"docker build of {reference} failed: {exc.explanation or exc}") from None
    return built, time.perf_counter() - started


# --- smoke test ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _request(url: str, body: object | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        return int(exc.code), json.loads(payload) if payload else {}


def sample_row(model_dir: Path) -> list[float]:
    """A real evaluation row when export wrote one, else zeros of the card's width."""
    eval_path = model_dir / EVAL_FILE
    if eval_path.is_file():
        rows = read_json(eval_path).get("rows") or []
        if rows:
            return [float(x) for x in rows[0]]
    return [0.0] * len(read_json(model_dir / CARD_FILE)["features"])


def smoke_test(
    client: DockerClient, reference: str, model_dir: Path, config: Config, reporter: Reporter
) -> Smoke:
    """Run the image on the host network, wait for /readyz, predict, send a bad request, stop it."""
    from docker.errors import DockerException  # noqa: PLC0415

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    card = read_json(model_dir / CARD_FILE)
    started = time.perf_counter()
    container = client.containers.run(
        reference,
        detach=True,
        network_mode="host",  # the engine may run without a bridge; -p would publish nothing then
        environment={CONTAINER_PORT_ENV: str(port), "MODEL_SERVICE_ENVIRONMENT": config.name},
    )
    try:
        ready = _wait_ready(container, base, started)
        reporter.note(f"container ready in {ready:.1f}s on {base}")
        status, answer = _request(f"{base}/v1/predict", {"instances": [sample_row(model_dir)]})
        if status != 200 or len(answer.get("predictions", [])) != 1:
            raise StageError(f"smoke test: prediction answered {status} {answer}")
        if answer.get("model", {}).get("version") != card["version"]:
            raise StageError(f"smoke test: the container serves {answer.get('model')}, not {card['version']}")
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


def push(client: DockerClient, config: Config, tag: str, reporter: Reporter) -> str:
    """Push the tag; return `repository@sha256:…` as the registry reported it."""
    repository = config.image.repository
    digest = None
    for event in client.images.push(repository, tag=tag, stream=True, decode=True):
        if "error" in event:
            raise StageError(f"push of {repository}:{tag} failed: {event['error']}")
        digest = (event.get("aux") or {}).get("Digest") or digest
    if not digest:
        raise StageError(f"push of {repository}:{tag} reported no digest")
    reporter.note(f"pushed {repository}@{digest}")
    return f"{repository}@{digest}"


def write_sbom(path: Path, reporter: Reporter) -> bool:
    """CycloneDX JSON of the image's Python environment, from the lock that pip installed it from.

    The image installs exactly the lock (`--require-hashes --no-deps --no-index`), so the lock is that
    environment's full list; this needs neither the image's interpreter nor cyclonedx inside the image.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "cyclonedx_py", "requirements", str(LOCK_FILE)]
    command += ["--of", "JSON", "--output-reproducible", "-o", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reporter.warn(f"no SBOM: cyclonedx-py failed: {(done.stderr or done.stdout).strip()[-300:]}")
        return False
    reporter.note(f"SBOM (CycloneDX): {path}")
    return True


def audit_lock(path: Path, reporter: Reporter) -> dict[str, Any]:
    """pip-audit of the lock; a clear note, not a failure, when the vulnerability database is out of reach."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip_audit", "--requirement", str(LOCK_FILE), "--disable-pip", "--no-deps",
        "--progress-spinner", "off", "--format", "json", "--output", str(path),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    except subprocess.TimeoutExpired:
        reporter.warn("pip-audit: no answer from its vulnerability database within 300s; not audited")
        return {"status": "unreachable", "vulnerabilities": None}
    if path.is_file() and done.returncode in {0, 1}:
        found = read_json(path)
        vulns = [
            f"{dep['name']} {dep['version']} {v['id']}"
            for dep in found.get("dependencies", [])
            for v in dep.get("vulns", [])
        ]
        if vulns:
            reporter.warn(f"pip-audit: {len(vulns)} known vulnerabilities: {', '.join(vulns[:5])}")
        else:
            reporter.note("pip-audit: no known vulnerabilities in the lock")
        return {"status": "vulnerable" if vulns else "clean", "vulnerabilities": vulns}
    reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    reporter.warn(
        f"pip-audit could not reach its vulnerability database (offline?); not audited: {reason[0]}"
    )
    return {"status": "unreachable", "vulnerabilities": None, "reason": reason[0]}
