"""Real service, real Locust, short runs: the SLO gate passes on a healthy service and fails on faults."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.artifacts import current_model_dir
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.console import Reporter
from pipeline.stages import loadtest
from pipeline.workspace import Workspace

REPO = Path(__file__).parents[3]
MODEL = "breast-cancer-classifier"
# Short and light: the machine is shared; generous bounds so only a real fault fails the healthy run.
SHORT = (
    "--set",
    "loadtest.profile.duration_s=4",
    "--set",
    "loadtest.profile.users=3",
    "--set",
    "loadtest.slo.total={p95_ms: 2000, p99_ms: 4000, max_error_ratio: 0.01, min_rps: 1}",
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workspace with a registered model, built once: train, export, gate, register."""
    root = tmp_path_factory.mktemp("loadtest")
    shutil.copytree(REPO / "environments", root / "environments")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        for stage in ("train", "export", "gate", "register"):
            assert main([stage, "--env", "dev", "--workdir", str(root)]) == 0
        yield root


def run(workspace: Path, *args: str) -> int:
    return main(["loadtest", "--env", "dev", "--workdir", str(workspace), *SHORT, *args])


def report_dirs(workspace: Path) -> set[Path]:
    return set((workspace / "reports" / "dev").glob("*/loadtest"))


def test_a_healthy_service_passes_and_leaves_a_report(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = report_dirs(workspace)
    assert run(workspace) == 0
    out = capsys.readouterr().out
    assert "loadtest PASS" in out
    assert "total p95_ms" in out

    [report] = report_dirs(workspace) - before
    for name in ("report.html", "stats.json", "gate.json", "chart.png", "locust_stats_history.csv"):
        assert (report / name).stat().st_size > 0, name
    gate = json.loads((report / "gate.json").read_text())
    stats = json.loads((report / "stats.json").read_text())
    assert gate["status"] == "pass"
    assert gate["failures"] == []
    total = gate["stats"]["total"]
    assert total["requests"] == sum(e["num_requests"] for e in stats) > 0
    assert total["error_ratio"] == 0
    assert {e["name"] for e in stats} == {"v1_instances", "v1_records", "v2_infer"}
    assert (report / "chart.png").read_bytes().startswith(b"\x89PNG")
    # The service's own usage, read from its processes, and the resources it suggests (pipeline/deploy/sizing.py).
    sizing = gate["sizing"]
    assert sizing["requests"] == total["requests"]
    assert sizing["cpu_seconds_per_1000"] > 0 and sizing["peak_rss_mib"] > 20
    assert sizing["load_rps"] == 1 and sizing["load_source"] == "loadtest.slo.total.min_rps"
    assert sizing["requests_memory"].endswith("Mi") and sizing["requests_cpu"].endswith("m")
    assert "suggested deploy.resources" in out and "s per 1,000 requests" in out
    assert "<html" in (report / "report.html").read_text(errors="replace").lower()
    # The API key of a started service never lands in the report.
    assert "Bearer" not in (report / "profile.json").read_text()

    uri = f"sqlite:///{workspace / '.mlflow' / 'mlflow.db'}"
    tags = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(MODEL, "1").tags
    assert tags["loadtest"] == tags["loadtest.dev"] == "pass"


def test_injected_errors_fail_the_gate_naming_the_slo(workspace: Path) -> None:
    config = load_config("dev", workspace / "environments", SHORT[1::2])
    result = loadtest.loadtest(
        config,
        Workspace(workspace),
        Reporter(),
        model=current_model_dir(config, Workspace(workspace)),
        service_settings={"MODEL_SERVICE_FAULT_ERROR_RATIO": "0.3"},
    )
    assert result.status == "fail"
    assert any(f.startswith("total error_ratio") and "> max 0.01" in f for f in result.failures)
    assert result.stats["total"].failures > 0
    assert json.loads((result.report_dir / "gate.json").read_text())["status"] == "fail"


def test_an_impossible_slo_fails_with_the_breach_named(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(workspace, "--set", "loadtest.slo.total.p95_ms=0.001", "--set", "loadtest.slo.total.p99_ms=0.001")
        == 1
    )
    err = capsys.readouterr().err
    assert "loadtest failed for dev" in err
    assert "total p95_ms" in err
    assert "> max 0.001" in err


def test_an_unreachable_service_fails_with_a_clear_message(
    workspace: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loadtest, "HOST_READY_TIMEOUT_S", 1.0)
    assert run(workspace, "--host", "http://127.0.0.1:9") == 1
    err = capsys.readouterr().err
    assert "the service at http://127.0.0.1:9 was not ready" in err
    assert "drop --host" in err


def test_a_remote_target_is_refused_without_allow_remote(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(workspace, "--host", "http://192.0.2.1:8000") == 2  # a usage error, like drift's --url
    assert "--allow-remote" in capsys.readouterr().err
