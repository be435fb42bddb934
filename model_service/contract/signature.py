"""The model's signature file, shared by the pipeline (which signs at register) and the service (which
verifies at start): what is signed, and how it is written. Standard library only; the cryptography is on
each side (pipeline/release/signing.py, model_service/model/signature.py).

What is signed is a manifest: the sha256 of every file the service loads from the model folder (the card
and the ONNX file it names), as canonical JSON. A signature covers those bytes and nothing else, so a
file changed after signing, or a signature made by a key the environment does not trust, is refused.
"""

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from model_service.contract.card import CARD_FILE, read_card

SIGNATURE_FILE = "signature.json"
"""Beside the card: the manifest and its Ed25519 signatures."""
SIGSTORE_BUNDLE_FILE = "signature.sigstore.json"
"""Beside the card, when signed keyless in GitHub CI: the Sigstore bundle over the same manifest bytes."""
MANIFEST_FORMAT = 1
ED25519_PUBLIC_KEY_BYTES = 32
"""RFC 8032 5.1.5."""


class SignatureError(Exception):
    """A signature file that cannot be read, or a manifest that does not match the folder."""


def served_files(folder: Path) -> list[str]:
    """The files of `folder` the service loads: the card and the ONNX file it names."""
    return sorted({CARD_FILE, read_card(folder).onnx_path.name})


def build_manifest(folder: Path) -> dict[str, Any]:
    """{"format": 1, "files": {name: sha256}} of the files the service loads from `folder`."""
    files = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in served_files(folder)}
    return {"format": MANIFEST_FORMAT, "files": files}


def canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, UTF-8 (the same on both sides)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public_key_raw: bytes) -> str:
    """A public key's short name in the signature file and in logs: sha256 of its 32 raw bytes, 16 hex."""
    return hashlib.sha256(public_key_raw).hexdigest()[:16]


def encode_key(public_key_raw: bytes) -> str:
    """An Ed25519 public key as configured (`service.signing_public_keys`): its 32 raw bytes in base64."""
    return base64.b64encode(public_key_raw).decode()


def decode_key(text: str) -> bytes:
    """The 32 raw bytes of a configured public key; `ValueError` naming the fix otherwise."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        msg = (
            f"{text.strip()[:12]!r}... is not an Ed25519 public key (32 bytes in base64); print one with "
            "`python -m pipeline.release.signing public-key --key KEY.pem`"
        )
        raise ValueError(msg)
    return raw


def read_signature_file(folder: Path) -> dict[str, Any] | None:
    """The folder's signature file (manifest and signatures), or None when there is none."""
    path = folder / SIGNATURE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SignatureError(f"{path}: not a readable signature file ({exc})") from None
    if not (
        isinstance(data, dict)
        and isinstance(data.get("manifest"), dict)
        and isinstance(data.get("signatures"), list)
        and all(isinstance(s, dict) and {"key_id", "signature"} <= s.keys() for s in data["signatures"])
    ):
        raise SignatureError(f"{path}: expected keys manifest and signatures (each key_id, signature)")
    return data


def check_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """`SignatureError` unless `manifest` lists every file the service loads, each with its current sha256."""
    path = folder / SIGNATURE_FILE
    listed = manifest.get("files")
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(listed, dict):
        raise SignatureError(
            f"{path}: manifest format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}"
        )
    actual = build_manifest(folder)["files"]
    for name, digest in actual.items():
        if name not in listed:
            raise SignatureError(f"{path}: {name} is loaded but not in the signed manifest")
        if listed[name] != digest:
            raise SignatureError(
                f"{folder / name}: sha256 {digest} differs from the signed manifest's {listed[name]}; "
                "the file was changed after signing"
            )
