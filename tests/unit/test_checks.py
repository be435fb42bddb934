"""One check shape for every stage: its line, the result line, the reuse policy and the report's section."""

from dataclasses import asdict
from pathlib import Path

from pipeline.evidence import StageRecord, sections
from pipeline.stage import Check, StageResult, checked_status, reusable


def test_a_check_says_its_value_how_it_stands_to_its_bound_and_why() -> None:
    assert Check.bounded("accuracy", "", 0.912, ">=", 0.93).line() == "accuracy 0.912 < min 0.93"
    assert Check.bounded("total", "p95_ms", 60.0, "<=", 100).line() == "total p95_ms 60 <= max 100"
    assert Check.bounded("total", "requests", 12000, ">=", 1).line() == "total requests 12000 >= min 1"
    latency = Check.bounded("canary", "p95", 488.28, "<=", 250, unit="ms", digits=3)
    assert latency.line() == "canary p95 488ms > max 250ms"
    assert latency.failed
    assert Check.bounded("total", "p99_ms", None, "<=", 50).line() == "total p99_ms: no data"
    chi2 = Check(scope="city", metric="chi2", value=523.1, result="info", note="p 1e-09, dof 2")
    assert chi2.line() == "city chi2 523.1: p 1e-09, dof 2"
    assert chi2.row() == ("city chi2", "523.1", "-", "-", "INFO", "p 1e-09, dof 2")


def test_the_result_says_the_relation_a_judge_weighed_more_than_the_bound() -> None:
    """A ratio past its bound passes when the effect is below the floor: the line still shows `>`."""
    check = Check(
        scope="canary",
        metric="p95 vs stable",
        value=3.98,
        comparator="<=",
        bound=3,
        result="pass",
        unit="x",
        note="+2.2ms (min effect 10ms)",
    )
    assert check.line() == "canary p95 vs stable 3.98x > max 3x: +2.2ms (min effect 10ms)"
    assert check.passed


def test_failures_and_the_result_line_derive_from_the_checks() -> None:
    checks = [
        Check.bounded("roc_auc", "", 0.99, ">=", 0.95),
        Check.bounded("log_loss", "", 0.5, "<=", 0.35),
        Check(scope="age", metric="psi", value=0.15, comparator="<=", bound=0.25, result="warn"),
        Check(scope="users", metric="requests", value=900, result="info"),
    ]
    result = StageResult(status=checked_status(checks), headline="", checks=checks)
    assert result.status == "fail"
    assert result.failures == ["log_loss 0.5 > max 0.35"]
    assert result.result_line == "FAIL 1/3 checks, 1 warn"
    assert checked_status(checks, warn_only=True) == "warn"
    given = StageResult(status="fail", headline="", failures=["the splitter stopped"], checks=checks)
    assert given.failures == ["the splitter stopped"]  # a failure beyond the checks is the stage's to name


def test_a_stored_verdict_is_reused_by_the_stages_policy() -> None:
    failed = {"inputs": "k1", "status": "fail", "checks": [asdict(Check.bounded("m", "", 1, ">=", 2))]}
    assert reusable(failed, "k1", "any", fresh=False)  # a function of its inputs: a failure stands
    assert not reusable(failed, "k1", "pass", fresh=False)  # a measurement: a failure is measured again
    assert reusable({**failed, "status": "pass"}, "k1", "pass", fresh=False)
    assert not reusable(failed, "k2", "any", fresh=False)
    assert not reusable(failed, "k1", "any", fresh=True)
    assert not reusable(None, "k1", "any", fresh=False)
    before = {**failed, "checks": [{"metric": "m", "kind": "min", "value": 1, "bound": 2, "passed": False}]}
    assert not reusable(before, "k1", "any", fresh=False)  # checks of another shape: judged again


def test_the_report_renders_every_stage_alike(tmp_path: Path) -> None:
    chart = tmp_path / "loadtest" / "chart.png"
    chart.parent.mkdir()
    chart.write_bytes(b"\x89PNG")
    records = [
        StageRecord("train", "passed", 1.0, "roc_auc 0.99"),
        StageRecord(
            "gate", "failed", 2.0, "FAIL 0/1 checks", checks=[Check.bounded("roc_auc", "", 0.9, ">=", 0.95)]
        ),
        StageRecord(
            "loadtest",
            "passed",
            3.0,
            "PASS 1/1 checks",
            {"chart": str(chart), "gate": str(tmp_path / "loadtest" / "gate.json")},
            [Check.bounded("total", "p95_ms", 12.0, "<=", 100)],
        ),
    ]
    evidence = {"stages": [asdict(record) for record in records], "lineage": {"model": "m"}}
    titles = {title: markdown for title, _, markdown in sections(evidence, tmp_path)}
    assert list(titles) == ["Stages", "Lineage", "gate: FAILED", "loadtest: PASSED"]
    assert "| roc_auc | 0.9 | >= | 0.95 | FAIL |  |" in titles["gate: FAILED"]
    assert "| total p95_ms | 12 | <= | 100 | PASS |  |" in titles["loadtest: PASSED"]
    assert "![loadtest chart](loadtest/chart.png)" in titles["loadtest: PASSED"]
    assert "files: [gate](loadtest/gate.json)" in titles["loadtest: PASSED"]
