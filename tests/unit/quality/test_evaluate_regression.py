"""`pipeline evaluate` on a regression's capture: the served values against float labels, judged by the
regression's gate rows; no estimate (CBPE needs probabilities)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model_service.contract.capture import LABELS_FILE, CaptureRecord, LabelStore, capture_file_name
from pipeline.config import BASE_FILE, load_config
from pipeline.console import Reporter
from pipeline.stages.evaluate import evaluate
from pipeline.workspace import Workspace, read_json
from tests._capture import DAY, START
from tests._card_v2 import NAME, VERSION, write_export
from tests.unit.quality.conftest import ENVIRONMENTS

GATES = f"""\
extends: base
model: {{name: {NAME}}}
gates: !replace
  metrics:
    rmse: {{max: 1.0, vs_champion: {{min_relative_delta: -0.5}}}}
quality:
  min_labelled_rows: 20
"""


def test_served_values_are_scored_against_float_labels(tmp_path: Path) -> None:
    (tmp_path / "environments").mkdir()
    shutil.copy(ENVIRONMENTS / BASE_FILE, tmp_path / "environments" / BASE_FILE)
    (tmp_path / "environments" / "reg.yaml").write_text(GATES)
    config = load_config("reg", tmp_path / "environments")
    workspace = Workspace(tmp_path)
    model = workspace.model_dir(config, VERSION)
    write_export(model.path, "regression")
    model.gate("reg").write_text(json.dumps({"candidate": {"rmse": 0.5}}))
    values = np.linspace(-2, 2, 40)
    noise = np.where(np.arange(40) % 2 == 0, 0.6, -0.6)  # rmse 0.6: within 1.0, but 20 % worse than 0.5
    capture = tmp_path / "capture"
    capture.mkdir()
    records = [
        CaptureRecord(f"r{i}", None, "2026-12-01T00:00:00.000+00:00", NAME, VERSION, {}, {"value": v}, 1.0)
        for i, v in enumerate(values.tolist())
    ]
    (capture / capture_file_name(START, 1)).write_text("".join(f"{r.to_json()}\n" for r in records))
    store = LabelStore(capture / LABELS_FILE)
    store.record_captured((r.key, START) for r in records)
    for record, value, delta in zip(records, values, noise, strict=True):
        store.add(record.key, float(value + delta), received_at=START + DAY, source="test")
    store.close()

    result = evaluate(config, workspace, Reporter(), capture_dir=capture)

    assert result.verdicts == {VERSION: "pass"}
    rmse = next(c for c in result.checks if c.scope == f"{VERSION} rmse" and c.metric == "")
    assert rmse.value == pytest.approx(0.6)
    relative = next(c for c in result.checks if c.metric == "relative delta vs offline")
    assert relative.value == pytest.approx(-0.2)
    assert read_json(result.artifacts["report"])["versions"][0]["estimate"] is None
