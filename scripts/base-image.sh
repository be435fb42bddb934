#!/usr/bin/env bash
# Make a local base image from Debian packages, for machines where no registry can be pulled from:
# Debian bookworm (minbase) with python3 (3.11) and python3-venv, imported as one layer.
# Skips when the image exists already. Needs root, debootstrap and a running engine (scripts/dockerd.sh).
# Usage: DOCKER_HOST=unix://... scripts/base-image.sh [IMAGE]   (default: model-cicd-base:bookworm)
# debootstrap uses its own default mirror, so no host name is written here.
set -euo pipefail

image="${1:-model-cicd-base:bookworm}"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image exists; nothing to do"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap not found: apt-get install debootstrap" >&2; exit 1; }

root="$(mktemp -d "${TMPDIR:-/var/tmp}/base-image.XXXXXX")"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" >"$root.log" 2>&1 \
  || { echo "debootstrap failed: $(tail -n 3 "$root.log")" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# Package lists and caches add size and nothing the image uses.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "built base image $image"
