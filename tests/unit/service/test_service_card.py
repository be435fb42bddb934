"""The card and the model are checked before serving; each problem is one line naming file and key."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from model_service.model.runtime import OnnxModel, load_card
from model_service.protocol.errors import StartupError


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
    with pytest.raises(StartupError, match=r"onnx.sha256: expected 64 lowercase hex digits"):
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


def _v2(mixed_model_dir: Path, tmp_path: Path, change: Any) -> Path:
    card = json.loads((mixed_model_dir / "model.json").read_text())
    change(card)
    for name in ("model.onnx", "model.json"):
        shutil.copy(mixed_model_dir / name, tmp_path / name)
    (tmp_path / "model.json").write_text(json.dumps(card))
    return tmp_path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["features"][1].update(type="integer"),
            r"features\[1\] \('rooms'\)\.type: expected one of 'float', 'int', 'bool', 'string'; got",
        ),
        (
            lambda c: c["features"][0].update(categories=["a"]),
            r"features\[0\] \('age'\)\.categories: only string",
        ),
        (
            lambda c: c["features"][3].update(categories=["b", "a"]),
            r"\('city'\)\.categories: expected unique strings",
        ),
        (
            lambda c: c["features"][3].update(unknown_category="drop"),
            r"\('city'\)\.unknown_category: expected one of 'ignore', 'error'; got \"drop\"",
        ),
        (
            lambda c: c["onnx"]["inputs"][1].update(dtype="float64", features=["rooms", "age"]),
            r"feature 'age' is in more",
        ),
        (lambda c: c["onnx"]["inputs"].pop(2), r"onnx\.inputs: feature 'garden' is in no input"),
        (
            lambda c: c["onnx"]["inputs"][0].update(dtype="int64"),
            r"onnx\.inputs\[0\] \('age'\)\.dtype: int64 cannot",
        ),
        (
            lambda c: c["onnx"]["inputs"][3].update(dtype="float32"),
            r"inputs\[3\] \('city'\)\.dtype: float32 cannot",
        ),
        (
            lambda c: c["onnx"]["inputs"][3].update(features=["town"]),
            r"'town' is not one of the card's features",
        ),
        (lambda c: c.update(task="regression"), r"classes: a regression has no classes"),
        (lambda c: c.update(classes=[0, 1, 2]), r"classes: a binary model lists exactly 2 classes"),
        (
            lambda c: c["onnx"].update(outputs={"label": "label"}),
            r"onnx\.outputs\.probabilities: expected a non-empty string, got nothing \(the key is missing\)",
        ),
        (lambda c: c.update(card_version=3), r"card_version: expected 1 or 2, got 3"),
    ],
)
def test_v2_card_refusals_name_the_key(
    mixed_model_dir: Path, tmp_path: Path, change: Any, message: str
) -> None:
    with pytest.raises(StartupError, match=message) as caught:
        load_card(_v2(mixed_model_dir, tmp_path, change))
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "model.json"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["onnx"]["inputs"][3].update(name="town"),
            r"the model's inputs are \['age', 'city', 'garden'",
        ),
        (
            lambda c: c["onnx"]["inputs"][0].update(dtype="float64"),
            r"input 'age' type is tensor\(float\), the card",
        ),
        (
            lambda c: c["onnx"]["outputs"].update(probabilities="p"),
            r"no output 'p' \(card onnx\.outputs\.probabilities\)",
        ),
    ],
)
def test_v2_signature_checked_against_the_model(
    mixed_model_dir: Path, tmp_path: Path, change: Any, message: str
) -> None:
    with pytest.raises(StartupError, match=message):
        OnnxModel(load_card(_v2(mixed_model_dir, tmp_path, change)))


def test_v2_cards_of_each_task_load_and_warm_up(
    mixed_model_dir: Path, regression_model_dir: Path, iris_model_dir: Path
) -> None:
    for folder, task, numeric_only in [
        (mixed_model_dir, "binary", False),
        (regression_model_dir, "regression", True),
        (iris_model_dir, "multiclass", True),
    ]:
        card = load_card(folder)
        assert (card.task, card.numeric_only) == (task, numeric_only)
        OnnxModel(card).warm_up()
