"""`pipeline evaluate` in-process on a capture written as the service writes it: verdicts per version,
the estimate before labels, the gauges file, the per-day report; bad captures refused, nothing written."""

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from model_service.contract.capture import LIVE_QUALITY_FILE
from model_service.contract.monitoring import LIVE_QUALITY, LIVE_QUALITY_ESTIMATE, LIVE_QUALITY_VERDICT
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.stages.evaluate import EvaluateResult, evaluate
from pipeline.workspace import Workspace, read_json
from tests._capture import calibrated, label
from tests._card_v2 import VERSION
from tests.unit.quality.conftest import Capture

WORSE = "badbadbad001"


def _evaluate(config: Config, workspace: Workspace) -> EvaluateResult:
    return evaluate(config, workspace, Reporter(), capture_dir=workspace.root / "capture")


def _gauges(workspace: Workspace) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (workspace.root / "capture" / LIVE_QUALITY_FILE).read_text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _verdict(gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float], version: str) -> str:
    """The verdict whose series is 1 (exactly one is)."""
    ones = [
        dict(labels)["verdict"]
        for (name, labels), value in gauges.items()
        if name == LIVE_QUALITY_VERDICT and dict(labels)["version"] == version and value == 1
    ]
    assert len(ones) == 1
    return ones[0]


def test_a_healthy_version_passes_and_a_worse_one_fails(
    config: Config, workspace: Workspace, capture: Capture
) -> None:
    """The worse version serves the same scores, but its labels were shuffled against them: the same
    inputs, the same predictions (drift sees nothing), the labels say it is no better than chance."""
    p, y = calibrated(400, seed=1)
    good = capture(p)
    label(workspace.root / "capture", good[:300], y[:300].tolist())
    worse_folder = workspace.model_dir(config, WORSE).path
    worse_folder.parent.mkdir(parents=True, exist_ok=True)
    (worse_folder).symlink_to(workspace.model_dir(config, VERSION).path)
    bad = capture(p, version=WORSE, first=400)
    label(workspace.root / "capture", bad[:300], np.random.default_rng(2).permutation(y[:300]).tolist())

    result = _evaluate(config, workspace)

    assert result.verdicts == {VERSION: "pass", WORSE: "fail"}
    assert result.status == "fail"
    failed = {(c.scope, c.metric) for c in result.checks if c.failed}
    assert (f"{WORSE} roc_auc", "") in failed
    assert (f"{WORSE} roc_auc", "delta vs offline") in failed
    assert not [c for c in result.checks if c.scope.startswith(VERSION) and c.failed]
    gauges = _gauges(workspace)
    assert _verdict(gauges, VERSION) == "pass"
    assert _verdict(gauges, WORSE) == "fail"
    live = gauges[LIVE_QUALITY, (("metric", "roc_auc"), ("model", config.model.name), ("version", VERSION))]
    assert live == pytest.approx(result.checks[1].value)  # the gauge is the checked figure
    assert (
        gauges["model_live_quality_labelled_rows", (("model", config.model.name), ("version", WORSE))] == 300
    )
    report = read_json(result.artifacts["report"])
    assert [v["verdict"] for v in report["versions"]] == ["pass", "fail"]
    assert report["versions"][0]["offline_source"].startswith("the gate's evaluation")
    assert result.artifacts["chart"].is_file()


def test_too_few_labels_is_inconclusive_with_the_estimate_beside(
    config: Config, workspace: Workspace, capture: Capture
) -> None:
    p, y = calibrated(400, seed=4)
    keys = capture(p)
    label(workspace.root / "capture", keys[:20], y[:20].tolist())
    result = _evaluate(config, workspace)
    assert result.verdicts == {VERSION: "inconclusive"}
    assert result.status == "pass"
    counted = result.checks[0]
    assert (counted.metric, counted.value, counted.result) == ("labelled rows", 20, "inconclusive")
    estimates = [c for c in result.checks if c.metric == "estimate"]
    assert {c.scope for c in estimates} == {f"{VERSION} roc_auc", f"{VERSION} accuracy"}
    assert all(c.note == "estimate from 400 served probabilities, assumes calibration" for c in estimates)
    gauges = _gauges(workspace)
    assert not [key for key in gauges if key[0] == LIVE_QUALITY]  # no measurement from 20 labels
    assert [key for key in gauges if key[0] == LIVE_QUALITY_ESTIMATE]


