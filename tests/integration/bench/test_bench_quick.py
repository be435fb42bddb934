"""The quick benchmark, for real: wrk against the template's service and the minimal app (no peers).

It checks what the run writes, never how fast anything was: the machine is shared."""

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import report, run

REPO = Path(__file__).parents[3]
pytestmark = [
    pytest.mark.slow,  # servers under wrk, round after round
    pytest.mark.needs_tool("wrk", "wrk"),
]


def test_quick_bench_writes_rows_ratios_and_a_latest_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ["--quick", "--servers", "service,minimal", "--duration", "1", "--workdir", str(tmp_path)]
    assert run.main(args) == run.EXIT_OK
    out = capsys.readouterr().out
    assert "service_vs_minimal" in out

    latest = tmp_path / "reports" / "bench" / "latest"
    assert {p.name for p in latest.iterdir()} == {"bench.json", "bench.md", "bench.png"}
    result = json.loads((latest / "bench.json").read_text())
    rows = result["rows"]
    assert {(r["server"], r["workers"], r["connections"]) for r in rows} == {
        (report.SERVICE, 1, 8), (report.SERVICE, 1, 32), (report.SERVICE, 2, 8), (report.SERVICE, 2, 32),
        (report.MINIMAL, 2, 8), (report.MINIMAL, 2, 32),
    }  # fmt: skip
    documented = {"server", "workers", "connections", "rps", "p50_ms", "p95_ms", "p99_ms", "errors", "rss_mb"}
    for row in rows:
        assert documented <= set(row)
        assert row["rps"] > 0
        assert row["errors"] == 0
        assert row["rss_mb"] > 0
    peers = {"minimal", "mlflow", "flask", "kserve", "mlserver", "bentoml", "litserve"}
    assert set(result["ratios"]) == {f"service_vs_{peer}" for peer in peers}
    assert result["ratios"]["service_vs_minimal"] > 0
    assert result["ratios"]["service_vs_mlflow"] is None  # not run in this test
    assert len(result["ratios_per_round"]["service_vs_minimal"]) == 1  # --quick: one round
    ran = [(r["server"], r["workers"], r["connections"]) for r in result["runs"]]
    pair = ran.index((report.SERVICE, 2, 32)), ran.index((report.MINIMAL, 2, 32))
    assert pair[1] == pair[0] + 1  # the ratio's two runs are back to back
    assert [b["batch"] for b in result["onnxruntime"]] == [1, 64]
    assert result["pipeline"] == []  # --quick does not time the pipeline


def test_quick_bench_with_the_model_servers_writes_each_row_or_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each model server installed into its venv (uv), started, checked and driven, or a reason."""
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    peers = ("kserve", "mlserver", "bentoml", "litserve")
    args = [
        "--quick",
        "--servers",
        ",".join(("service", *peers)),
        "--duration",
        "1",
        "--workdir",
        str(tmp_path),
    ]
    assert run.main(args) == run.EXIT_OK

    result = json.loads((tmp_path / "reports" / "bench" / "latest" / "bench.json").read_text())
    measured = {r["server"] for r in result["rows"]}
    reasons = {item["server"].split(" ")[0]: item["reason"] for item in result["not_run"]}
    labels = {
        "kserve": report.KSERVE_V2, "mlserver": report.MLSERVER,
        "bentoml": report.BENTOML, "litserve": report.LITSERVE,
    }  # fmt: skip
    for peer, label in labels.items():
        assert label in measured or reasons.get(peer), f"{peer}: neither a row nor a reason"
    for row in result["rows"]:
        assert row["startup_s"] > 0
        assert row["server_cpu_us_per_request"] > 0
    described = {server["server"]: server for server in result["servers"]}
    assert described["mlserver"]["forms"][0]["body"]["inputs"][0]["datatype"] == "FP32"  # v2 JSON
    assert described["litserve"]["versions"]["litserve"] != "?"
    for peer in peers:
        ratio = result["ratios"][f"service_vs_{peer}"]
        assert (ratio is None) == (labels[peer] not in measured)
