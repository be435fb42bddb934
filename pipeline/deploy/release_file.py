"""The one piece of state an overlay holds: k8s/overlays/<env>/release.yaml, the image (digest or tag) and
model version `promote --gitops` wrote last (render reads it and keeps it), and the YAML every rendered
file is written in."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Config, ConfigError
from pipeline.deploy.names import K8S_DIR, RELEASE_FILE, UNRELEASED_TAG


@dataclass(frozen=True)
class Release:
    """What an overlay deploys: written by `promote --gitops`, read (and kept) by `render`."""

    image: str
    tag: str = UNRELEASED_TAG
    digest: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    """sha256 of the version's ONNX file as the registry recorded it at register (`onnx_sha256` tag): the
    pods refuse to start on another file (MODEL_SERVICE_EXPECTED_SHA256)."""
    git_sha: str | None = None
    replaces: str | None = None
    """The reference this release replaced (written by `promote --gitops`); null for an environment's first
    release, which has no stable version to compare with (docs/kubernetes.md, "The first release")."""
    compatibility: str | None = None
    """`breaking`, `additive` or `same` against the release it replaced (release/compatibility.py): a breaking
    one is rolled out by `rollout.breaking`'s plan (blue-green), never by a canary."""

    @property
    def reference(self) -> str:
        return f"{self.image}@{self.digest}" if self.digest else f"{self.image}:{self.tag}"

    @property
    def released(self) -> bool:
        """False until a promotion (or a person) wrote an image: the overlay then deploys no workload."""
        return self.digest is not None or self.tag != UNRELEASED_TAG


def overlay_dir(root: Path, env: str) -> Path:
    return root / K8S_DIR / "overlays" / env


def read_release(root: Path, config: Config) -> Release:
    path = overlay_dir(root, config.name) / RELEASE_FILE
    if not path.is_file():
        return Release(image=config.image.repository)
    return parse_release(path.read_text(encoding="utf-8"), str(path))


def parse_release(text: str, source: str) -> Release:
    """A release.yaml's content; `source` (a path, or `COMMIT:path`) names it in the error."""
    data = yaml.safe_load(text) or {}
    try:
        values: dict[str, Any] = {k: (None if v is None else str(v)) for k, v in data.items()}
        return Release(**values)
    except (TypeError, AttributeError):
        keys = ", ".join(data) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(
            f"{source}: expected keys {', '.join(Release.__dataclass_fields__)}, got {keys}"
        ) from None


def release_text(config: Config, release: Release) -> str:
    header = (
        f"# What k8s/overlays/{config.name} deploys. Written by `python -m pipeline promote --env "
        f"{config.name} --gitops`;\n# `render` reads it and keeps it. Edit only to pin an image by hand.\n"
    )
    return header + dump(asdict(release))


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as `|` blocks, so diffs of queries stay readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)


def dump_all(documents: list[Any]) -> str:
    """Several documents in one file, `---` between them."""
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
