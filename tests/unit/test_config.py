import json
from pathlib import Path
from typing import Any

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
    assert "dev" in known_environments(ENVIRONMENTS)  # the default of --env
    for env in known_environments(ENVIRONMENTS):
        config = load_config(env, ENVIRONMENTS)
        assert config.name == env
        assert config.alias == env
        assert config.candidate_alias == f"{env}-candidate"


def test_known_environments_are_the_yaml_files_but_base(tmp_path: Path) -> None:
    for name in ("base.yaml", "qa.yaml", "canary.yaml", "notes.txt"):
        (tmp_path / name).write_text("{}\n")
    assert known_environments(tmp_path) == ["canary", "qa"]


def test_environment_names_only_what_differs(config_dir: Path) -> None:
    dev = load_config("dev", config_dir)
    metric = next(iter(dev.gates.metrics))
    write(config_dir, "strict", f"extends: dev\ngates:\n  metrics:\n    {metric}:\n      min: 0.991\n")
    strict = load_config("strict", config_dir)
    assert strict.gates.metrics[metric].min == 0.991
    # Merged key by key: the rest of that gate, the other gates and the other sections come from dev.
    assert strict.gates.metrics[metric].model_dump(exclude={"min"}) == dev.gates.metrics[metric].model_dump(
        exclude={"min"}
    )
    assert {k: v for k, v in strict.gates.metrics.items() if k != metric} == {
        k: v for k, v in dev.gates.metrics.items() if k != metric
    }
    assert strict.model == dev.model
    assert strict.rollout == dev.rollout


def test_deep_merge_merges_mappings_and_replaces_lists() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert deep_merge(base, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}, "d": 1}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_a_new_environment_is_a_new_file(config_dir: Path) -> None:
    write(config_dir, "qa", "extends: dev\ndata:\n  seed: 7\n")
    qa, dev = load_config("qa", config_dir), load_config("dev", config_dir)
    assert qa.data.seed == 7 != dev.data.seed
    assert qa.gates == dev.gates


def test_replace_tag_starts_a_mapping_afresh(config_dir: Path) -> None:
    write(
        config_dir,
        "dev",
        "extends: base\nmodel:\n  estimator: logistic_regression\n  params: !replace {C: 0.5}\n",
    )
    assert load_config("dev", config_dir).model.params == {"C": 0.5}
    merged = load_config("dev", ENVIRONMENTS, ("model.params={C: 0.5}",))  # without the tag: merged
    assert merged.model.params == {**load_config("dev", ENVIRONMENTS).model.params, "C": 0.5}


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
    assert "allowed keys here: estimator, feature_defaults, name, params" in message


def test_missing_required_key_points_at_the_environment(config_dir: Path) -> None:
    write(config_dir, "base", "gates:\n  metrics:\n    accuracy: {min: 0.5}\n")
    assert "model: required key is missing" in error_of("dev", config_dir)


def test_yaml_syntax_error_gives_the_line(config_dir: Path) -> None:
    write(config_dir, "staging", "extends: base\ngates:\n  metrics: [unclosed\n  mode: warn\n")
    message = error_of("staging", config_dir)
    assert message.startswith(f"{config_dir / 'staging.yaml'}:4:")
    assert "YAML syntax error" in message


def test_unknown_environment_lists_the_known_ones(tmp_path: Path) -> None:
    for name in ("base", "dev", "prod"):
        write(tmp_path, name, "{}\n")
    assert error_of("qa", tmp_path) == "unknown environment 'qa'; known environments: dev, prod"


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


def _other(config_dir: Path) -> tuple[str, Any, Any]:
    """Write `other.yaml`: dev with another gates.mode; return that key with dev's value and the other's."""
    mode = load_config("dev", config_dir).gates.mode
    other = "warn" if mode == "enforce" else "enforce"
    write(config_dir, "other", f"extends: dev\ndata:\n  seed: 4242\ngates:\n  mode: {other}\n")
    return "gates.mode", mode, other


def test_diff_lists_changed_keys(config_dir: Path) -> None:
    changed = _other(config_dir)
    dev = load_config("dev", config_dir)
    changes = diff(dev, load_config("other", config_dir))
    assert changes == [("data.seed", dev.data.seed, 4242), changed]  # sorted by key, nothing else


