"""Model signatures (issue 36): register signs the manifest of the files the service loads with an Ed25519
key; the service verifies it at start and refuses what the environment does not trust. Also the registry's
sha256 (`MODEL_SERVICE_EXPECTED_SHA256`) against the ONNX file.

Ed25519 is RFC 8032; the key and signature sizes (32 and 64 bytes) are its."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from starlette.testclient import TestClient

from model_service.contract.signature import SIGNATURE_FILE
from model_service.model.signature import verify_model_signature
from model_service.operations.settings import ServiceSettings
from model_service.protocol.errors import StartupError
from pipeline.release.signing import SigningError, generate_key, load_key, main, public_key, sign_folder


@pytest.fixture
def folder(model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    target.mkdir()
    for name in ("model.onnx", "model.json", "eval.json"):
        shutil.copy(model_dir / name, target / name)
    return target


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_signed_model_is_served_and_says_who_signed_it(
    make_client: Callable[..., TestClient], folder: Path, key: Ed25519PrivateKey
) -> None:
    signed = sign_folder(folder, key)
    assert sorted(signed["manifest"]["files"]) == ["model.json", "model.onnx"]  # what the service loads
    client = make_client(model_dir=folder, signatures="required", signing_public_keys=public_key(key))
    assert client.get("/readyz").status_code == 200
    key_id = signed["signatures"][0]["key_id"]
    assert verify_model_signature(folder, "required", (public_key(key),)) == key_id


def test_unsigned_is_refused_when_required_and_served_when_optional(
    folder: Path, key: Ed25519PrivateKey
) -> None:
    with pytest.raises(
        StartupError, match=r"signature\.json: no signature, and MODEL_SERVICE_SIGNATURES=required"
    ):
        verify_model_signature(folder, "required", (public_key(key),))
    assert verify_model_signature(folder, "optional", (public_key(key),)) is None


def test_re_signed_with_another_key_is_refused(folder: Path, key: Ed25519PrivateKey) -> None:
    intruder = Ed25519PrivateKey.generate()
    sign_folder(folder, intruder)
    for mode in ("required", "optional"):  # a signature present is checked in both modes
        with pytest.raises(StartupError, match="none of them trusted"):
            verify_model_signature(folder, mode, (public_key(key),))


def test_a_file_changed_after_signing_is_refused(folder: Path, key: Ed25519PrivateKey) -> None:
    sign_folder(folder, key)
    card = json.loads((folder / "model.json").read_text())
    card["version"] = "forged"
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(StartupError, match=r"model\.json: sha256 .* differs from the signed manifest"):
        verify_model_signature(folder, "required", (public_key(key),))


def test_a_manifest_edited_to_match_is_refused_by_the_signature(folder: Path, key: Ed25519PrivateKey) -> None:
    """The attacker rewrites the manifest's digest after changing a file: the signature no longer covers it."""
    sign_folder(folder, key)
    card = json.loads((folder / "model.json").read_text())
    card["version"] = "forged"
    (folder / "model.json").write_text(json.dumps(card))
    signed = json.loads((folder / SIGNATURE_FILE).read_text())
    signed["manifest"] = sign_folder(folder, Ed25519PrivateKey.generate())["manifest"]
    (folder / SIGNATURE_FILE).write_text(json.dumps(signed))
    with pytest.raises(StartupError, match="does not verify"):
        verify_model_signature(folder, "required", (public_key(key),))


def test_a_second_key_adds_a_signature_and_either_is_trusted(folder: Path, key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    sign_folder(folder, key)
    assert len(sign_folder(folder, other)["signatures"]) == 2
    assert verify_model_signature(folder, "required", (public_key(other),)) is not None


def test_settings_refuse_a_check_without_keys_and_a_malformed_key() -> None:
    with pytest.raises(ValidationError, match="needs MODEL_SERVICE_SIGNING_PUBLIC_KEYS"):
        ServiceSettings(model_dir=Path("m"), signatures="required")
    with pytest.raises(ValidationError, match="is not an Ed25519 public key"):
        ServiceSettings(model_dir=Path("m"), signatures="required", signing_public_keys="c2hvcnQ=")


def test_keygen_writes_a_private_key_once_and_prints_its_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "signing.pem"
    assert main(["keygen", "--out", str(path)]) == 0
    printed = capsys.readouterr().out.strip()
    assert path.stat().st_mode & 0o777 == 0o600
    assert public_key(load_key(path)) == printed
    assert main(["keygen", "--out", str(path)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
    (tmp_path / "not-a-key.pem").write_text("hello")
    with pytest.raises(SigningError, match="not an unencrypted PEM private key"):
        load_key(tmp_path / "not-a-key.pem")
    assert generate_key(tmp_path / "second.pem") != printed


def test_the_registry_sha256_must_match_the_onnx_file(
    make_client: Callable[..., TestClient], folder: Path
) -> None:
    card = json.loads((folder / "model.json").read_text())
    assert (
        make_client(model_dir=folder, expected_sha256=card["onnx"]["sha256"]).get("/readyz").status_code
        == 200
    )
    with pytest.raises(StartupError, match=r"differs from the registry's onnx_sha256 0{64}"):
        make_client(model_dir=folder, expected_sha256="0" * 64)


def test_an_unsigned_fallback_is_refused_where_signatures_are_required(
    make_client: Callable[..., TestClient], folder: Path, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """The fallback answers users when the breaker opens: it is checked like the primary."""
    fallback = tmp_path / "fallback"
    shutil.copytree(folder, fallback)
    sign_folder(folder, key)
    settings = {"model_dir": folder, "signatures": "required", "signing_public_keys": public_key(key)}
    with pytest.raises(StartupError, match=r"fallback/signature\.json: no signature"):
        make_client(fallback_dir=fallback, **settings)
    sign_folder(fallback, key)
    assert make_client(fallback_dir=fallback, **settings).get("/readyz").status_code == 200
