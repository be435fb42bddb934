import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import ConfigError, deep_merge, diff, json_schema, known_environments, load_config

REPO = Path(__file__).parents[2]
ENVIRONMENTS = REPO / "environments"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "environments"
    folder.mkdir()
    for path in ENVIRONMENTS.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    return folder


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def error_of(env: str, folder: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(env, folder, overrides)
    return str(caught.value)


def test_every_shipped_environment_loads_and_names_itself() -> None:
    assert known_environments(ENVIRONMENTS) == ["dev", "prod", "staging"]
    for env in known_environments(ENVIRONMENTS):
        config = load_config(env, ENVIRONMENTS)
        assert config.name == env
        assert config.alias == env
        assert config.candidate_alias == f"{env}-candidate"


def test_environment_names_only_what_differs() -> None:
    dev, prod = load_config("dev", ENVIRONMENTS), load_config("prod", ENVIRONMENTS)
    assert dev.gates.metrics["roc_auc"].min == 0.95
    assert prod.gates.metrics["roc_auc"].min == 0.97
    # Merged key by key: prod changes min_delta but keeps base's log_loss gate.
    assert prod.gates.metrics["log_loss"].max == dev.gates.metrics["log_loss"].max
    assert prod.model == dev.model


def test_deep_merge_merges_mappings_and_replaces_lists() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert deep_merge(base, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}, "d": 1}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_a_new_environment_is_a_new_file(config_dir: Path) -> None:
    write(config_dir, "qa", "extends: staging\ndata:\n  seed: 7\n")
    qa = load_config("qa", config_dir)
    assert qa.data.seed == 7
    assert qa.gates.metrics["roc_auc"].min == 0.97


def test_replace_tag_starts_a_mapping_afresh(config_dir: Path) -> None:
    write(
        config_dir,
        "dev",
        "extends: base\nmodel:\n  estimator: logistic_regression\n  params: !replace {C: 0.5}\n",
    )
    assert load_config("dev", config_dir).model.params == {"C": 0.5}
    merged = load_config("dev", ENVIRONMENTS, ("model.params={C: 0.5}",))
    assert merged.model.params["n_estimators"] == 100


def test_overrides_are_parsed_as_yaml() -> None:
    config = load_config("dev", ENVIRONMENTS, ("gates.mode=warn", "model.params.n_estimators=7"))
    assert config.gates.mode == "warn"
    assert config.model.params["n_estimators"] == 7


def test_wrong_type_names_file_key_found_and_expected(config_dir: Path) -> None:
    write(config_dir, "prod", "extends: base\ngates:\n  metrics:\n    roc_auc:\n      min: high\n")
    assert error_of("prod", config_dir) == (
        f"{config_dir / 'prod.yaml'}: gates.metrics.roc_auc.min: expected a number, got 'high'"
    )


def test_unknown_key_lists_the_allowed_ones(config_dir: Path) -> None:
    write(config_dir, "dev", "extends: base\nmodel:\n  estimatr: random_forest\n")
    message = error_of("dev", config_dir)
    assert message.startswith(f"{config_dir / 'dev.yaml'}: model.estimatr: unknown key")
    assert "allowed keys here: estimator, name, params" in message


def test_missing_required_key_points_at_the_environment(config_dir: Path) -> None:
    write(config_dir, "base", "gates:\n  metrics:\n    accuracy: {min: 0.5}\n")
    assert "model: required key is missing" in error_of("dev", config_dir)


def test_yaml_syntax_error_gives_the_line(config_dir: Path) -> None:
    write(config_dir, "staging", "extends: base\ngates:\n  metrics: [unclosed\n  mode: warn\n")
    message = error_of("staging", config_dir)
    assert message.startswith(f"{config_dir / 'staging.yaml'}:4:")
    assert "YAML syntax error" in message


def test_unknown_environment_lists_the_known_ones() -> None:
    assert error_of("qa", ENVIRONMENTS) == "unknown environment 'qa'; known environments: dev, prod, staging"


def test_extends_must_name_an_existing_file(config_dir: Path) -> None:
    write(config_dir, "dev", "extends: bsae\n")
    assert "extends: expected the name of a file" in error_of("dev", config_dir)


def test_extends_cycle_is_reported(config_dir: Path) -> None:
    write(config_dir, "a", "extends: b\n")
    write(config_dir, "b", "extends: a\n")
    assert "cycle" in error_of("a", config_dir)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("gates.metrics.f1={}", "gates.metrics.f1: a metric gate needs 'min', 'max' or 'vs_champion'"),
        ("gates.metrics.f1.vs_champion={}", "vs_champion needs 'min_delta' or 'min_relative_delta'"),
        ("gates.metrics.auc={min: 0.5}", "gates.metrics.auc"),
        ("data.test_size=1.5", "data.test_size: Input should be less than 1, got 1.5"),
        ("data.source=csv", "source 'csv' needs both 'path'"),
        ("model.name=Not_Valid", "model.name"),
        ("gates.mode=maybe", "gates.mode"),
    ],
)
def test_invalid_values_are_rejected_with_their_key(override: str, expected: str) -> None:
    message = error_of("dev", ENVIRONMENTS, (override,))
    assert message.startswith("--set: ")
    assert expected in message


def test_malformed_override_explains_the_syntax() -> None:
    assert "expected KEY.PATH=VALUE" in error_of("dev", ENVIRONMENTS, ("gates.mode",))


def test_diff_lists_changed_keys() -> None:
    changes = diff(load_config("dev", ENVIRONMENTS), load_config("staging", ENVIRONMENTS))
    assert ("gates.metrics.roc_auc.min", 0.95, 0.97) in changes
    assert ("rollout.strategy", "canary", "blue-green") in changes
    keys = [key for key, _, _ in changes]
    assert keys == sorted(keys)
    assert not any(
        key.startswith(("model.", "data.", "export.")) for key in keys
    )  # the same model everywhere


def test_committed_schema_is_current() -> None:
    committed = json.loads((ENVIRONMENTS / "schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), "run `python -m pipeline schema`"
    assert "extends" in committed["properties"]


def test_config_command_prints_resolved_config_and_diff(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--env", "prod", "--config-dir", str(ENVIRONMENTS)]) == 0
    assert "min: 0.97" in capsys.readouterr().out
    assert main(["config", "--env", "dev", "--diff", "prod", "--config-dir", str(ENVIRONMENTS)]) == 0
    out = capsys.readouterr().out
    assert "gates.metrics.accuracy.min" in out
    assert "0.93" in out


def test_config_errors_exit_2(capsys: pytest.CaptureFixture[str], config_dir: Path) -> None:
    write(config_dir, "dev", "extends: base\nmodel: [\n")
    assert (
        main(["train", "--env", "dev", "--config-dir", str(config_dir), "--workdir", str(config_dir.parent)])
        == 2
    )
    assert "YAML syntax error" in capsys.readouterr().err
    assert not (config_dir.parent / "artifacts").exists()
    assert not (config_dir.parent / ".mlflow").exists()


def test_schema_check_detects_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "schema.json").write_text("{}\n")
    assert main(["schema", "--check", "--config-dir", str(tmp_path)]) == 1
    assert "is stale" in capsys.readouterr().err
    assert main(["schema", "--config-dir", str(tmp_path)]) == 0
    assert main(["schema", "--check", "--config-dir", str(tmp_path)]) == 0
