"""Rows from runs, the ratios (best service configuration vs each peer at 32 connections, paired by round)
and the targets."""

import json
from pathlib import Path

from benchmarks import report
from benchmarks import run as bench_run
from model_service.contract.card import Feature
from tests._card_v2 import card_of


def run(
    server: str,
    workers: int,
    connections: int,
    rps: float,
    *,
    round_: int = 1,
    p99: float = 5.0,
    startup: float = 2.0,
) -> report.Run:
    return report.Run(
        server=server,
        workers=workers,
        connections=connections,
        round=round_,
        rps=rps,
        p50_ms=1.0,
        p95_ms=3.0,
        p99_ms=p99,
        errors=0,
        rss_mb=200.0,
        worker_rss_mb=90.0,
        processes=3,
        loadgen_cpu_s=3.0,
        duration_s=15.0,
        requests=int(rps * 15),
        startup_s=startup,
    )


RUNS = [
    run(report.SERVICE, 1, 32, 6000),
    run(report.SERVICE, 1, 8, 5000),
    run(report.SERVICE, 2, 8, 9000),
    run(report.SERVICE, 2, 32, 10000, p99=6.0),
    run(report.MINIMAL, 2, 32, 12000),
    run(report.MLFLOW_TENSOR, 2, 32, 1500),
    run(report.MLFLOW_DATAFRAME, 2, 32, 150),
    run(report.FLASK, 2, 32, 1400),
    run(report.SERVICE, 2, 32, 11000, round_=2, p99=8.0),
    run(report.MINIMAL, 2, 32, 12500, round_=2),
    run(report.MLFLOW_TENSOR, 2, 32, 1400, round_=2),
    run(report.FLASK, 2, 32, 1600, round_=2),
]
MODEL_SERVER_RUNS = [
    run(report.KSERVE_V2, 2, 32, 2000, p99=30.0, startup=9.0),
    run(report.MLSERVER, 2, 32, 1000, p99=60.0, startup=12.0),
    run(report.LITSERVE, 2, 32, 4000, p99=12.0, startup=4.0),
    run(report.LITSERVE, 2, 32, 5000, round_=2, p99=7.0, startup=3.5),
]


def test_rows_take_the_best_round_with_its_latency_and_keep_every_round() -> None:
    rows = report.rows(RUNS)
    [service] = [r for r in rows if (r["server"], r["workers"], r["connections"]) == (report.SERVICE, 2, 32)]
    assert service["rps"] == 11000.0
    assert service["p99_ms"] == 8.0  # the best round's, not the lowest of all rounds
    assert service["rps_runs"] == [10000.0, 11000.0]
    assert service["rps_mean"] == 10500.0
    assert service["p99_ms_runs"] == [6.0, 8.0]
    documented = {"server", "workers", "connections", "rps", "p50_ms", "p95_ms", "p99_ms", "errors", "rss_mb"}
    assert documented <= set(service)
    assert service["loadgen_cpu_cores"] == 0.2


def test_rows_list_servers_as_they_ran_with_connections_ascending() -> None:
    order = [(r["server"], r["workers"], r["connections"]) for r in report.rows(RUNS)][:4]
    assert order == [
        (report.SERVICE, 1, 8),
        (report.SERVICE, 1, 32),
        (report.SERVICE, 2, 8),
        (report.SERVICE, 2, 32),
    ]


def test_ratios_pair_the_best_service_configuration_with_each_peer_round_by_round() -> None:
    ratios, per_round = report.ratios(report.rows(RUNS), RUNS)
    # service x2 at 32: 10,000 then 11,000; minimal 12,000 then 12,500 -> 0.833 and 0.88, median 0.857
    assert per_round["service_vs_minimal"] == [0.833, 0.88]
    assert ratios == {
        "service_vs_minimal": 0.86,
        "service_vs_mlflow": 7.26,
        "service_vs_flask": 7.01,
        "service_vs_kserve": None,
        "service_vs_mlserver": None,
        "service_vs_bentoml": None,
        "service_vs_litserve": None,
    }


