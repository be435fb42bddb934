"""What `register` signs with (pipeline/release/signing.py `sign_model`): the key file of the environment
variable over the config's, keyless only in a GitHub Actions job with an OIDC token, and a refusal when the
environment requires signatures and there is no key."""

import shutil
from pathlib import Path

import pytest

from model_service.contract.signature import SIGNATURE_FILE, decode_key, key_id
from pipeline.config import load_config
from pipeline.release.signing import SigningError, generate_key, sign_model, signature_tags

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def folder(plain_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    target.mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(plain_model_dir / name, target / name)
    return target


def test_the_variables_key_wins_and_the_tags_name_it(folder: Path, tmp_path: Path) -> None:
    from_config = key_id(decode_key(generate_key(tmp_path / "config.pem")))
    from_variable = key_id(decode_key(generate_key(tmp_path / "variable.pem")))
    config = load_config(
        "dev", ROOT / "environments", [f"registry.signing_key_file={tmp_path / 'config.pem'}"]
    )
    written = sign_model(config, folder, {"MODEL_SIGNING_KEY_FILE": str(tmp_path / "variable.pem")})
    assert written == [folder / SIGNATURE_FILE]
    assert signature_tags(written) == {"signature_key_ids": from_variable}
    written = sign_model(config, folder, {})  # the config's key adds its signature to the same manifest
    assert signature_tags(written) == {"signature_key_ids": f"{from_variable},{from_config}"}


def test_no_key_signs_nothing_unless_signatures_are_required(folder: Path) -> None:
    assert sign_model(load_config("dev", ROOT / "environments"), folder, {}) == []
    key = "A" * 43 + "="
    required = load_config(
        "dev", ROOT / "environments", ["service.signatures=required", f"service.signing_public_keys=[{key}]"]
    )
    with pytest.raises(SigningError, match=r"requires model signatures .* no signing key"):
        sign_model(required, folder, {})
    assert not (folder / SIGNATURE_FILE).exists()
