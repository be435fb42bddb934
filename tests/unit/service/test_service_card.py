"""The card and the model are checked before serving; each problem is one line naming file and key."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from model_service.card import load_card
from model_service.errors import StartupError
from model_service.runtime import OnnxModel


def copy(model_dir: Path, tmp_path: Path, **card_changes: Any) -> Path:
    for name in ("model.onnx", "model.json"):
        shutil.copy(model_dir / name, tmp_path / name)
    card = json.loads((tmp_path / "model.json").read_text())
    card.update(card_changes)
    (tmp_path / "model.json").write_text(json.dumps(card))
    return tmp_path


def test_valid(model_dir: Path) -> None:
    card = load_card(model_dir)
    assert card.n_features == 30
    assert card.classes == (0, 1)
    OnnxModel(card).warm_up()


def test_missing_card(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="model card not found"):
        load_card(tmp_path)


def test_malformed(model_dir: Path, tmp_path: Path, card: dict[str, Any]) -> None:
    copy(model_dir, tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(StartupError, match="not valid JSON"):
        load_card(tmp_path)
    copy(model_dir, tmp_path, classes="01")
    with pytest.raises(StartupError, match=r"model.json: classes: "):
        load_card(tmp_path)
    copy(model_dir, tmp_path, onnx={**card["onnx"], "sha256": "abc"})
    with pytest.raises(StartupError, match=r"onnx.sha256: String should match pattern"):
        load_card(tmp_path)
    copy(model_dir, tmp_path, onnx={**card["onnx"], "file": "../model.onnx"})
    with pytest.raises(StartupError, match=r"onnx.file: expected a file name inside"):
        load_card(tmp_path)


def test_sha_mismatch(model_dir: Path, tmp_path: Path) -> None:
    copy(model_dir, tmp_path)
    with (tmp_path / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(StartupError, match=r"differs from the card's onnx\.sha256"):
        OnnxModel(load_card(tmp_path))


def test_input_mismatch(model_dir: Path, tmp_path: Path, card: dict[str, Any]) -> None:
    copy(model_dir, tmp_path, features=card["features"][:29])
    with pytest.raises(StartupError, match="the card lists 29 features"):
        OnnxModel(load_card(tmp_path))
    copy(model_dir, tmp_path, onnx={**card["onnx"], "input": {"name": "x", "dtype": "float32"}})
    with pytest.raises(StartupError, match=r"input is named 'input', the card says onnx\.input\.name 'x'"):
        OnnxModel(load_card(tmp_path))
    copy(model_dir, tmp_path, classes=[0, 1, 2])
    with pytest.raises(StartupError, match="the card lists 3 classes"):
        OnnxModel(load_card(tmp_path))
