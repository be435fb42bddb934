"""A gate bound must be a number that compares: `.nan` compares false both ways, so `value < .nan` never
fails and the gate would pass anything; `.inf` and `-.inf` are bounds nobody means."""

from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import ConfigError, load_config

ENVIRONMENTS = Path(__file__).parents[2] / "environments"


@pytest.mark.parametrize(
    "override",
    [
        "gates.metrics.roc_auc.min=.nan",
        "gates.metrics.roc_auc.max=.inf",
        "gates.metrics.roc_auc.vs_champion.min_delta=-.inf",
        "gates.metrics.roc_auc.vs_champion.min_relative_delta=.NaN",
    ],
)
def test_a_non_finite_gate_bound_is_refused_naming_its_key(override: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("dev", ENVIRONMENTS, (override,))
    key = override.partition("=")[0]
    assert f"--set: {key}: Input should be a finite number" in str(caught.value)


def test_a_nan_bound_in_an_environment_file_fails_the_config_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "environments"
    folder.mkdir()
    for path in ENVIRONMENTS.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    (folder / "nan.yaml").write_text("extends: dev\ngates:\n  metrics:\n    roc_auc:\n      min: .nan\n")
    assert main(["config", "--env", "nan", "--config-dir", str(folder)]) == 2
    error = capsys.readouterr().err
    assert f"{folder / 'nan.yaml'}: gates.metrics.roc_auc.min: Input should be a finite number" in error
