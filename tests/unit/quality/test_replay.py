"""`--from-capture`: the captured rows in the card's order; a hashed or dropped feature takes the card's
default, else its row is refused and counted; drift checks them, leaving the redacted features out."""

import json
from pathlib import Path

import pytest

from model_service.contract.capture import CaptureRecord, capture_file_name
from model_service.contract.card import read_card
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.quality.replay import captured_rows
from pipeline.stages.drift import drift
from pipeline.workspace import Workspace
from tests._capture import START
from tests._card_v2 import NAME, VERSION
from tests.unit.quality.conftest import Capture


def _with_default(workspace: Workspace, config: Config, feature: str, default: object) -> Path:
    folder = workspace.model_dir(config, VERSION).path
    card = json.loads((folder / "model.json").read_text())
    next(f for f in card["features"] if f["name"] == feature)["default"] = default
    (folder / "model.json").write_text(json.dumps(card))
    return folder


def _write(directory: Path, inputs: list[dict[str, object]]) -> None:
    records = [
        CaptureRecord(f"r{i}", None, "2026-12-01T00:00:00.000+00:00", NAME, VERSION, row, {"value": 1.0}, 1.0)
        for i, row in enumerate(inputs)
    ]
    directory.mkdir(exist_ok=True)
    (directory / capture_file_name(START, 7)).write_text("".join(f"{r.to_json()}\n" for r in records))


def test_rows_in_card_order_defaults_for_redacted_features_and_refusals_counted(
    config: Config, workspace: Workspace, tmp_path: Path
) -> None:
    card = read_card(_with_default(workspace, config, "n", 4))
    _write(
        tmp_path / "capture",
        [
            {"city": "Paris", "n": "5f3c0ad2e1b4a6c7", "age": 30.0},  # n hashed: the default
            {"city": "Lyon", "age": 41.5},  # n dropped: the default
            {"n": 2, "city": "Lyon"},  # age hashed and dropped: no default, refused
            {"age": "old", "n": 2, "city": "Lyon"},  # a value the card refuses
        ],
    )
    replay = captured_rows(tmp_path / "capture", card, {"n": "hash"})
    assert replay.rows == [[30.0, 4, "Paris"], [41.5, 4, "Lyon"]]
    assert replay.filled == {"n": 2}
    assert replay.refused == {
        "lacking age (missing; the card has no default for it)": 1,
        "with a value of age the card refuses": 1,
    }
    assert replay.summary(Path("c")) == (
        "2 of 4 captured rows from c; the card's default filled in for n (2 rows); refused: 1 rows lacking age "
        "(missing; the card has no default for it), 1 rows with a value of age the card refuses"
    )


def test_nothing_to_replay_is_a_clear_error(config: Config, workspace: Workspace, tmp_path: Path) -> None:
    card = read_card(workspace.model_dir(config, VERSION).path)
    with pytest.raises(StageError, match=r"--from-capture: .*capture does not exist; serve with capture on"):
        captured_rows(tmp_path / "capture", card, {})
    _write(tmp_path / "capture", [{"n": 2, "city": "Lyon", "age": 3.0}])
    with pytest.raises(
        StageError, match=r"no row to replay: 0 of 1 captured rows .*lacking n \(hashed or dropped"
    ):
        captured_rows(tmp_path / "capture", card, {"n": "drop"})


def test_drift_from_the_capture_leaves_the_redacted_features_out(
    config: Config, workspace: Workspace, capture: Capture
) -> None:
    capture([0.3] * 150)
    model = workspace.model_dir(config, VERSION)
    _with_default(workspace, config, "city", "Lyon")
    config = config.model_copy(
        update={
            "drift": config.drift.model_copy(
                update={
                    "log_inputs": config.drift.log_inputs.model_copy(update={"sensitive": {"city": "hash"}})
                }
            )
        }
    )
    result = drift(config, workspace, Reporter(), model=model, capture_dir=workspace.root / "capture")
    assert result.rows == 150
    assert result.source == f"captured rows of {workspace.root / 'capture'}"
    assert {check.scope for check in result.checks} == {"age", "n", "(score)"}
