"""The start-up check of the model's signature (`MODEL_SERVICE_SIGNATURES`): the folder's manifest must
match its files and carry an Ed25519 signature by one of the trusted keys (`MODEL_SERVICE_SIGNING_PUBLIC_KEYS`).

`required`: an unsigned folder, a signature by another key, or a file changed after signing stops the
start. `optional`: a signature present is checked the same way; a folder without one is served, said in the
log. `off`: nothing is read.
"""

import base64
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from model_service.contract.card import CardError
from model_service.contract.signature import (
    SIGNATURE_FILE,
    SignatureError,
    canonical,
    check_manifest,
    decode_key,
    key_id,
    read_signature_file,
)
from model_service.protocol.errors import StartupError

SignatureMode = Literal["required", "optional", "off"]


def verify_model_signature(folder: Path, mode: SignatureMode, trusted_keys: tuple[str, ...]) -> str | None:
    """The key id that signed `folder`, or None when no signature was read (`off`, or `optional` and
    unsigned); `StartupError` naming the file and the fix when the folder must not be served."""
    if mode == "off":
        return None
    path = folder / SIGNATURE_FILE
    try:
        signed = read_signature_file(folder)
        if signed is None:
            if mode == "required":
                raise StartupError(
                    f"{path}: no signature, and MODEL_SERVICE_SIGNATURES=required; sign the model at register "
                    "(docs/service.md, Model signatures)"
                )
            return None
        check_manifest(folder, signed["manifest"])
    except SignatureError as exc:
        raise StartupError(str(exc)) from None
    except (CardError, OSError) as exc:  # a file the manifest covers cannot be read
        raise StartupError(f"{path}: cannot check the signed files ({exc})") from None
    keys = {key_id(raw): Ed25519PublicKey.from_public_bytes(raw) for raw in map(decode_key, trusted_keys)}
    message = canonical(signed["manifest"])
    for entry in signed["signatures"]:
        key = keys.get(str(entry["key_id"]))
        if key is None:
            continue
        try:
            key.verify(base64.b64decode(str(entry["signature"])), message)
        except (InvalidSignature, ValueError):
            raise StartupError(
                f"{path}: the signature by key {entry['key_id']} does not verify: the manifest was changed "
                "after signing"
            ) from None
        return str(entry["key_id"])
    signers = ", ".join(str(entry["key_id"]) for entry in signed["signatures"]) or "none"
    raise StartupError(
        f"{path}: signed by key(s) {signers}, none of them trusted (MODEL_SERVICE_SIGNING_PUBLIC_KEYS: "
        f"{', '.join(keys) or 'empty'}); re-sign with a trusted key or add its public key"
    )
