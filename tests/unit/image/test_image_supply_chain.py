"""The service image's supply chain (issue 36). Its base is pinned by digest: the Dockerfile's `ARG BASE_IMAGE=` names
`TAG@sha256:DIGEST`, the image stage builds from it unless `image.base_image` says otherwise, and
scripts/pin_base_image.py rewrites that one line when the base is refreshed; and the models' signatures
reach the image.

A digest names one manifest (list), immutable; a tag may be moved to another image at any time
(https://docs.docker.com/reference/dockerfile/#from: `FROM [--platform=<platform>] <image>[@<digest>]`)."""

import re
from pathlib import Path

import pytest

from model_service.contract.signature import SIGNATURE_FILE
from pipeline.adapters.docker_engine import base_image_arg
from pipeline.artifacts import ModelDir
from pipeline.config import load_config
from pipeline.errors import StageError
from pipeline.stages.image import DOCKERFILE, dockerfile_base_image, stage_context
from tests._workflows import load_script

ROOT = Path(__file__).resolve().parents[3]
pin = load_script("pin_base_image")


def test_the_dockerfiles_base_carries_a_digest_and_every_from_uses_it() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    tag, digest = pin.current(text)
    assert tag == "python:3.11-slim-bookworm"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert froms and set(froms) == {"${BASE_IMAGE}"}  # no stage bypasses the pinned argument
    assert pin.main(["--check"]) == 0


def test_the_image_stage_builds_from_the_pinned_default_unless_the_environment_names_a_base() -> None:
    config = load_config("dev", ROOT / "environments")
    assert config.image.base_image is None
    assert base_image_arg(config) == {}  # no build argument: the Dockerfile's pinned default
    assert dockerfile_base_image(DOCKERFILE.read_text(encoding="utf-8")).endswith(
        pin.current(DOCKERFILE.read_text(encoding="utf-8"))[1]
    )
    local = load_config("dev", ROOT / "environments", ["image.base_image=model-cicd-base:bookworm"])
    assert base_image_arg(local) == {"BASE_IMAGE": "model-cicd-base:bookworm"}
    with pytest.raises(StageError, match="no `ARG BASE_IMAGE=` line"):
        dockerfile_base_image("FROM scratch\n")


def test_pinning_rewrites_the_argument_line_alone() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    digest = "sha256:" + "1" * 64
    new = pin.pinned(text, "python:3.11-slim-bookworm", digest)
    changed = [(a, b) for a, b in zip(text.splitlines(), new.splitlines(), strict=True) if a != b]
    assert changed == [
        (
            f"ARG BASE_IMAGE={pin.current(text)[0]}@{pin.current(text)[1]}",
            f"ARG BASE_IMAGE=python:3.11-slim-bookworm@{digest}",
        )
    ]
    unpinned = pin.ARG_LINE.sub("ARG BASE_IMAGE=python:3.11-slim-bookworm", text)
    assert pin.current(unpinned) == ("python:3.11-slim-bookworm", None)
    assert pin.current(pin.pinned(unpinned, "python:3.11-slim-bookworm", digest))[1] == digest
    with pytest.raises(ValueError, match="not a sha256 digest"):
        pin.pinned(text, "python:3.11-slim-bookworm", "latest")


def test_signatures_reach_the_image_beside_each_model(tmp_path: Path) -> None:
    """`signature.json` (written at register) goes into the context with the model and the fallback, and
    .dockerignore admits it; an unsigned folder adds nothing."""
    folders = []
    for name in ("version", "previous"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.onnx").write_bytes(name.encode())
        (folder / "model.json").write_text("{}")
        (folder / SIGNATURE_FILE).write_text(f'{{"signed": "{name}"}}')
        folders.append(ModelDir(folder))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    context = stage_context(tmp_path / "ctx", folders[0], wheels, folders[1])
    assert (context / "model" / SIGNATURE_FILE).read_text() == '{"signed": "version"}'
    assert (context / "fallback" / SIGNATURE_FILE).read_text() == '{"signed": "previous"}'
    allowed = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert f"!model/{SIGNATURE_FILE}" in allowed
    (folders[0].path / SIGNATURE_FILE).unlink()
    unsigned = stage_context(tmp_path / "ctx2", folders[0], wheels)
    assert sorted(p.name for p in (unsigned / "model").iterdir()) == ["model.json", "model.onnx"]
