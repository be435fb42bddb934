"""Model signing at register: the manifest of the files the service loads (model_service/contract/signature.py)
signed with a local Ed25519 key offline, or keyless with Sigstore in GitHub CI (its OIDC token).

Offline: `python -m pipeline.release.signing keygen --out KEY.pem` makes a key (the private half never
leaves the file, mode 0600) and prints the public key for `service.signing_public_keys`; register signs with
the key at `MODEL_SIGNING_KEY_FILE` (or `registry.signing_key_file`). In GitHub CI, where the job may mint an
OIDC token (`permissions: id-token: write`), register also writes a Sigstore bundle over the same manifest
bytes: the signer is the workflow's identity, recorded in the public transparency log, no key to keep.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from model_service.contract.signature import (
    SIGNATURE_FILE,
    SIGSTORE_BUNDLE_FILE,
    build_manifest,
    canonical,
    encode_key,
    key_id,
)
from pipeline.config import Config

KEY_FILE_ENV = "MODEL_SIGNING_KEY_FILE"
"""Path of the PEM (PKCS #8) Ed25519 private key register signs with; wins over `registry.signing_key_file`."""
GITHUB_OIDC_ENV = "ACTIONS_ID_TOKEN_REQUEST_URL"
"""Set by GitHub Actions in a job that may mint an OIDC token (`id-token: write`)."""


class SigningError(Exception):
    """A key that cannot be read or used; the message names the file and the fix."""


def generate_key(path: Path) -> str:
    """Write a new Ed25519 private key to `path` (0600, refusing to overwrite); its public key, base64."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningError(f"{path} exists; choose another path (a key is never overwritten)") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return public_key(key)


def public_key(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return encode_key(raw)


def load_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in a PEM file; `SigningError` naming the file and the fix otherwise."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read signing key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningError(
            f"{path} is not an unencrypted PEM private key; make one with "
            "`python -m pipeline.release.signing keygen --out KEY.pem`"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path} holds a {type(key).__name__}; model signatures are Ed25519")
    return key


def sign_folder(folder: Path, key: Ed25519PrivateKey) -> dict[str, Any]:
    """Sign the manifest of `folder` and write `signature.json` beside the card; the file's content.

    A folder already signed keeps its other signatures when the manifest is the same (a second key adds
    one); a changed manifest starts over, since the old signatures no longer cover it."""
    manifest = build_manifest(folder)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    entry = {
        "key_id": key_id(raw),
        "algorithm": "ed25519",
        "signature": base64.b64encode(key.sign(canonical(manifest))).decode(),
    }
    path = folder / SIGNATURE_FILE
    signatures = []
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous.get("manifest") == manifest:
            signatures = [s for s in previous.get("signatures", []) if s.get("key_id") != entry["key_id"]]
    content = {"manifest": manifest, "signatures": [*signatures, entry]}
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return content


def keyless_available(environ: Mapping[str, str] | None = None) -> bool:
    """True in a GitHub Actions job that may mint an OIDC token (`permissions: id-token: write`)."""
    return bool((environ if environ is not None else os.environ).get(GITHUB_OIDC_ENV))


def sign_keyless(folder: Path) -> Path:
    """Sign the manifest of `folder` with Sigstore, the signer being this GitHub workflow's OIDC identity;
    write the bundle beside the card. Needs the `sigstore` package and a job with `id-token: write`."""
    try:  # imported by name: an optional dependency, installed by the CI workflow's signing step
        sigstore_sign = importlib.import_module("sigstore.sign")
        sigstore_oidc = importlib.import_module("sigstore.oidc")
        sigstore_trust = importlib.import_module("sigstore.models")
    except ImportError:
        raise SigningError(
            "keyless signing needs the sigstore package (`pip install sigstore`) in the job that registers"
        ) from None
    credential = sigstore_oidc.detect_credential()
    if credential is None:
        raise SigningError(
            "keyless signing: no OIDC token from GitHub Actions; give the job `id-token: write`"
        )
    token = sigstore_oidc.IdentityToken(credential)
    context = sigstore_sign.SigningContext.from_trust_config(sigstore_trust.ClientTrustConfig.production())
    with context.signer(token) as signer:
        bundle = signer.sign_artifact(canonical(build_manifest(folder)))
    path = folder / SIGSTORE_BUNDLE_FILE
    path.write_text(bundle.to_json(), encoding="utf-8")
    return path


def sign_model(config: Config, folder: Path, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Sign `folder` as `register` does: with the key at MODEL_SIGNING_KEY_FILE (else
    `registry.signing_key_file`), and keyless where GitHub Actions offers an OIDC token and
    `registry.keyless_signing` is on. The files written; `SigningError` when the environment requires
    signatures (`service.signatures`) and there is no key to make one the service can check."""
    environ = os.environ if environ is None else environ
    key_file = environ.get(KEY_FILE_ENV) or config.registry.signing_key_file
    written = []
    if key_file:
        sign_folder(folder, load_key(Path(key_file)))
        written.append(folder / SIGNATURE_FILE)
    elif config.service.signatures == "required":
        raise SigningError(
            f"{config.name} requires model signatures (service.signatures: required) and there is no signing "
            f"key: set {KEY_FILE_ENV} or registry.signing_key_file (make one with `python -m "
            "pipeline.release.signing keygen --out KEY.pem`); nothing was registered"
        )
    if config.registry.keyless_signing and keyless_available(environ):
        written.append(sign_keyless(folder))
    return written


def signature_tags(written: list[Path]) -> dict[str, str]:
    """The registry version's record of its signatures: the Ed25519 key ids, and whether Sigstore signed."""
    tags = {}
    for path in written:
        if path.name == SIGNATURE_FILE:
            content = json.loads(path.read_text(encoding="utf-8"))
            tags["signature_key_ids"] = ",".join(entry["key_id"] for entry in content["signatures"])
        elif path.name == SIGSTORE_BUNDLE_FILE:
            tags["signature_sigstore"] = "true"
    return tags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.release.signing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="write a new Ed25519 private key; print its public key")
    keygen.add_argument("--out", type=Path, required=True, help="where the private key goes (0600)")
    show = commands.add_parser("public-key", help="print the public key of a private key file")
    show.add_argument("--key", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            sys.stdout.write(generate_key(args.out) + "\n")
        else:
            sys.stdout.write(public_key(load_key(args.key)) + "\n")
    except SigningError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
