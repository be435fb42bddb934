"""Each peer model server in a venv of its own (`.nox/bench-<peer>`), installed from the registries with uv.

The four servers pin different fastapi, pydantic and uvicorn ranges, so none shares a venv with the bench
or with another; their requirements are the `bench-<peer>` dependency groups of pyproject.toml. A peer
that cannot be installed here is not an error of the bench: it becomes a row that says why.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from benchmarks.servers import REPO

INSTALL_TIMEOUT_S = 900.0


class PeerUnavailable(Exception):
    """The peer cannot run here; the message says why (it goes into the report as the row's reason)."""


@dataclass(frozen=True)
class PeerVenv:
    python: Path
    bin: Path
    versions: dict[str, str]
    """Installed version of each requirement of the group, by distribution name."""


def group(peer: str, pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """The requirements of the `bench-<peer>` dependency group."""
    groups = tomllib.loads(pyproject.read_text())["dependency-groups"]
    name = f"bench-{peer}"
    if name not in groups:
        raise PeerUnavailable(
            f"{pyproject}: [dependency-groups] has no `{name}`; add it with the peer's packages"
        )
    return [str(requirement) for requirement in groups[name]]


def ensure(peer: str, root: Path = REPO / ".nox", pyproject: Path = REPO / "pyproject.toml") -> PeerVenv:
    """Create (once) and update the peer's venv with its dependency group; raise PeerUnavailable with the
    installer's last lines when that fails (no registry, no wheel for this Python, a conflict)."""
    uv = shutil.which("uv")
    if uv is None:
        raise PeerUnavailable("uv is not on PATH (nox's uv backend installs it: `pip install 'nox[uv]'`)")
    requirements = group(peer, pyproject)
    venv = root / f"bench-{peer}"
    python = venv / "bin" / "python"
    if not python.exists():
        _uv([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], f"creating {venv}")
    _uv([uv, "pip", "install", "--quiet", "--python", str(python), *requirements],
        f"installing {' '.join(requirements)} into {venv}")  # fmt: skip
    listed = _uv([uv, "pip", "freeze", "--python", str(python)], f"listing {venv}")
    installed = {
        _name(name): version
        for name, version in (line.split("==", 1) for line in listed.splitlines() if "==" in line)
    }
    names = [_name(requirement) for requirement in requirements]
    return PeerVenv(python, venv / "bin", {name: installed.get(name, "?") for name in names})


def _name(requirement: str) -> str:
    for mark in "<>=!~[; ":
        requirement = requirement.split(mark, 1)[0]
    return requirement.strip().lower().replace("_", "-")


def _uv(command: list[str], what: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise PeerUnavailable(f"{what}: no result after {INSTALL_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        raise PeerUnavailable(f"{what} failed (exit {done.returncode}): {tail}")
    return done.stdout
