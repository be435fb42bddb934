"""`register` signs the model (issue 36): with a local Ed25519 key, the signature goes to the registry with
the version's files and the service's check passes on the registry's copy; an environment requiring
signatures refuses to register without a key. One real sqlite registry."""

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mlflow import MlflowClient

from model_service.contract.signature import SIGNATURE_FILE
from model_service.model.signature import verify_model_signature
from model_service.protocol.errors import StartupError
from pipeline.adapters.registry import download_version, find_version
from pipeline.cli import main
from pipeline.release.signing import generate_key, public_key

REPO = Path(__file__).parents[3]
MODEL = "breast-cancer-classifier"


@pytest.fixture
def gated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace whose current model is trained, exported and gated, not yet registered."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MODEL_SIGNING_KEY_FILE", raising=False)
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_URL", raising=False)
    (tmp_path / "environments").mkdir()
    for name in ("base.yaml", "dev.yaml"):
        (tmp_path / "environments" / name).write_bytes((REPO / "environments" / name).read_bytes())
    for stage in ("train", "export", "gate"):
        assert main([stage, "--env", "dev", "--workdir", str(tmp_path)]) == 0
    return tmp_path


def _client(workspace: Path) -> MlflowClient:
    uri = f"sqlite:///{workspace / '.mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_register_signs_and_the_service_verifies_the_registrys_copy(
    gated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = gated / "signing.pem"
    trusted = generate_key(key_file)
    args = ["register", "--env", "dev", "--workdir", str(gated)]
    required = ["--set", "service.signatures=required", "--set", f"service.signing_public_keys=[{trusted}]"]
    assert main([*args, *required]) == 1  # required, and no key: nothing registered
    assert "requires model signatures (service.signatures: required) and there is no signing key" in (
        capsys.readouterr().err
    )
    assert not _client(gated).search_model_versions(f"name='{MODEL}'")
    (gated / "not-a-key.pem").write_text("not a key\n")
    monkeypatch.setenv("MODEL_SIGNING_KEY_FILE", str(gated / "not-a-key.pem"))
    assert main(args) == 1
    assert "not-a-key.pem is not an unencrypted PEM private key" in capsys.readouterr().err
    assert not _client(gated).search_model_versions(f"name='{MODEL}'")

    monkeypatch.setenv("MODEL_SIGNING_KEY_FILE", str(key_file))
    assert main([*args, *required]) == 0
    version = _client(gated).search_model_versions(f"name='{MODEL}'")[0]
    assert version.tags["signature_key_ids"]
    copy = download_version(_client(gated), version, gated / "from-registry")
    assert (copy / SIGNATURE_FILE).is_file()

    assert verify_model_signature(copy, "required", (trusted,)) == version.tags["signature_key_ids"]
    with pytest.raises(StartupError, match="none of them trusted"):
        verify_model_signature(copy, "required", (public_key(Ed25519PrivateKey.generate()),))
    assert find_version(_client(gated), MODEL, version.tags["artifact_version"]) is not None
