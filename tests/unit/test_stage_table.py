"""The stage table is the one registration point: the CLI, the runner, `run` and nox all follow it."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.stage import Stage, option
from pipeline.stages import RUN_ORDER, STAGES

NOXFILE = Path(__file__).parents[2] / "noxfile.py"


def _nox_stage_names() -> list[str]:
    tree = ast.parse(NOXFILE.read_text("utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "STAGES" for target in node.targets
        ):
            assert isinstance(node.value, ast.Dict)
            return [ast.literal_eval(key) for key in node.value.keys if key is not None]
    raise AssertionError("noxfile.py has no STAGES dict")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_stage_has_a_nox_session_and_a_command_and_nothing_else_does() -> None:
    names = [stage.name for stage in STAGES]
    assert len(set(names)) == len(names)
    assert sorted(_nox_stage_names()) == sorted(names)
    commands = _subparsers(cli._parser())
    assert set(names) <= set(commands)


@pytest.mark.parametrize("stage", STAGES, ids=lambda stage: stage.name)
def test_each_row_runs_a_function_and_its_options_reach_the_command_line(stage: Stage) -> None:
    assert callable(stage.function())
    parser = _subparsers(cli._parser())[stage.name]
    given = {action.dest for action in parser._actions}
    assert {item.dest() for item in stage.options} <= given
    assert ("fresh" in given) == stage.fresh


def test_run_is_the_in_run_rows_in_table_order_and_needs_no_option() -> None:
    assert RUN_ORDER == (
        "train", "export", "gate", "register", "image", "loadtest", "shadow", "rollout", "promote"
    )  # fmt: skip
    for stage in STAGES:
        if stage.in_run:
            assert not any(item.settings.get("required") for item in stage.options), stage.name


def test_defaults_are_what_the_command_line_gives_when_nothing_is_passed() -> None:
    stage = Stage(
        "example",
        "an example",
        run="pipeline.stages.train:run",
        options=(
            option("--port", type=int, default=8000),
            option("--gitops", action="store_true"),
            option("--to-version"),
        ),
        fresh=True,
    )
    parser = argparse.ArgumentParser()
    parser.add_argument("--fresh", action="store_true")
    stage.add_options(parser)
    assert stage.defaults() == parser.parse_args([])
    assert stage.defaults(to_version="3").to_version == "3"


def test_exclusive_options_refuse_both(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli._parser().parse_args(["drift", "--input", "rows.csv", "--url", "http://127.0.0.1:9000"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_an_option_that_sets_a_config_key_overrides_it_like_set() -> None:
    args = cli._parser().parse_args(["rollout", "--strategy", "blue-green"])
    assert cli._option_overrides(args) == ["rollout.strategy=blue-green"]
    assert cli._option_overrides(cli._parser().parse_args(["rollout"])) == []
