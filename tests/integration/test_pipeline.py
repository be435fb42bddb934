"""The pipeline end to end on a real MLflow registry (sqlite in a temp workspace), read back with MLflow's client."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from pipeline.adapters.registry import alias_history
from pipeline.artifacts import ModelDir
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.stages.export import predict_onnx
from tests._pipeline_runs import FAST

REPO = Path(__file__).parents[2]
MODEL = "breast-cancer-classifier"
# A deliberately weak model: three stumps.
WORSE = ("--set", "model.params.n_estimators=3", "--set", "model.params.max_depth=1")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


# These tests are about the model stages: `run`'s load test and rehearsal get their shortest profile.
def run(workspace: Path, *args: str) -> int:
    extra = FAST if args[0] == "run" else ()
    return main([*args, *extra, "--workdir", str(workspace)])


def registry(workspace: Path) -> MlflowClient:
    uri = f"sqlite:///{workspace / '.mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def version_dirs(workspace: Path) -> list[Path]:
    return sorted((workspace / "artifacts" / MODEL).iterdir())


@pytest.mark.slow  # whole pipeline runs
def test_full_pipeline_then_a_worse_candidate_is_stopped(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(workspace, "run", "--env", "dev") == 0
    out = capsys.readouterr().out
    assert "first deploy to dev" in out

    client = registry(workspace)
    served = client.get_model_version_by_alias(MODEL, "dev")
    assert str(served.version) == "1"
    tags = served.tags
    assert tags["gate"] == tags["gate.dev"] == "pass"
    assert len(tags["data_sha256"]) == 64
    assert len(tags["onnx_sha256"]) == 64
    assert tags["git_sha"]
    [directory] = version_dirs(workspace)
    card = json.loads((directory / "model.json").read_text())
    assert card["onnx"]["sha256"] == tags["onnx_sha256"]
    assert card["lineage"]["data_sha256"] == tags["data_sha256"]
    assert served.run_id is not None
    run_data = client.get_run(served.run_id).data
    assert run_data.metrics["roc_auc"] > 0.95
    assert run_data.tags["data_sha256"] == tags["data_sha256"]
    history = alias_history(client, MODEL, "dev")
    assert [(e["version"], e["previous"], e["action"]) for e in history] == [("1", None, "promote")]
    # Promotion consumed the candidate alias.
    assert "dev-candidate" not in client.get_registered_model(MODEL).aliases

    # The same inputs again: everything is reused, compared with itself, and nothing moves.
    assert run(workspace, "run", "--env", "dev") == 0
    out = capsys.readouterr().out
    assert "reused" in out
    assert "the candidate is this same model" in out
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1

    # A worse candidate fails against the champion: named checks, exit 1, aliases untouched.
    assert run(workspace, "run", "--env", "dev", *WORSE) == 1
    captured = capsys.readouterr()
    # The printed delta is the one the two recorded metrics give (their values move with scikit-learn).
    [candidate_dir] = [d for d in version_dirs(workspace) if d != directory]
    recorded = json.loads(ModelDir(candidate_dir).gate("dev").read_text())
    delta = recorded["candidate"]["roc_auc"] - recorded["champion"]["roc_auc"]
    bound = load_config("dev", workspace / "environments").gates.metrics["roc_auc"].vs_champion
    assert bound is not None and bound.min_delta is not None
    assert delta < bound.min_delta
    printed = re.search(r"roc_auc\s+delta vs champion\s+(\S+)\s+>=\s+(\S+)\s+FAIL", captured.out)
    assert printed, captured.out
    assert float(printed[1]) == pytest.approx(delta, rel=1e-3)  # the table prints 4 significant digits
    assert float(printed[2]) == bound.min_delta
    failure = f"gate failed for dev: roc_auc delta vs champion {delta:.4g} < min {bound.min_delta:g}: "
    assert failure in captured.err
    assert "later stages were not run" in captured.err
    model = client.get_registered_model(MODEL)
    assert model.aliases == {"dev": 1}
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1

    # The failed gate also blocks register on its own.
    assert run(workspace, "register", "--env", "dev", *WORSE) == 1
    assert "nothing was registered" in capsys.readouterr().err
    assert client.get_registered_model(MODEL).aliases == {"dev": 1}


@pytest.mark.slow  # whole pipeline runs
def test_better_candidate_is_promoted_and_rollback_returns(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weaker = ("--set", "model.params.n_estimators=30", "--set", "model.params.max_depth=2")
    assert run(workspace, "run", "--env", "dev", *weaker) == 0
    assert run(workspace, "run", "--env", "dev") == 0
    client = registry(workspace)
    assert str(client.get_model_version_by_alias(MODEL, "dev").version) == "2"
    assert "delta vs champion" in capsys.readouterr().out

    assert run(workspace, "rollback", "--env", "dev") == 0
    assert str(client.get_model_version_by_alias(MODEL, "dev").version) == "1"
    assert run(workspace, "rollback", "--env", "dev") == 1
    assert "nothing earlier to roll back to" in capsys.readouterr().err
    assert str(client.get_model_version_by_alias(MODEL, "dev").version) == "1"

    # The version rolled back from is quarantined: promoting it again takes a person's override.
    assert run(workspace, "promote", "--env", "dev", "--to-version", "2") == 1
    assert "promotion quarantine: rejected: REJECTED in dev" in capsys.readouterr().err
    assert str(client.get_model_version_by_alias(MODEL, "dev").version) == "1"
    # A human promotes a given version; one without a gate for staging is refused.
    override = ("--unquarantine", "--reason", "the rollback was a drill")
    assert run(workspace, "promote", "--env", "dev", "--to-version", "2", *override) == 0
    assert str(client.get_model_version_by_alias(MODEL, "dev").version) == "2"
    assert run(workspace, "promote", "--env", "staging", "--to-version", "2") == 1
    assert "gate.staging=(none)" in capsys.readouterr().err
    assert "staging" not in client.get_registered_model(MODEL).aliases


@pytest.mark.slow  # whole pipeline runs
def test_warn_mode_lets_a_failing_candidate_through_visibly(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(workspace, "run", "--env", "dev", *WORSE, "--set", "gates.mode=warn") == 0
    out = capsys.readouterr().out
    assert "WARNING: gate mode is 'warn' for dev" in out
    assert "gate WARN" in out
    assert registry(workspace).get_model_version_by_alias(MODEL, "dev").tags["gate.dev"] == "warn"


def test_onnx_matches_the_original_model_within_the_bound(workspace: Path) -> None:
    assert run(workspace, "train", "--env", "dev") == 0
    assert run(workspace, "export", "--env", "dev") == 0
    [directory] = version_dirs(workspace)
    evaluation = json.loads((directory / "eval.json").read_text())
    rows = np.asarray(evaluation["rows"])
    expected = ModelDir(directory).read_estimator().predict_proba(rows)
    actual = predict_onnx(directory / "model.onnx", rows)
    assert np.array_equal(expected.argmax(axis=1), actual.argmax(axis=1))
    assert np.max(np.abs(expected - actual)) <= 1e-4
    card = json.loads((directory / "model.json").read_text())
    assert card["parity"]["max_abs_diff"] <= 1e-4
    assert [f["name"] for f in card["features"]] == evaluation["features"]
    assert card["classes"] == [0, 1]
    # The numeric default keeps one float32 input of every feature (the service's fast path).
    assert (card["card_version"], card["task"]) == (2, "binary")
    assert card["onnx"]["inputs"] == [
        {"name": "input", "dtype": "float32", "features": evaluation["features"]}
    ]


def test_impossible_parity_bound_writes_no_model(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(workspace, "train", "--env", "dev") == 0
    assert run(workspace, "export", "--env", "dev", "--set", "export.parity.max_abs_diff=1e-12") == 1
    assert "ONNX parity failed" in capsys.readouterr().err
    # The parity bound is part of the version key, so look at every folder.
    assert not list((workspace / "artifacts").rglob("model.onnx"))


def test_stages_out_of_order_say_what_to_run(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(workspace, "export", "--env", "dev") == 1
    assert "run `python -m pipeline train --env dev` first" in capsys.readouterr().err
    assert run(workspace, "promote", "--env", "dev") == 1
    assert "no version holds alias 'dev-candidate'" in capsys.readouterr().err


@pytest.mark.slow  # whole pipeline runs
def test_bring_your_own_csv(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")
    lines = ["a,b,c,label", *(f"{r[0]},{r[1]},{r[2]},{t}" for r, t in zip(x, y, strict=True))]
    (workspace / "data.csv").write_text("\n".join(lines) + "\n")
    csv = ("--set", "data.source=csv", "--set", "data.path=data.csv", "--set", "data.target=label")
    assert (
        run(
            workspace,
            "run",
            "--env",
            "dev",
            *csv,
            "--set",
            "model.estimator=logistic_regression",
            "--set",
            "model.params=!replace {C: 0.5}",
        )
        == 0
    )
    [directory] = version_dirs(workspace)
    card = json.loads((directory / "model.json").read_text())
    assert card["classes"] == ["no", "yes"]
    assert [f["name"] for f in card["features"]] == ["a", "b", "c"]

    assert run(workspace, "train", "--env", "dev", *csv, "--set", "data.target=outcome") == 2
    assert "data.target: column 'outcome' not in" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        ({"dev.yaml": "extends: base\ngates: {mode: [\n"}, ["--env", "dev"], "dev.yaml:3:"),
        ({"dev.yaml": "extends: base\ngates: {mood: warn}\n"}, ["--env", "dev"], "gates.mood: unknown key"),
        (
            {"dev.yaml": "extends: base\ndata: {seed: abc}\n"},
            ["--env", "dev"],
            "data.seed: expected an integer, got 'abc'",
        ),
        (
            {"base.yaml": "gates: {metrics: {accuracy: {min: 0.5}}}\n"},
            ["--env", "dev"],
            "model: required key is missing",
        ),
        ({}, ["--env", "no-such-env"], "unknown environment 'no-such-env'; known environments: "),
        (
            {},
            ["--env", "dev", "--set", "model.params.no_such_param=1"],
            "model.params: GradientBoostingClassifier rejects",
        ),
    ],
)
def test_broken_config_exits_2_and_writes_nothing(
    workspace: Path, files: dict[str, str], args: list[str], message: str
) -> None:
    for name, text in files.items():
        (workspace / "environments" / name).write_text(text)
    before = sorted(p.name for p in workspace.iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", *args, "--workdir", str(workspace)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in workspace.iterdir()) == before
