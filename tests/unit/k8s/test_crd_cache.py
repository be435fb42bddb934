"""A fork's CRD schemas: the pinned upstream files downloaded into a cache, from a real HTTP server on
127.0.0.1 standing in for the upstream host; a wrong sha256 is refused and nothing is kept."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.deploy import crd_cache
from pipeline.deploy import validate as kv

ROOT = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get(kv.SCHEMAS_ENV) or crd_cache.cache_dir())
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(),
    reason=f"no CRD folder at {SHARED}: set {kv.SCHEMAS_ENV} to a folder of the pinned files",
)
STAGED = SHARED.parent / "crds-next"
"""Where a local folder of the pinned files may keep kinds added later (the Spark operator's) beside it."""


def shared_file(name: str) -> Path:
    """A pinned file's copy in the shared folder: crds/, else crds-next/."""
    return SHARED / name if (SHARED / name).is_file() else STAGED / name


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving OWNER/REPO/COMMIT/PATH from a folder."""
    served = tmp_path / "upstream"
    served.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def _publish(served: Path, crd: crd_cache.PinnedCrd, data: bytes) -> None:
    target = served / crd.repository / crd.commit / crd.path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _pins(monkeypatch: pytest.MonkeyPatch, contents: dict[str, bytes]) -> tuple[crd_cache.PinnedCrd, ...]:
    pins = tuple(
        crd_cache.PinnedCrd(name, "owner/repo", "c0ffee", f"crds/{name}", hashlib.sha256(data).hexdigest())
        for name, data in contents.items()
    )
    monkeypatch.setattr(crd_cache, "PINNED", pins)
    return pins


def test_files_are_downloaded_verified_and_then_reused(
    upstream: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, served = upstream
    pins = _pins(monkeypatch, {"a.yaml": b"kind: A\n", "b.yaml": b"kind: B\n"})
    for pin in pins:
        _publish(served, pin, b"kind: " + pin.name[0].upper().encode() + b"\n")
    cache = tmp_path / "cache"
    assert crd_cache.ensure(cache, base_url) == ["a.yaml", "b.yaml"]
    assert (cache / "a.yaml").read_bytes() == b"kind: A\n"
    assert crd_cache.ensure(cache, base_url) == []  # verified copies are kept, nothing fetched
    (cache / "b.yaml").write_bytes(b"tampered\n")
    assert crd_cache.ensure(cache, base_url) == ["b.yaml"]  # a changed copy is fetched again
    assert (cache / "b.yaml").read_bytes() == b"kind: B\n"


def test_a_wrong_sha256_is_refused_and_nothing_is_written(
    upstream: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, served = upstream
    [pin] = _pins(monkeypatch, {"a.yaml": b"kind: A\n"})
    _publish(served, pin, b"kind: A\nextra: injected\n")
    cache = tmp_path / "cache"
    with pytest.raises(
        crd_cache.CrdDownloadError, match=rf"has sha256 [0-9a-f]{{64}}, expected {pin.sha256}"
    ):
        crd_cache.ensure(cache, base_url)
    assert list(cache.iterdir()) == []


def test_an_unreachable_host_names_the_url_and_the_fix(
    upstream: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, _ = upstream
    [pin] = _pins(monkeypatch, {"a.yaml": b"kind: A\n"})
    with pytest.raises(crd_cache.CrdDownloadError) as failed:
        crd_cache.ensure(tmp_path / "cache", base_url)  # served folder is empty: 404
    assert pin.url(base_url) in str(failed.value) and kv.SCHEMAS_ENV in str(failed.value)
    with pytest.raises(crd_cache.CrdDownloadError, match="only http"):
        crd_cache.ensure(tmp_path / "cache", "file:///etc")


@needs_shared
def test_the_pins_are_the_files_of_shared_schemas() -> None:
    assert {p.name for p in SHARED.glob("*.yaml")} <= {c.name for c in crd_cache.PINNED}
    for crd in crd_cache.PINNED:
        assert hashlib.sha256(shared_file(crd.name).read_bytes()).hexdigest() == crd.sha256, crd.name


@needs_shared
def test_a_fork_without_shared_validates_crd_kinds_from_the_download(
    upstream: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, served = upstream
    for crd in crd_cache.PINNED:
        _publish(served, crd, shared_file(crd.name).read_bytes())
    fork = tmp_path / "fork" / "repo"  # no ../shared beside it
    fork.mkdir(parents=True)
    monkeypatch.delenv(kv.SCHEMAS_ENV, raising=False)
    monkeypatch.setenv(crd_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(crd_cache.BASE_URL_ENV, base_url)
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "r"},
        "spec": {"strategy": {"canary": {"steps": [{"setWeight": "twenty"}]}}},
    }
    problems, skipped = kv.validate_docs([rollout], "fork", fork)
    assert skipped == []
    assert ("spec.strategy.canary.steps.0.setWeight", "Rollout/r") in {(p.field, p.obj) for p in problems}
    assert kv.schemas_dir(fork) == tmp_path / "cache"


def test_a_failed_download_is_reported_as_not_checked(
    upstream: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, served = upstream
    [pin] = _pins(monkeypatch, {"a.yaml": b"kind: A\n"})
    _publish(served, pin, b"not the pinned file\n")
    fork = tmp_path / "fork" / "repo"
    fork.mkdir(parents=True)
    monkeypatch.delenv(kv.SCHEMAS_ENV, raising=False)
    monkeypatch.setenv(crd_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(crd_cache.BASE_URL_ENV, base_url)
    doc = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r"}}
    _, skipped = kv.validate_docs([doc], "fork", fork)
    assert len(skipped) == 1 and "CRD schema not checked" in skipped[0] and "sha256" in skipped[0]


def test_a_failed_download_leaves_the_cache_incomplete_not_usable(tmp_path: Path) -> None:
    """The folder ensure() made before its download failed holds no schema: it must not count as one."""
    folder = tmp_path / "cache"
    with pytest.raises(crd_cache.CrdDownloadError):
        crd_cache.ensure(folder, base_url="http://127.0.0.1:9")  # nothing listens on the discard port
    assert folder.is_dir()
    assert not crd_cache.complete(folder)
