"""init's edits of the environment files, as text: comments kept, applied twice = applied once."""

from pathlib import Path

import yaml

from pipeline.init import InitRequest, base_split, edited_base, edited_environment

ENVIRONMENTS = Path(__file__).parents[2] / "environments"
BASE = (ENVIRONMENTS / "base.yaml").read_text()
PROD = (ENVIRONMENTS / "prod.yaml").read_text()


def test_a_regression_fork_gets_its_task_data_and_gates_in_base_yaml() -> None:
    request = InitRequest("house-prices", Path("data/houses.parquet"), "price", "regression")
    text = edited_base(BASE, request, 0.2, 7, "git@github.com:acme/houses.git")
    data = yaml.safe_load(text)
    assert data["model"]["name"] == "house-prices"
    assert data["model"]["task"] == "regression"
    assert data["data"] == {
        "source": "parquet",
        "path": "data/houses.parquet",
        "target": "price",
        "test_size": 0.2,
        "seed": 7,
    }
    assert data["gates"] == {
        "mode": "enforce",
        "metrics": {"r2": {"min": 0.0, "vs_champion": {"min_delta": -0.01}}},
    }
    assert data["deploy"]["argocd"] == {"repo_url": "git@github.com:acme/houses.git"}
    assert "  task: regression                    # binary | multiclass | regression" in text.splitlines()
    # Everything else is untouched, comments included.
    assert data["rollout"] == yaml.safe_load(BASE)["rollout"]
    assert "# the plan both the local rehearsal and Argo Rollouts run" in text
    assert edited_base(text, request, 0.2, 7, "git@github.com:acme/houses.git") == text


def test_a_multiclass_fork_drops_the_binary_gates_of_other_environments() -> None:
    request = InitRequest("iris-model", task="multiclass")
    text = edited_environment(PROD, request)
    assert "gates" not in yaml.safe_load(text)
    assert yaml.safe_load(text)["rollout"] == yaml.safe_load(PROD)["rollout"]
    assert edited_environment(text, request) == text
    assert edited_environment(PROD, InitRequest("iris-model", task="binary")) == PROD
    assert edited_environment(PROD, InitRequest("iris-model")) == PROD


def test_an_environment_naming_its_own_model_is_renamed_too() -> None:
    own = "extends: base\n\nmodel:\n  name: breast-cancer-classifier-prod  # pinned\n  params: {C: 1}\n"
    renamed = edited_environment(own, InitRequest("churn")).splitlines()
    assert renamed[3] == "  name: churn".ljust(38) + "# pinned"  # the comment column of base.yaml
    assert renamed[:3] + renamed[4:] == own.splitlines()[:3] + own.splitlines()[4:]


def test_the_split_kept_is_base_yamls_own() -> None:
    edited = BASE.replace("  test_size: 0.25 ", "  test_size: 0.3  ").replace("  seed: 42", "  seed: 9")
    split = base_split(edited)
    assert (split.test_size, split.seed) == (0.3, 9)
