"""`--model-dir` (or MODEL_SERVICE_FALLBACK_DIR) naming a file: a one-line refusal and exit 2, no traceback."""

import os
from pathlib import Path

import pytest

from model_service.__main__ import EXIT_REFUSED, main


@pytest.fixture(autouse=True)
def _no_service_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("MODEL_SERVICE_"):
            monkeypatch.delenv(name)


def test_a_model_dir_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    card = tmp_path / "model.json"
    card.write_text("{}")
    assert main(["--model-dir", str(card)]) == EXIT_REFUSED
    assert capsys.readouterr().err.splitlines() == [
        (
            f"model_service: refusing to start: MODEL_SERVICE_MODEL_DIR (--model-dir): {card} is a file; "
            "name the folder that holds model.json and the ONNX file"
        )
    ]


def test_a_fallback_dir_that_is_a_file_is_refused(
    plain_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\0")
    monkeypatch.setenv("MODEL_SERVICE_FALLBACK_DIR", str(onnx))
    assert main(["--model-dir", str(plain_model_dir)]) == EXIT_REFUSED
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"model_service: refusing to start: MODEL_SERVICE_FALLBACK_DIR: {onnx} is a file")
