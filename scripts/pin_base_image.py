"""Pin the service image's base by digest: resolve the tag of model_service/Dockerfile's `ARG BASE_IMAGE=`
to the digest a registry serves for it now, and write `TAG@sha256:DIGEST` back into that line.

The update path for the base (docs/image.md, "Base image"): run it where a registry answers, review the
diff, build (`nox -s image`), commit. It asks whichever resolver is installed, in order: `crane digest`,
`skopeo inspect`, `docker buildx imagetools inspect`; each reads the registry's manifest list (the
multi-platform index), so the digest names every platform's image at once.

Usage: python scripts/pin_base_image.py [--tag python:3.11-slim-bookworm] [--check]
  --check: exit 1 when the Dockerfile's base carries no digest (nothing is resolved or written).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[1] / "model_service" / "Dockerfile"
ARG_LINE = re.compile(r"^ARG BASE_IMAGE=(?P<tag>[^@\s]+)(?:@(?P<digest>sha256:[0-9a-f]{64}))?$", re.MULTILINE)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def current(dockerfile: str) -> tuple[str, str | None]:
    """(tag, digest or None) of the Dockerfile's `ARG BASE_IMAGE=` line."""
    found = ARG_LINE.search(dockerfile)
    if found is None:
        raise ValueError(f"{DOCKERFILE}: no `ARG BASE_IMAGE=TAG[@sha256:...]` line")
    return found["tag"], found["digest"]


def pinned(dockerfile: str, tag: str, digest: str) -> str:
    """The Dockerfile with its base set to `tag@digest` (and nothing else changed)."""
    if not DIGEST.match(digest):
        raise ValueError(f"{digest!r} is not a sha256 digest")
    current(dockerfile)
    return ARG_LINE.sub(f"ARG BASE_IMAGE={tag}@{digest}", dockerfile, count=1)


def resolve(tag: str) -> str:
    """The digest a registry serves for `tag` now, from the first resolver installed."""
    if shutil.which("crane"):
        return _run(["crane", "digest", tag]).decode().strip()
    if shutil.which(
        "skopeo"
    ):  # the raw manifest list, byte for byte: its digest is the sha256 of those bytes
        return "sha256:" + hashlib.sha256(_run(["skopeo", "inspect", "--raw", f"docker://{tag}"])).hexdigest()
    if shutil.which("docker"):
        out = _run(["docker", "buildx", "imagetools", "inspect", "--format", "{{json .Manifest}}", tag])
        return str(json.loads(out)["digest"])
    raise RuntimeError("no resolver installed: install crane, skopeo or docker buildx")


def _run(command: list[str]) -> bytes:
    result = subprocess.run(command, capture_output=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed: {result.stderr.decode(errors='replace').strip()[-400:]}"
        )
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tag", help="the tag to pin (default: the Dockerfile's)")
    parser.add_argument("--check", action="store_true", help="only check that the base carries a digest")
    args = parser.parse_args(argv)
    text = DOCKERFILE.read_text(encoding="utf-8")
    tag, digest = current(text)
    if args.check:
        if digest is None:
            sys.stderr.write(f"{DOCKERFILE}: BASE_IMAGE {tag} is not pinned by digest; run {__file__}\n")
            return 1
        return 0
    try:
        new = resolve(args.tag or tag)
    except RuntimeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    DOCKERFILE.write_text(pinned(text, args.tag or tag, new), encoding="utf-8")
    sys.stdout.write(f"BASE_IMAGE {args.tag or tag}@{new} (was {digest or 'unpinned'})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
