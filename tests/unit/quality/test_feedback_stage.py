"""`pipeline feedback` in-process: every outcome of the label store counted; a malformed file refused
naming the row and the fix, with nothing stored."""

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model_service.contract.capture import LABELS_FILE, LabelStore
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.stages.feedback import FeedbackResult, feedback
from pipeline.workspace import Workspace
from tests._capture import DAY, START
from tests._card_v2 import VERSION
from tests.unit.quality.conftest import Capture


def _write_csv(
    path: Path, rows: list[tuple[object, object]], header: tuple[str, str] = ("request_id", "label")
) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _feedback(
    config: Config, workspace: Workspace, path: Path, *, now: float = START + DAY
) -> FeedbackResult:
    return feedback(
        config,
        Reporter(),
        model=workspace.model_dir(config, VERSION),
        labels_path=path,
        capture_dir=workspace.root / "capture",
        label_window_days=1,
        now=now,
    )


def _stored(workspace: Workspace) -> dict[str, object]:
    store = LabelStore(workspace.root / "capture" / LABELS_FILE)
    try:
        return store.labels()
    finally:
        store.close()


def test_each_outcome_is_counted(
    config: Config, workspace: Workspace, capture: Capture, tmp_path: Path
) -> None:
    """Rows served every 10 minutes from START; labels arrive a day after the 50th: the first 50 are late."""
    keys = capture([0.2] * 100)
    rows: list[tuple[object, object]] = [(key, "1") for key in keys[50:80]]  # stored, as the class 1
    rows += [(keys[50], "1"), (keys[51], "0"), (keys[0], "0"), ("never-served", "1")]
    result = _feedback(
        config, workspace, _write_csv(tmp_path / "labels.csv", rows), now=START + DAY + 50 * 600
    )
    assert result.outcomes == {
        "stored": 30,
        "duplicate": 1,
        "conflict": 1,
        "unknown": 1,
        "late": 1,
        "malformed": 0,
    }
    assert result.status == "pass"
    stored = _stored(workspace)
    assert stored[keys[51]] == 1  # the first label stays, typed as the card's class (an integer)
    assert result.headline == "30 of 34 labels stored from labels.csv"


def test_a_parquet_file_is_read_the_same(
    config: Config, workspace: Workspace, capture: Capture, tmp_path: Path
) -> None:
    keys = capture([0.7] * 5)
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"request_id": keys, "label": [1, 0, 1, 1, 0], "extra": ["x"] * 5}), path)
    assert _feedback(config, workspace, path).outcomes["stored"] == 5
    assert _stored(workspace) == dict(zip(keys, [1, 0, 1, 1, 0], strict=True))


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (
            [("K0", "1"), ("K1", "maybe")],
            ("request_id", "label"),
            r"line 3: label 'maybe' for '\S+-1': expected one of the classes of mixed-model c0ffee000001: 0, 1; fix or remove that row",
        ),
        ([("K0", "1"), ("", "1")], ("request_id", "label"), r"line 3: request_id '' is not a request id"),
        (
            [("K0", "1")],
            ("id", "label"),
            r"line 1: no column 'request_id'; expected a header row `request_id,label`",
        ),
        ([], ("request_id", "label"), r"no rows after the header"),
    ],
)
def test_a_malformed_file_stores_nothing(
    config: Config,
    workspace: Workspace,
    capture: Capture,
    tmp_path: Path,
    *,
    rows: list[tuple[object, object]],
    header: tuple[str, str],
    message: str,
) -> None:
    keys = capture([0.7] * 2)
    rows = [(keys[0] if key == "K0" else keys[1] if key == "K1" else key, value) for key, value in rows]
    path = _write_csv(tmp_path / "labels.csv", rows, header)
    with pytest.raises(StageError, match=message) as raised:
        _feedback(config, workspace, path)
    assert str(path) in str(raised.value)
    assert _stored(workspace) == {}  # the valid first row was not stored either


def test_other_file_types_and_a_missing_capture_are_refused(
    config: Config, workspace: Workspace, tmp_path: Path
) -> None:
    path = _write_csv(tmp_path / "labels.csv", [("a", "1")])
    with pytest.raises(StageError, match="no capture directory"):
        _feedback(config, workspace, path)
    assert not (workspace.root / "capture").exists()
    (workspace.root / "capture").mkdir()
    with pytest.raises(StageError, match=r"absent.csv: no such file"):
        _feedback(config, workspace, tmp_path / "absent.csv")
    (tmp_path / "labels.txt").write_text("request_id,label\na,1\n")
    with pytest.raises(StageError, match=r"labels.txt: expected a .csv or .parquet file"):
        _feedback(config, workspace, tmp_path / "labels.txt")
    (tmp_path / "labels.parquet").write_text("not parquet")
    with pytest.raises(StageError, match=r"not a readable Parquet file"):
        _feedback(config, workspace, tmp_path / "labels.parquet")