def test_model_servers_get_a_ratio_each_and_the_targets_of_issue_24() -> None:
    runs = RUNS + MODEL_SERVER_RUNS
    table = report.rows(runs)
    ratios, per_round = report.ratios(table, runs)
    assert ratios["service_vs_kserve"] == 5.0  # round 1 only: 10,000 / 2,000
    assert per_round["service_vs_litserve"] == [2.5, 2.2]
    assert ratios["service_vs_bentoml"] is None  # not in these runs
    checks = report.targets(table, ratios, per_round)
    assert checks["service_vs_litserve"] == {"value": 2.35, "min": 1.5, "met": True, "rounds": [2.5, 2.2]}
    # litserve is the fastest model server (its best round: 5,000 req/s at p99 7 ms); the service's best
    # row (11,000 req/s, round 2) has p99 8 ms.
    assert checks["service_p99_ms_vs_fastest_model_server"] == {
        "value": 8.0, "max": 7.0, "met": False, "against": report.LITSERVE,
    }  # fmt: skip
    assert checks["service_startup_s_vs_quickest_model_server"] == {
        "value": 2.0, "max": 3.5, "met": True, "against": report.LITSERVE, "rounds": [2.0, 2.0],
    }  # fmt: skip


def test_no_model_server_rows_no_model_server_checks() -> None:
    table = report.rows(RUNS)
    checks = report.targets(table, *report.ratios(table, RUNS))
    assert not any("model_server" in key for key in checks)


def test_rows_keep_the_start_up_time_of_every_round_and_the_quickest() -> None:
    [litserve] = report.rows(MODEL_SERVER_RUNS[2:])
    assert litserve["startup_s"] == 3.5
    assert litserve["startup_s_runs"] == [4.0, 3.5]


def test_a_server_that_did_not_run_is_a_row_with_its_reason() -> None:
    not_run = [{"server": "kserve", "reason": "round 1: kserve exited with 1 before answering"}]
    cells = report.table_cells(report.rows(RUNS), not_run, rounds=True)
    assert cells[-1][0] == "kserve"
    assert cells[-1][-1] == "not run: round 1: kserve exited with 1 before answering"
    assert len({len(row) for row in cells}) == 1  # as wide as the measured rows


def test_a_peer_quiet_in_one_round_only_is_not_paired_with_the_service_busy_in_the_other() -> None:
    # Best against best would be 11,000 / 16,000 = 0.69: the minimal app's quiet round against the
    # service's busy one. Paired, each round's machine state is on both sides.
    runs = [
        run(report.SERVICE, 2, 32, 11000),
        run(report.MINIMAL, 2, 32, 12000),
        run(report.SERVICE, 2, 32, 10000, round_=2),
        run(report.MINIMAL, 2, 32, 16000, round_=2),
        run(report.SERVICE, 2, 32, 14500, round_=3),
        run(report.MINIMAL, 2, 32, 16500, round_=3),
    ]
    ratios, per_round = report.ratios(report.rows(runs), runs)
    assert per_round["service_vs_minimal"] == [0.917, 0.625, 0.879]
    assert ratios["service_vs_minimal"] == 0.88


def test_a_missing_peer_has_no_ratio() -> None:
    runs = [r for r in RUNS if r.server in (report.SERVICE, report.MINIMAL)]
    ratios, per_round = report.ratios(report.rows(runs), runs)
    assert ratios["service_vs_minimal"] == 0.86
    assert ratios["service_vs_flask"] is None
    assert "service_vs_flask" not in per_round


def test_targets_state_value_bound_verdict_and_rounds() -> None:
    table = report.rows(RUNS)
    checks = report.targets(table, *report.ratios(table, RUNS))
    assert checks["service_vs_minimal"] == {"value": 0.86, "min": 0.8, "met": True, "rounds": [0.833, 0.88]}
    assert checks["service_p99_ms"] == {"value": 8.0, "max": 10.0, "met": True}
    assert checks["service_errors"]["met"]