def test_committed_schema_is_current() -> None:
    committed = json.loads((ENVIRONMENTS / "schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), "run `python -m pipeline schema`"
    assert "extends" in committed["properties"]


def test_config_command_prints_resolved_config_and_diff(
    capsys: pytest.CaptureFixture[str], config_dir: Path
) -> None:
    key, _, other = _other(config_dir)
    assert main(["config", "--env", "other", "--config-dir", str(config_dir)]) == 0
    assert f"mode: {other}" in capsys.readouterr().out
    assert main(["config", "--env", "dev", "--diff", "other", "--config-dir", str(config_dir)]) == 0
    out = capsys.readouterr().out
    assert key in out
    assert "4242" in out


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
    args = ["--config-dir", str(tmp_path), "--workdir", str(tmp_path)]  # writes nothing into the repository
    (tmp_path / "schema.json").write_text("{}\n")
    assert main(["schema", "--check", *args]) == 1
    assert f"{tmp_path / 'schema.json'} is stale" in capsys.readouterr().err
    assert main(["schema", *args]) == 0
    assert main(["schema", "--check", *args]) == 0


DUPLICATE = "YAML would keep only the last one; merge the two into one"


def test_a_second_block_of_a_section_is_an_error_not_a_replacement(config_dir: Path) -> None:
    path = write(
        config_dir, "dev", "extends: base\ndeploy:\n  namespace: a\nlog: x\ndeploy:\n  namespace: b\n"
    )
    assert error_of("dev", config_dir) == f"{path}:5:1: duplicate key 'deploy' (first at line 2): {DUPLICATE}"


@pytest.mark.parametrize(
    ("text", "where", "key"),
    [
        (
            "gates:\n  metrics:\n    roc_auc:\n      min: 0.9\n      min: 0.8\n",
            "6:7",
            "gates.metrics.roc_auc.min",
        ),
        ("model:\n  params: !replace\n    C: 0.5\n    C: 1.0\n", "5:5", "model.params.C"),
        (
            "rollout:\n  steps:\n    - {set_weight: 10, set_weight: 20}\n",
            "4:24",
            "rollout.steps.0.set_weight",
        ),
    ],
    ids=["nested", "replace", "in-a-list"],
)
def test_nested_duplicate_keys_are_named_by_their_dotted_path(
    config_dir: Path, text: str, where: str, key: str
) -> None:
    path = write(config_dir, "staging", f"extends: base\n{text}")
    assert error_of("staging", config_dir).startswith(
        f"{path}:{where}: duplicate key {key!r} (first at line "
    )


def test_a_duplicate_in_base_is_named_in_base(config_dir: Path) -> None:
    base = config_dir / "base.yaml"
    base.write_text(base.read_text() + "\ndata:\n  seed: 1\n")
    assert error_of("dev", config_dir).startswith(f"{base}:")
    assert "duplicate key 'data'" in error_of("dev", config_dir)


def test_merge_keys_may_override_what_they_merge(config_dir: Path) -> None:
    write(config_dir, "qa", "extends: dev\n.shared: &seeded {seed: 3}\ndata:\n  <<: *seeded\n  seed: 5\n")
    message = error_of("qa", config_dir)  # `.shared` is no config key: it fails, but not as a duplicate
    assert "duplicate" not in message
    assert ".shared: unknown key" in message


def test_a_duplicate_key_in_an_override_is_an_error() -> None:
    message = error_of("dev", ENVIRONMENTS, ("model.params={C: 1, C: 2}",))
    assert message == f"--set 'model.params={{C: 1, C: 2}}': duplicate key 'C' (first at line 1): {DUPLICATE}"


def test_a_gate_on_a_metric_the_task_lacks_names_the_file_and_key(config_dir: Path) -> None:
    path = write(
        config_dir,
        "dev",
        "extends: base\nmodel:\n  task: regression\ngates:\n  metrics: !replace\n    rmse: {max: 3}\n    roc_auc: {min: 0.9}\n",
    )
    message = error_of("dev", config_dir)
    assert message.startswith(
        f"{path}: gates.metrics.roc_auc: a regression model has no roc_auc; gate on rmse, mae, r2"
    )
    assert "rmse:" not in message
    # Inherited gates are reported at the file that set them.
    write(config_dir, "dev", "extends: base\nmodel:\n  task: multiclass\n")
    inherited = error_of("dev", config_dir)
    assert (
        f"{config_dir / 'base.yaml'}: gates.metrics.roc_auc: a multiclass model has no roc_auc" in inherited
    )


def test_a_trainer_path_must_be_module_colon_function(config_dir: Path) -> None:
    write(config_dir, "dev", "extends: base\nmodel:\n  trainer: my_model.train\n")
    assert "model.trainer: String should match pattern" in error_of("dev", config_dir)


def test_extends_is_relative_to_the_file_that_names_it(tmp_path: Path) -> None:
    workspace = tmp_path / "examples" / "one" / "environments"
    workspace.mkdir(parents=True)
    shared = tmp_path / "environments"
    shared.mkdir()
    for path in ENVIRONMENTS.glob("*.yaml"):
        (shared / path.name).write_text(path.read_text())
    write(workspace, "dev", "extends: ../../../environments/dev\nmodel:\n  name: other-model\n")
    config = load_config("dev", workspace)
    assert config.model.name == "other-model"
    assert config.deploy.namespace == load_config("dev", shared).deploy.namespace  # from the shared dev.yaml


def test_the_examples_load() -> None:
    for example in sorted((REPO / "examples").iterdir()):
        if (example / "environments").is_dir():
            assert load_config("dev", example / "environments").name == "dev"
