"""render --check on a fork whose CRD schemas cannot be had: it fails and says what was not checked,
instead of reporting the CRD check as passed."""

import shutil
import socket
from pathlib import Path

import pytest

from pipeline.console import Reporter
from pipeline.deploy import crd_cache
from pipeline.deploy import validate as kv
from pipeline.deploy.render import render

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(not (shutil.which("kustomize") or shutil.which("kubectl")), reason="no kustomize/kubectl")
def test_render_check_fails_when_the_crd_schemas_cannot_be_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on: the download is refused
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    fork = tmp_path / "fork"
    shutil.copytree(ROOT / "k8s", fork / "k8s")
    shutil.copytree(ROOT / "environments", fork / "environments")
    monkeypatch.delenv(kv.SCHEMAS_ENV, raising=False)
    monkeypatch.setenv(crd_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(crd_cache.BASE_URL_ENV, f"http://127.0.0.1:{closed}")
    assert render(fork, fork / "environments", check=True, reporter=Reporter()) is False
    out = capsys.readouterr()
    text = out.out + out.err
    assert (
        "not checked: k8s/overlays/dev: AnalysisTemplate/model-service-analysis: CRD schema not checked"
        in text
    )
    assert "checks NOT run (a failure)" in text and "0 problems" in text
