"""The calibration's verdict from its trials (the rehearsals themselves run in `pipeline calibrate`)."""

from pipeline.calibrate import CalibrationResult, Trial


def trial(fault: str, *, healthy: bool, status: str, step: int | None) -> Trial:
    return Trial(1, fault, healthy, status, step, f"{status} at {step}", 0)


def test_passes_when_healthy_promote_and_faults_stop_at_the_first_analysis() -> None:
    result = CalibrationResult(
        "dev",
        3,
        (
            trial("latency=3ms@0.08", healthy=True, status="promoted", step=None),
            trial("errors=0.2", healthy=False, status="aborted", step=3),
        ),
    )
    assert result.status == "pass"
    assert result.failures == []


def test_a_false_abort_a_late_catch_and_a_miss_each_fail_it() -> None:
    result = CalibrationResult(
        "dev",
        3,
        (
            trial("latency=3ms@0.08", healthy=True, status="aborted", step=5),
            trial("latency=50ms", healthy=False, status="aborted", step=5),
            trial("shift", healthy=False, status="promoted", step=None),
        ),
    )
    assert result.status == "fail"
    assert result.failures == [
        "false abort of healthy seed 1: aborted at 5",
        "latency=50ms not caught at step 3: aborted (aborted at 5)",
        "shift not caught at step 3: promoted (promoted at None)",
    ]
