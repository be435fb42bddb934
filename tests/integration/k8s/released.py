"""Overlays as a promotion leaves them, built in a temporary copy of k8s/: the committed overlays hold no
release yet (no workload), so tests of the Rollout render the release states themselves."""

import copy
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pipeline.config import load_config
from pipeline.deploy import release_file
from pipeline.deploy import render as k8s
from pipeline.deploy import validate as kv

ROOT = Path(__file__).resolve().parents[3]
State = Literal["unreleased", "first", "second"]
STATES: tuple[State, ...] = ("unreleased", "first", "second")
IMAGE = "ghcr.io/acme/model"
FIRST = release_file.Release(image=IMAGE, digest="sha256:" + "b" * 64, model_version="3", git_sha="cafe")
SECOND = release_file.Release(
    image=IMAGE, digest="sha256:" + "c" * 64, model_version="4", git_sha="f00d", replaces=FIRST.reference
)


def release_for(env: str, state: State) -> release_file.Release:
    if state == "unreleased":
        return release_file.Release(image=load_config(env, ROOT / "environments").image.repository)
    return FIRST if state == "first" else SECOND


def rendered(env: str, state: State) -> dict[str, str]:
    """Path -> text of the environment's overlay and Application for the release state."""
    return k8s.render_environment(load_config(env, ROOT / "environments"), release_for(env, state), ROOT)


@cache
def _built(env: str, state: State) -> tuple[dict[str, Any], ...]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder in ("base", "components"):
            shutil.copytree(ROOT / "k8s" / folder, root / "k8s" / folder)
        k8s.write_files(root, rendered(env, state))
        return tuple(kv.build(root / "k8s/overlays" / env))


def build_overlay(env: str, state: State) -> list[dict[str, Any]]:
    """`kustomize build` of the environment's overlay with the release state (fresh copies each call)."""
    return copy.deepcopy(list(_built(env, state)))
