"""The peer model servers' plumbing: their venvs (uv, for real) and what the bench does when a server
cannot be installed, exits before answering or never answers the benchmark's body."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from benchmarks import report, venvs
from benchmarks.run import _drive
from benchmarks.servers import Form, Server, running
from pipeline.console import Reporter
from pipeline.errors import StageError

REPO = Path(__file__).parents[3]


def _pyproject(tmp_path: Path, groups: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(f"[dependency-groups]\n{groups}\n")
    return path


def test_a_peer_without_a_dependency_group_names_the_file_and_the_group(tmp_path: Path) -> None:
    pyproject = _pyproject(tmp_path, 'bench-other = ["numpy"]')
    with pytest.raises(
        venvs.PeerUnavailable, match=r"pyproject.toml: \[dependency-groups\] has no `bench-x`"
    ):
        venvs.ensure("x", root=tmp_path / "venvs", pyproject=pyproject)
    assert not (tmp_path / "venvs").exists()  # nothing created


def test_the_repository_declares_a_group_for_every_peer() -> None:
    for peer in ("kserve", "mlserver", "bentoml", "litserve"):
        assert any(requirement.startswith(peer) for requirement in venvs.group(peer))


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")
def test_a_peer_that_cannot_be_installed_raises_with_the_installer_s_words(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-project"
    pyproject = _pyproject(tmp_path, f'bench-broken = ["broken @ file://{missing}"]')
    with pytest.raises(venvs.PeerUnavailable, match=r"installing broken @ file://.* failed \(exit \d+\): "):
        venvs.ensure("broken", root=tmp_path / "venvs", pyproject=pyproject)


def test_a_server_that_exits_before_answering_says_so_with_its_log(tmp_path: Path) -> None:
    server = Server(
        key="exits",
        workers=1,
        command=[sys.executable, "-c", "print('cannot bind {port}'); raise SystemExit(3)"],
        forms=(Form("exits", "/predict", b"{}", (8,)),),
    )
    with pytest.raises(StageError, match=r"exits exited with 3 before answering: cannot bind \d+"):  # noqa: SIM117
        with running(server, tmp_path / "exits.log"):
            pytest.fail("a server that exited cannot be running")


def test_a_peer_that_fails_to_start_is_a_reason_and_the_others_still_run(tmp_path: Path) -> None:
    """The bench's own handling of a failed peer, with a process that exits at once under the peer's key
    (no wrk run is reached, so wrk need not be installed)."""
    failing = Server(
        key="litserve",
        workers=2,
        command=[sys.executable, "-c", "raise SystemExit('no such model')"],
        forms=(Form(report.LITSERVE, "/predict", json.dumps({"instances": [[1.0]]}).encode(), (8,)),),
    )
    not_run: list[dict[str, str]] = []
    runs = _drive([failing], "wrk", tmp_path, not_run, duration=1, warmup=1, rounds=2, reporter=Reporter())
    assert runs == []
    assert len(not_run) == 1  # left out of round 2, not retried
    assert not_run[0]["server"] == "litserve x2"
    assert not_run[0]["reason"].startswith("round 1: litserve exited with 1 before answering: no such model")


def test_the_service_failing_to_start_fails_the_bench(tmp_path: Path) -> None:
    failing = Server(
        key=report.SERVICE,
        workers=1,
        command=[sys.executable, "-c", "raise SystemExit(2)"],
        forms=(Form(report.SERVICE, "/v1/predict", b"{}", (8,)),),
    )
    with pytest.raises(StageError, match="model_service exited with 2"):
        _drive([failing], "wrk", tmp_path, [], duration=1, warmup=1, rounds=1, reporter=Reporter())
