"""The whole pipeline in one command, its resume, and the release-evidence report (real stages, real registry)."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib import image as mpimg
from mlflow import MlflowClient

from pipeline.cli import main

pytestmark = pytest.mark.slow  # a whole pipeline run, the report rendered in Chromium

REPO = Path(__file__).parents[2]
MODEL = "breast-cancer-classifier"
FAST = (
    "--set", "loadtest.profile.duration_s=3",
    "--set", "shadow.duration_s=3",
    "--set", "rollout.steps=[{set_weight: 50}, {analysis: {}}]",
    "--set", "rollout.analysis={interval_seconds: 1, count: 2, min_requests: 5}",
    "--set", "rollout.scale_down_delay_seconds=0",
)  # fmt: skip
SECTIONS = ("Stages", "Lineage", "export: PASSED", "gate: PASSED", "loadtest: PASSED", "rollout: PASSED")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    workspace = tmp_path_factory.mktemp("pipeline")
    shutil.copytree(REPO / "environments", workspace / "environments")
    code = main(["run", "--env", "dev", *FAST, "--workdir", str(workspace)])
    assert code == 0
    return workspace, str((workspace / "reports" / "latest").readlink())


def registry(workspace: Path) -> MlflowClient:
    uri = f"sqlite:///{workspace / '.mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_full_run_moves_the_alias_and_reports_every_section(first_run: tuple[Path, str]) -> None:
    workspace, latest = first_run
    client = registry(workspace)
    served = client.get_model_version_by_alias(MODEL, "dev")
    tags = served.tags
    assert tags["gate.dev"] == tags["loadtest.dev"] == tags["rollout.dev"] == "pass"

    run_dir = workspace / "reports" / latest
    page = (run_dir / "index.html").read_text()
    for section in SECTIONS:
        assert f"<h2>{section}" in page, section
    assert "data:image/png;base64," in page  # charts embedded: readable offline
    assert "<script" not in page
    evidence = json.loads((run_dir / "evidence.json").read_text())
    lineage = evidence["lineage"]
    assert lineage["model_version"] == str(served.version)
    assert lineage["onnx_sha256"] == tags["onnx_sha256"]
    assert lineage["data_sha256"] == tags["data_sha256"]
    statuses = {s["name"]: s["status"] for s in evidence["stages"]}
    assert statuses["image"] in {"skipped", "passed"}
    assert all(
        statuses[name] == "passed" for name in ("train", "export", "gate", "register", "loadtest", "rollout")
    )
    checks = {s["name"]: s["checks"] for s in evidence["stages"]}
    assert checks["loadtest"] and checks["rollout"] and checks["gate"] and checks["export"]
    markdown = (run_dir / "report.md").read_text()
    assert markdown.startswith(f"# {MODEL} -> dev: released")
    # The report is attached to the registered version.
    assert served.run_id is not None
    artifacts = client.list_artifacts(served.run_id, f"reports/dev/{run_dir.name}")
    assert {Path(a.path).name for a in artifacts} == {"index.html", "report.md", "evidence.json"}


def test_history_lists_what_served(first_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    workspace, _ = first_run
    assert main(["history", "--env", "dev", "--workdir", str(workspace)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"promote\s+1\s+-\s+pass\s+pass\s+pass", out)


def test_second_run_reuses_and_a_config_change_invalidates_the_model(
    first_run: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = tmp_path / "ws"
    shutil.copytree(first_run[0], workspace, symlinks=True)
    assert main(["run", "--env", "dev", *FAST, "--workdir", str(workspace)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"train\s+REUSED", out)
    assert re.search(r"export\s+REUSED", out)
    assert re.search(r"register\s+REUSED", out)
    # Nothing judged the same inputs twice: the load test and the rehearsal are reused too; the gate
    # runs again because the champion changed (the first run promoted).
    assert "reused valid artifacts for: train, export, register, loadtest, rollout, promote" in out

    # A load-test change does not touch the model; a model change retrains and re-exports.
    assert (
        main(
            [
                "run",
                "--env",
                "dev",
                *FAST,
                "--set",
                "model.params.n_estimators=60",
                "--workdir",
                str(workspace),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert re.search(r"train\s+PASSED", out)
    assert re.search(r"export\s+PASSED", out)
    assert re.search(r"register\s+PASSED", out)

    # Back to the first config: its artifacts are reused, and the report describes them, not the newer ones.
    assert main(["run", "--env", "dev", *FAST, "--workdir", str(workspace)]) == 0
    first = json.loads((first_run[0] / "reports" / first_run[1] / "evidence.json").read_text())
    latest = json.loads((workspace / "reports" / "latest" / "evidence.json").read_text())
    assert latest["lineage"]["artifact_version"] == first["lineage"]["artifact_version"]


def test_failing_gate_stops_the_run_and_the_report_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    code = main(
        [
            "run",
            "--env",
            "dev",
            *FAST,
            "--set",
            "gates.metrics.roc_auc.min=0.9999",
            "--workdir",
            str(tmp_path),
        ]
    )
    assert code == 1
    out = capsys.readouterr().out
    assert re.search(r"gate\s+FAILED", out)
    for later in ("register", "image", "loadtest", "rollout", "promote"):
        assert re.search(rf"{later}\s+NOT RUN", out), later
    assert (
        "dev" not in registry(tmp_path).search_registered_models()[0].aliases
        if registry(tmp_path).search_registered_models()
        else True
    )
    run_dir = tmp_path / "reports" / (tmp_path / "reports" / "latest").readlink()
    page = (run_dir / "index.html").read_text()
    assert "FAILED at gate" in page
    assert "roc_auc" in page
    assert not list(tmp_path.glob("reports/dev/*/loadtest"))


@pytest.mark.needs_tool("chromium", "chromium")
def test_report_renders_in_headless_chromium(first_run: tuple[Path, str], tmp_path: Path) -> None:
    workspace, latest = first_run
    page = workspace / "reports" / latest / "index.html"
    screenshot = tmp_path / "report.png"
    result = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,2400",
            f"--screenshot={screenshot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    pixels = mpimg.imread(screenshot)
    assert pixels.shape[0] > 1000
    assert pixels.std() > 0.05  # not a blank page
