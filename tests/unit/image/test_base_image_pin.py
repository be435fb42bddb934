"""The service image's base is pinned by digest (issue 36): the Dockerfile's `ARG BASE_IMAGE=` names
`TAG@sha256:DIGEST`, the image stage builds from it unless `image.base_image` says otherwise, and
scripts/pin_base_image.py rewrites that one line when the base is refreshed.

A digest names one manifest (list), immutable; a tag may be moved to another image at any time
(https://docs.docker.com/reference/dockerfile/#from: `FROM [--platform=<platform>] <image>[@<digest>]`)."""

import re
from pathlib import Path

import pytest

from pipeline.adapters.docker_engine import base_image_arg
from pipeline.config import load_config
from pipeline.errors import StageError
from pipeline.stages.image import DOCKERFILE, dockerfile_base_image
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