def test_write_leaves_json_markdown_chart_and_a_latest_link(tmp_path: Path) -> None:
    table = report.rows(RUNS)
    ratios, per_round = report.ratios(table, RUNS)
    result = {
        "run_id": "r1",
        "machine": {"cpus": 2, "loadavg_before": [0.1, 0.1, 0.1], "loadavg_after": [0.2, 0.2, 0.2]},
        "settings": {"duration_s": 15, "rounds": 2, "warmup_s": 2},
        "rows": table,
        "not_run": [{"server": "bentoml", "reason": "installing bentoml failed (exit 1): no registry"}],
        "servers": [
            {
                "server": report.LITSERVE,
                "forms": [
                    {"label": report.LITSERVE, "path": "/predict", "body": {"instances": [[1.5, 2.0]]}}
                ],
            }
        ],
        "ratios": ratios,
        "targets": report.targets(table, ratios, per_round),
        "onnxruntime": [{"batch": 1, "predictions_per_s": 120000, "us_per_call": 8.3}],
        "pipeline": [{"run": "cold", "seconds": 50.0, "command": "python -m pipeline run", "status": "ok"}],
    }
    for run_id in ("r1", "r2"):
        report.write(tmp_path / run_id, {**result, "run_id": run_id})
    assert {p.name for p in (tmp_path / "r2").iterdir()} == {"bench.json", "bench.md", "bench.png"}
    assert (tmp_path / "latest").resolve() == (tmp_path / "r2").resolve()
    markdown = (tmp_path / "r2" / "bench.md").read_text()
    assert "| service_vs_minimal | 0.86 | >= 0.8 | met | 0.83 / 0.88 |" in markdown
    assert "10,000 / 11,000" in markdown  # every round shown
    assert "| bentoml | - |" in markdown
    assert "not run: installing bentoml failed (exit 1): no registry |" in markdown
    assert '| litserve | `/predict` | `{"instances":[[1.5,2.0]]}` |' in markdown


def test_server_cpu_per_request_is_the_best_round_s() -> None:
    slow = report.Run(**{**run(report.LITSERVE, 2, 32, 1000).__dict__, "server_cpu_s": 30.0})
    fast = report.Run(**{**run(report.LITSERVE, 2, 32, 2000, round_=2).__dict__, "server_cpu_s": 24.0})
    [row] = report.rows([slow, fast])
    assert row["server_cpu_us_per_request"] == 800.0  # 24 s over 2,000 req/s x 15 s


def test_v2_binary_against_json_takes_each_forms_best_round() -> None:
    runs = [
        run(report.V2_JSON, 2, 32, 700),
        run(report.V2_BINARY, 2, 32, 1000, p99=4.0),
        run(report.V2_JSON, 2, 32, 800, round_=2),
    ]
    table = report.rows(runs)
    assert report.v2_binary_vs_json(table) == {
        "rows_per_request": report.V2_ROWS,
        "json_rps": 800,
        "binary_rps": 1000,
        "json_p99_ms": 5.0,
        "binary_p99_ms": 4.0,
        "ratio": 1.25,
    }
    assert report.v2_binary_vs_json(report.rows(RUNS)) is None  # `v2` not run: no line in the report


def test_bench_json_describes_a_binary_body_by_its_header_and_byte_count(tmp_path: Path) -> None:
    """The v2 binary form's body is JSON then raw floats: bench.json shows the JSON and counts the rest."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    card = card_of(
        "binary",
        [Feature("a", "float"), Feature("b", "float")],
        {
            "inputs": [{"name": "input", "dtype": "float32", "features": ["a", "b"]}],
            "outputs": {"label": "label", "probabilities": "probabilities"},
        },
    )
    (model_dir / "model.json").write_text(json.dumps(card.raw))
    (model_dir / "eval.json").write_text(json.dumps({"rows": [[1.0, 2.0]]}))
    server = bench_run._v2_server(model_dir, "python")
    as_json, as_binary = (bench_run.body_described(form) for form in server.forms)
    assert as_json["inputs"][0]["data"][:2] == [1.0, 2.0]
    assert as_binary["json"]["inputs"][0]["parameters"] == {"binary_data_size": report.V2_ROWS * 2 * 4}
    assert as_binary["binary_bytes"] == report.V2_ROWS * 2 * 4
