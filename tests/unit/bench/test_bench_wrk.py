"""Parsing wrk's output (with the BENCH lines of benchmarks/post_row.lua), and refusing to run without wrk."""

import shutil

import pytest

from benchmarks import run, wrk

OUTPUT = """Running 15s test @ http://127.0.0.1:41234/v1/predict
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.61ms    1.02ms  31.20ms   90.12%
    Req/Sec    12.31k     0.91k   13.90k    71.33%
  183712 requests in 15.00s, 52.21MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  12247.13
Transfer/sec:      3.48MB
BENCH requests=183712 duration_us=15000412
BENCH errors connect=0 read=2 write=0 status=4 timeout=1
BENCH latency_us p50=2411 p95=4120 p99=6958 max=31200
"""


def test_parse_reads_rate_percentiles_and_errors() -> None:
    result = wrk.parse(OUTPUT)
    assert result.requests == 183712
    assert result.duration_s == pytest.approx(15.000412)
    assert result.rps == pytest.approx(12247.13)
    assert (result.p50_ms, result.p95_ms, result.p99_ms, result.max_ms) == (2.411, 4.12, 6.958, 31.2)
    assert result.non_2xx == 4
    assert result.socket_errors == 3
    assert result.errors == 7


def test_parse_computes_the_rate_when_wrk_prints_none() -> None:
    text = "\n".join(line for line in OUTPUT.splitlines() if not line.startswith("Requests/sec"))
    assert wrk.parse(text).rps == pytest.approx(183712 / 15.000412)


def test_parse_names_the_script_when_its_lines_are_missing() -> None:
    with pytest.raises(ValueError, match=r"post_row\.lua"):
        wrk.parse("Running 15s test @ http://127.0.0.1:1/\nRequests/sec: 1.0\n")


def test_a_clean_run_has_no_errors() -> None:
    text = (
        OUTPUT.replace("read=2", "read=0").replace("status=4", "status=0").replace("timeout=1", "timeout=0")
    )
    assert wrk.parse(text).errors == 0


def test_without_wrk_the_bench_prints_the_install_command_and_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert run.main(["--quick"]) == run.EXIT_USAGE
    assert "apt-get install -y wrk" in capsys.readouterr().err


@pytest.mark.needs_tool("wrk", "wrk")
def test_the_service_must_be_among_the_servers(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--servers", "minimal,nginx"]) == run.EXIT_USAGE
    assert "--servers" in capsys.readouterr().err
