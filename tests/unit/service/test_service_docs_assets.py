"""The /docs page loads swagger-ui from the service itself: vendored files, pinned by sha256, a CSP that lets
no third-party script run (issue 36)."""

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from model_service.protocol import openapi
from model_service.protocol.errors import StartupError
from model_service.protocol.openapi import DOCS_ASSETS, STATIC_DIR, SWAGGER_UI_VERSION


def test_vendored_files_match_their_pinned_sha256_and_carry_their_licence() -> None:
    for asset in DOCS_ASSETS.values():
        assert hashlib.sha256((STATIC_DIR / asset.file).read_bytes()).hexdigest() == asset.sha256
    licence = (STATIC_DIR / "swagger-ui" / "LICENSE").read_text()
    assert "Apache License" in licence
    # The bundle is the version named in the code (swagger-ui writes it into its build).
    assert f'"{SWAGGER_UI_VERSION}"' in (STATIC_DIR / "swagger-ui" / "swagger-ui-bundle.js").read_text()


def test_the_page_references_no_other_host_and_the_policy_allows_only_the_service(client: TestClient) -> None:
    """CSP Level 3 (https://www.w3.org/TR/CSP3/): `script-src 'self'` without 'unsafe-inline' runs neither
    an inline script nor one from another origin; `default-src 'none'` covers what is not listed."""
    page = client.get("/docs")
    assert page.status_code == 200
    assert "//" not in re.sub(r"<!doctype html>", "", page.text)  # no absolute or scheme-relative URL
    assert "<script>" not in page.text  # every script is a file: no inline script for the CSP to allow
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(sources) == 3
    for source in sources:
        assert source.startswith("/docs/static/")


def test_every_asset_the_page_names_loads_from_the_service_with_long_caching(client: TestClient) -> None:
    page = client.get("/docs").text
    for source in re.findall(r'(?:src|href)="([^"]+)"', page):
        answer = client.get(source)
        assert answer.status_code == 200, source
        name = source.removeprefix("/docs/static/").split("?")[0]
        assert hashlib.sha256(answer.content).hexdigest() == DOCS_ASSETS[name].sha256
        assert source.endswith(f"?v={DOCS_ASSETS[name].sha256[:16]}")  # a new file is a new URL
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["content-type"] == DOCS_ASSETS[name].media_type


@pytest.mark.parametrize("path", ["/docs/static/LICENSE", "/docs/static/..%2Fopenapi.py", "/docs/static/"])
def test_nothing_but_the_listed_assets_is_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_a_changed_asset_stops_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for asset in DOCS_ASSETS.values():
        (tmp_path / asset.file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / asset.file).write_bytes((STATIC_DIR / asset.file).read_bytes())
    (tmp_path / "docs-init.js").write_text('SwaggerUIBundle({url: "https://elsewhere.invalid/x"});\n')
    monkeypatch.setattr(openapi, "STATIC_DIR", tmp_path)
    with pytest.raises(StartupError, match=r"docs-init\.js: sha256 .* differs from the pinned"):
        openapi.load_docs_assets()


def test_the_page_and_its_assets_need_no_credentials_when_auth_is_on(
    make_client: Callable[..., TestClient],
) -> None:
    """The browser loads them before anyone has typed a key into the page's Authorize dialog."""
    client = make_client(api_key_sha256=hashlib.sha256(b"key").hexdigest())
    assert client.get("/v1/model").status_code == 401
    for path in ("/docs", *(openapi.asset_url(name) for name in DOCS_ASSETS)):
        assert client.get(path).status_code == 200, path