def test_an_estimate_past_a_bound_warns_and_never_fails(
    config: Config, workspace: Workspace, capture: Capture
) -> None:
    """Unsure scores (0.45-0.55) put the expected accuracy near 0.5, under the gate's 0.7: a warning."""
    capture(np.linspace(0.45, 0.55, 200))
    result = _evaluate(config, workspace)
    assert result.verdicts == {VERSION: "warn"}
    assert result.status == "warn"
    assert not [c for c in result.checks if c.failed]
    warned = next(c for c in result.checks if c.result == "warn")
    assert (warned.scope, warned.metric) == (f"{VERSION} accuracy", "estimate")


def test_one_row_per_day_in_the_report(config: Config, workspace: Workspace, capture: Capture) -> None:
    p, y = calibrated(240, seed=6)
    keys = capture(p, spacing=1800.0)  # 48 a day: five days
    label(workspace.root / "capture", keys, y.tolist())
    report = read_json(_evaluate(config, workspace).artifacts["report"])
    assert [(d["day"], d["served"], d["labelled"]) for d in report["days"]] == [
        (f"2026-12-0{day}", 48, 48) for day in range(1, 6)
    ]
    assert all("roc_auc" in d["live"] and "accuracy" in d["estimate"] for d in report["days"])


def test_labels_that_name_no_class_are_left_out_and_counted(
    config: Config, workspace: Workspace, capture: Capture
) -> None:
    p, y = calibrated(200, seed=7)
    keys = capture(p)
    label(workspace.root / "capture", keys[:150], y[:150].tolist())
    label(workspace.root / "capture", keys[150:160], ["maybe"] * 10)
    result = _evaluate(config, workspace)
    version = read_json(result.artifacts["report"])["versions"][0]
    assert (version["labelled"], version["unusable_labels"]) == (150, 10)


def test_no_capture_directory_is_a_clear_error_and_creates_nothing(
    config: Config, workspace: Workspace
) -> None:
    with pytest.raises(StageError, match=r"capture: no capture directory; serve live with capture on"):
        _evaluate(config, workspace)
    assert not (workspace.root / "capture").exists()


def test_a_corrupt_line_is_refused_naming_file_and_line_and_nothing_is_written(
    config: Config, workspace: Workspace, capture: Capture
) -> None:
    capture(calibrated(10, seed=8)[0])
    path = next((workspace.root / "capture").glob("capture-*.jsonl"))
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(StageError, match=rf"{path.name}:2: not JSON.*move the file aside"):
        _evaluate(config, workspace)
    assert not (workspace.root / "capture" / LIVE_QUALITY_FILE).exists()


def test_a_torn_last_line_is_skipped(config: Config, workspace: Workspace, capture: Capture) -> None:
    capture(calibrated(10, seed=9)[0])
    path = next((workspace.root / "capture").glob("capture-*.jsonl"))
    path.write_text(path.read_text() + '{"v":1,"request_id":"tor')
    result = _evaluate(config, workspace)
    assert read_json(result.artifacts["report"])["versions"][0]["served"] == 10


def test_a_version_without_a_card_or_with_other_outputs_is_inconclusive_and_named(
    config: Config, workspace: Workspace, capture: Capture
) -> None:
    """Neither the workspace nor the registry holds the card of `0000deadbeef`; `VERSION`'s rows carry
    three classes where its card has two."""
    capture([0.4] * 5, version="0000deadbeef")
    path = next((workspace.root / "capture").glob("capture-*.jsonl"))
    capture([0.4] * 5)
    other = max((workspace.root / "capture").glob("capture-*.jsonl"))
    assert other != path
    other.write_text(other.read_text().replace('"probabilities":{', '"probabilities":{"2":0.0,'))
    result = _evaluate(config, workspace)
    assert result.verdicts == {"0000deadbeef": "inconclusive", VERSION: "inconclusive"}
    assert result.status == "pass"
    notes = {check.scope: check.note for check in result.checks}
    assert (
        notes["0000deadbeef"]
        == "no card of 0000deadbeef in the workspace or the registry: its rows cannot be scored"
    )
    assert notes[VERSION].startswith(
        f"version {VERSION}: captured outputs are not its card's (outputs ['2', '0', '1']"
    )
