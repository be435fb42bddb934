"""The Docker engine through the Docker SDK: connect (or say why not), build offline, push by digest."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError, StageSkipped

if TYPE_CHECKING:
    from docker import DockerClient

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


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


def require_daemon() -> None:
    """StageSkipped (naming where it looked) unless a Docker engine answers."""
    connect().close()


def base_image_arg(config: Config) -> dict[str, str]:
    base = config.image.base_image
    return {"BASE_IMAGE": base} if base else {}


def build(
    client: DockerClient,
    context: Path,
    reference: str,
    config: Config,
    buildargs: dict[str, str] | None = None,
) -> tuple[Any, float]:
    from docker.errors import APIError, BuildError  # noqa: PLC0415

    started = time.perf_counter()
    try:
        built, _logs = client.images.build(
            path=str(context),
            tag=reference,
            # No BASE_IMAGE argument: the Dockerfile's pinned default.
            buildargs={**base_image_arg(config), **(buildargs or {})},
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
