"""A stage's step outputs (pipeline/adapters/github_actions.py): what CD reads instead of the artifact files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.adapters.github_actions import write_step_outputs

DIGEST = "127.0.0.1:5000/o/m@sha256:" + "0" * 64


def test_outputs_are_appended_to_the_steps_file(tmp_path: Path) -> None:
    output = tmp_path / "output"
    output.write_text("revision=abc\n", encoding="utf-8")  # an earlier command of the same step
    written = write_step_outputs({"image": "o/m:abc-1", "digest": DIGEST}, {"GITHUB_OUTPUT": str(output)})
    assert written == output
    assert output.read_text(encoding="utf-8") == f"revision=abc\nimage=o/m:abc-1\ndigest={DIGEST}\n"


def test_outside_a_workflow_step_nothing_is_written(tmp_path: Path) -> None:
    assert write_step_outputs({"image": "o/m:abc-1"}, {}) is None
    assert write_step_outputs({"image": "o/m:abc-1"}, {"GITHUB_OUTPUT": ""}) is None


def test_a_value_over_two_lines_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    output = tmp_path / "output"
    with pytest.raises(ValueError, match="step output digest: a value must be one line"):
        write_step_outputs({"image": "o/m", "digest": "a\ndigest=forged"}, {"GITHUB_OUTPUT": str(output)})
    assert not output.exists()
