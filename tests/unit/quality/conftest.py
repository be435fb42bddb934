"""A capture directory written as the service writes it (contract/capture.py), a card to score it with
(tests/_card_v2.py's hand-written export, in the workspace's artifacts) and gates written here."""

import json
import shutil
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from model_service.contract.capture import LABELS_FILE, CaptureRecord, LabelStore, capture_file_name
from pipeline.config import BASE_FILE, Config, load_config
from pipeline.workspace import Workspace
from tests._capture import START
from tests._card_v2 import NAME, VERSION, write_export

ENVIRONMENTS = Path(__file__).parents[3] / "environments"
GATES = f"""\
extends: base
model: {{name: {NAME}}}
gates: !replace
  mode: enforce
  metrics:
    roc_auc: {{min: 0.8, vs_champion: {{min_delta: -0.05}}}}
    accuracy: {{min: 0.7, vs_champion: {{min_delta: -0.05}}}}
quality:
  min_labelled_rows: 50
"""
Capture = Callable[..., list[str]]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    folder = tmp_path / "environments"
    folder.mkdir()
    shutil.copy(ENVIRONMENTS / BASE_FILE, folder / BASE_FILE)
    (folder / "live.yaml").write_text(GATES)
    return load_config("live", folder)


@pytest.fixture
def workspace(tmp_path: Path, config: Config) -> Workspace:
    """A workspace holding the card's export, with a gate record of its offline metrics."""
    space = Workspace(tmp_path)
    model = space.model_dir(config, VERSION)
    write_export(model.path)
    offline = {"roc_auc": 0.9, "accuracy": 0.82, "log_loss": 0.4}
    model.gate(config.name).write_text(json.dumps({"candidate": offline}))
    return space


@pytest.fixture
def capture(tmp_path: Path) -> Capture:
    """Write served rows (scores P(1)) of `version`, one per `spacing` seconds from START, into a capture
    file and the label index; return their keys."""
    directory = tmp_path / "capture"

    def write(
        scores: Sequence[float], *, version: str = VERSION, spacing: float = 600.0, first: int = 0
    ) -> list[str]:
        directory.mkdir(exist_ok=True)
        records = [
            CaptureRecord(
                request_id=f"{version}-{first + i}",
                trace_id=None,
                time=datetime.fromtimestamp(START + (first + i) * spacing, UTC).isoformat(
                    timespec="milliseconds"
                ),
                model=NAME,
                version=version,
                inputs={"age": 40.0, "n": 3, "city": "Lyon"},
                outputs={"label": int(p >= 0.5), "probabilities": {"0": 1 - p, "1": p}},
                latency_ms=1.0,
            )
            for i, p in enumerate(scores)
        ]
        path = directory / capture_file_name(START + first, 1000 + len(list(directory.glob("*.jsonl"))))
        path.write_text("".join(f"{r.to_json()}\n" for r in records))
        store = LabelStore(directory / LABELS_FILE)
        store.record_captured((r.key, START + (first + i) * spacing) for i, r in enumerate(records))
        store.close()
        return [r.key for r in records]

    return write
