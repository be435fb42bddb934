"""The service process refuses, with one line and before binding a port, a model that is not the one the
deployment names (the registry's sha256) or not signed by a trusted key; serves a signed one; and serves
its /docs page's assets itself (issue 36)."""

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from model_service.protocol.openapi import DOCS_ASSETS
from pipeline.release.signing import public_key, sign_folder
from tests.integration.service.conftest import Server


def _copy(model_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(model_dir / name, target / name)
    return target


def _refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("model_service: refusing to start: ")
    return lines[0]


def test_a_tampered_model_with_a_matching_card_is_refused_by_the_registry_sha256(
    run_service: Callable[..., subprocess.CompletedProcess[str]], model_dir: Path, tmp_path: Path
) -> None:
    """The attacker replaces the ONNX file and rewrites the card's sha256 to match: the card check passes,
    the registry's record (rendered into the Deployment) does not."""
    registered = json.loads((model_dir / "model.json").read_text())["onnx"]["sha256"]
    folder = _copy(model_dir, tmp_path / "model")
    with (folder / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    card = json.loads((folder / "model.json").read_text())
    card["onnx"]["sha256"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(card))
    line = _refusal(run_service(folder, "--port", "1", expected_sha256=registered))
    assert f"differs from the registry's onnx_sha256 {registered}" in line


def test_unsigned_and_foreign_signatures_are_refused_where_required(
    run_service: Callable[..., subprocess.CompletedProcess[str]], model_dir: Path, tmp_path: Path
) -> None:
    trusted = public_key(Ed25519PrivateKey.generate())
    folder = _copy(model_dir, tmp_path / "model")
    line = _refusal(run_service(folder, "--port", "1", signatures="required", signing_public_keys=trusted))
    assert "no signature, and MODEL_SERVICE_SIGNATURES=required" in line
    sign_folder(folder, Ed25519PrivateKey.generate())
    line = _refusal(run_service(folder, "--port", "1", signatures="required", signing_public_keys=trusted))
    assert "none of them trusted" in line


def test_a_signed_model_starts_and_serves(
    start_server: Callable[..., Server], model_dir: Path, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    folder = _copy(model_dir, tmp_path / "model")
    sign_folder(folder, key)
    server = start_server(model=folder, signatures="required", signing_public_keys=public_key(key))
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_the_docs_page_and_its_assets_come_from_the_service_process(
    start_server: Callable[..., Server],
) -> None:
    """A real server answers the page and every file it names, byte for byte the pinned ones."""
    server = start_server()
    page = httpx.get(f"{server.url}/docs")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(sources) == 3
    for source in sources:
        answer = httpx.get(f"{server.url}{source}")
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        name = source.removeprefix("/docs/static/").split("?")[0]
        assert hashlib.sha256(answer.content).hexdigest() == DOCS_ASSETS[name].sha256


@pytest.mark.needs_tool("chromium", "chromium")
def test_swagger_ui_renders_in_chromium_under_the_pages_policy(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """A real browser enforces the Content-Security-Policy: the operations appear only if the vendored
    scripts ran under `script-src 'self'` (an inline script or another origin's would be refused)."""
    server = start_server()
    result = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            f"{server.url}/docs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rendered = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', result.stdout))
    assert {"/v1/predict", "/v2/models/{name}/infer", "/healthz"} <= rendered, result.stdout[-2000:]
