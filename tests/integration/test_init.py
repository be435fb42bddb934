"""`python -m pipeline init` on a real clone of this repository: it renames the model and points Argo CD at
the fork, writes the data section, regenerates what derives from environments/, refuses a dirty tree, and a
second run changes nothing; bad input changes nothing either."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.deploy.render import render_all, stale_files

REPO = Path(__file__).resolve().parents[2]
FORK_URL = "https://github.com/acme/churn-model.git"


def _git(clone: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args]
    return subprocess.run(command, cwd=clone, capture_output=True, text=True, check=True).stdout


def _tree(clone: Path) -> dict[str, bytes]:
    """Every file of the clone but .git, with its bytes."""
    return {
        path.relative_to(clone).as_posix(): path.read_bytes()
        for path in sorted(clone.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(clone).parts
    }


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A clone of this repository's HEAD with a hosted-looking origin and a committed churn CSV."""
    out = tmp_path / "fork"
    subprocess.run(["git", "clone", "-q", str(REPO), str(out)], check=True, timeout=300)
    _git(out, "remote", "set-url", "origin", FORK_URL)
    rows = [f"{18 + (i * 7) % 60},{(i * 3) % 20},{i % 2}" for i in range(60)]
    (out / "data").mkdir()
    (out / "data" / "churn.csv").write_text("age,visits,churned\n" + "\n".join(rows) + "\n")
    _git(out, "add", "data/churn.csv")
    _git(out, "commit", "-qm", "data")
    return out


def _init(clone: Path, *args: str) -> int:
    return main(["init", *args, "--workdir", str(clone)])


def test_init_ships_the_forks_model_and_a_second_run_changes_nothing(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _init(clone, "--name", "churn-model", "--csv", "data/churn.csv", "--target", "churned") == 0
    out = capsys.readouterr().out
    assert "next steps:" in out and "nox -s pipeline" in out and "docs/bring-your-model.md" in out
    changed = set(_git(clone, "diff", "--name-only").split())
    assert changed == {
        "environments/base.yaml",
        "k8s/argocd/dev.yaml",
        "k8s/argocd/staging.yaml",
        "k8s/argocd/prod.yaml",
        "k8s/overlays/dev/loadtest-configmap.yaml",
        "k8s/overlays/staging/loadtest-configmap.yaml",
    }
    for env in ("dev", "staging", "prod"):
        config = load_config(env, clone / "environments")
        assert config.model.name == "churn-model"
        assert (config.data.source, str(config.data.path), config.data.target) == (
            "csv",
            "data/churn.csv",
            "churned",
        )
        assert config.deploy.argocd.repo_url == FORK_URL
        application = yaml.safe_load((clone / f"k8s/argocd/{env}.yaml").read_text())
        assert application["spec"]["source"]["repoURL"] == FORK_URL
    assert '"model_name":"churn-model"' in (clone / "k8s/overlays/dev/loadtest-configmap.yaml").read_text()
    assert "breast-cancer-classifier" not in (clone / "environments/base.yaml").read_text()
    # Comments of base.yaml survive the edit; the overlays are exactly what `render` makes of it.
    assert (
        "# registered model name, artifact folder, service name"
        in (clone / "environments/base.yaml").read_text()
    )
    assert stale_files(clone, render_all(clone, clone / "environments")) == []

    before = _tree(clone)
    assert _init(clone, "--name", "churn-model", "--csv", "data/churn.csv", "--target", "churned") == 0
    assert "nothing to change" in capsys.readouterr().out
    assert _tree(clone) == before
    _git(clone, "commit", "-qam", "init: churn-model")
    assert _init(clone, "--name", "churn-model", "--csv", "data/churn.csv", "--target", "churned") == 0
    assert _git(clone, "status", "--porcelain") == ""
    assert _tree(clone) == before


def test_init_refuses_a_dirty_tree_and_writes_nothing(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = clone / "README.md"
    readme.write_text(readme.read_text() + "\nlocal notes\n")
    before = _tree(clone)
    assert _init(clone, "--name", "churn-model") == 2
    err = capsys.readouterr().err
    assert "uncommitted changes (README.md)" in err and "commit or stash them first" in err
    assert _tree(clone) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--name", "Churn_Model"],
            "--name 'Churn_Model': a model name is lowercase letters, digits and dashes",
        ),
        (
            ["--name", "churn", "--csv", "data/missing.csv", "--target", "y"],
            "--csv data/missing.csv: no such file",
        ),
        (
            ["--name", "churn", "--csv", "data/churn.csv", "--target", "label"],
            "--target 'label': no such column in data/churn.csv (columns: age, visits, churned)",
        ),
        (["--name", "churn", "--csv", "data/churn.csv"], "--csv and --target go together"),
        (
            ["--name", "churn", "--csv", "/etc/hostname", "--target", "x"],
            "the file must be inside the repository",
        ),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    clone: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    before = _tree(clone)
    assert _init(clone, *args) == 2
    assert message in capsys.readouterr().err
    assert _tree(clone) == before


def test_without_a_hosted_origin_the_argo_url_is_left_and_the_next_steps_say_so(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _git(clone, "remote", "set-url", "origin", str(REPO))
    assert _init(clone, "--name", "churn-model") == 0
    assert "no hosted `origin` remote: set deploy.argocd.repo_url" in capsys.readouterr().out
    assert set(_git(clone, "diff", "--name-only").split()) == {
        "environments/base.yaml",
        "k8s/overlays/dev/loadtest-configmap.yaml",
        "k8s/overlays/staging/loadtest-configmap.yaml",
    }
    assert load_config("dev", clone / "environments").data.source == "sklearn"


def _init_twice(clone: Path, capsys: pytest.CaptureFixture[str], *args: str) -> None:
    """init succeeds, and a second run with the same arguments leaves every byte as the first wrote it."""
    assert _init(clone, *args) == 0
    capsys.readouterr()
    before = _tree(clone)
    assert _init(clone, *args) == 0
    assert "nothing to change" in capsys.readouterr().out
    assert _tree(clone) == before


def _stage(clone: Path, stage: str) -> None:
    """One pipeline stage run by the clone's own code; MLflow on the sqlite file in the clone."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "pipeline", stage, "--env", "dev", "--workdir", str(clone)]
    done = subprocess.run(
        command, cwd=clone, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"{stage} failed:\n{done.stdout}\n{done.stderr}"


def _model_files(clone: Path, name: str) -> set[str]:
    return {path.name for path in (clone / "artifacts" / name).glob("*/*")}


def _gate_metrics(clone: Path) -> set[str]:
    return {
        metric
        for env in ("dev", "staging", "prod")
        for metric in load_config(env, clone / "environments").gates.metrics
    }


@pytest.mark.slow
def test_a_regression_fork_trains_and_exports(clone: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        f"{18 + (i * 7) % 60},{(i * 3) % 20},{0.5 * (18 + (i * 7) % 60) + (i * 3) % 20 + 0.1 * (i % 7):.2f}"
        for i in range(60)
    ]
    (clone / "data" / "price.csv").write_text("age,visits,price\n" + "\n".join(rows) + "\n")
    _init_twice(
        clone,
        capsys,
        "--name",
        "price-model",
        "--csv",
        "data/price.csv",
        "--target",
        "price",
        "--task",
        "regression",
    )
    for env in ("dev", "staging", "prod"):
        config = load_config(env, clone / "environments")
        assert (config.model.name, config.model.task, config.data.target) == (
            "price-model",
            "regression",
            "price",
        )
    assert _gate_metrics(clone) <= {"rmse", "mae", "r2"}
    assert (clone / ".mlflow").exists() is False
    _stage(clone, "train")
    _stage(clone, "export")
    assert (clone / ".mlflow" / "mlflow.db").is_file()
    assert {"model.onnx", "model.json"} <= _model_files(clone, "price-model")
    card = json.loads(next((clone / "artifacts" / "price-model").glob("*/model.json")).read_text())
    assert card["task"] == "regression"


@pytest.mark.slow
def test_a_multiclass_fork_trains_and_exports_with_multiclass_gates(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [f"{18 + (i * 7) % 60},{(i * 3) % 20},{i % 3}" for i in range(60)]
    (clone / "data" / "tier.csv").write_text("age,visits,tier\n" + "\n".join(rows) + "\n")
    _init_twice(
        clone,
        capsys,
        "--name",
        "tier-model",
        "--csv",
        "data/tier.csv",
        "--target",
        "tier",
        "--task",
        "multiclass",
    )
    for env in ("dev", "staging", "prod"):
        assert load_config(env, clone / "environments").model.task == "multiclass"
    assert _gate_metrics(clone) == {"accuracy", "f1_macro", "log_loss"}
    _stage(clone, "train")
    _stage(clone, "export")
    card = json.loads(next((clone / "artifacts" / "tier-model").glob("*/model.json")).read_text())
    assert card["task"] == "multiclass"


@pytest.mark.slow
def test_a_parquet_fork_trains(clone: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = pa.table(
        {
            "age": [18 + (i * 7) % 60 for i in range(60)],
            "plan": [("basic", "plus", "pro")[i % 3] for i in range(60)],
            "churned": [i % 2 for i in range(60)],
        }
    )
    pq.write_table(table, clone / "data" / "churn.parquet")
    _init_twice(clone, capsys, "--name", "churn-model", "--csv", "data/churn.parquet", "--target", "churned")
    config = load_config("dev", clone / "environments")
    assert (config.data.source, str(config.data.path)) == ("parquet", "data/churn.parquet")
    assert "  source: parquet" in (clone / "environments/base.yaml").read_text()
    _stage(clone, "train")
    assert {"estimator.pkl", "train.json"} <= _model_files(clone, "churn-model")


def test_an_unknown_task_is_a_usage_error_and_changes_nothing(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(clone)
    with pytest.raises(SystemExit) as exited:
        _init(clone, "--name", "churn-model", "--task", "ordinal")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --task: invalid choice: 'ordinal'" in err and "'regression'" in err
    assert _tree(clone) == before


TASK_FIX = "; pass init --task binary|multiclass|regression to match the data"


@pytest.mark.parametrize(
    ("labels", "args", "message"),
    [
        (
            [i % 3 for i in range(60)],
            ["--task", "binary"],
            (
                "--task binary (environment dev): model.task: binary needs two classes; data.target 'label' in "
                f"{{path}} has 3{TASK_FIX}"
            ),
        ),
        (
            [("a", "b")[i % 2] for i in range(60)],
            ["--task", "regression"],
            (
                "--task regression (environment dev): model.task: regression needs a numeric target; "
                f"data.target 'label' in {{path}} is not numeric{TASK_FIX}"
            ),
        ),
        (
            [i % 4 for i in range(60)],
            [],
            (
                "no --task given (environment dev): model.task: data.target 'label' in {path} holds 4 distinct "
                "whole numbers"
            ),
        ),
        (
            [i % 3 if i else 3 for i in range(60)],
            ["--task", "multiclass"],
            (
                "--task multiclass (environment dev): data.test_size: data.target 'label' in {path} cannot be "
                "split into training and evaluation rows (The least populated class"
            ),
        ),
    ],
)
def test_a_target_the_task_does_not_fit_is_refused_by_init(
    clone: Path, capsys: pytest.CaptureFixture[str], labels: list[object], args: list[str], message: str
) -> None:
    rows = [f"{18 + (i * 7) % 60},{label}" for i, label in enumerate(labels)]
    (clone / "data" / "labels.csv").write_text("age,label\n" + "\n".join(rows) + "\n")
    before = _tree(clone)
    assert _init(clone, "--name", "churn-model", "--csv", "data/labels.csv", "--target", "label", *args) == 2
    err = capsys.readouterr().err
    assert message.format(path=clone / "data" / "labels.csv") in err
    assert err.count(TASK_FIX) == ("model.task" in message)
    assert _tree(clone) == before


def test_a_data_file_that_changes_after_init_is_refused_by_train(
    clone: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """init checked the target against --task; when the file changes afterwards, train checks it again."""
    args = ("--name", "churn-model", "--csv", "data/churn.csv", "--target", "churned", "--task", "binary")
    assert _init(clone, *args) == 0
    rows = [f"{18 + (i * 7) % 60},{(i * 3) % 20},{i % 3}" for i in range(60)]
    (clone / "data" / "churn.csv").write_text("age,visits,churned\n" + "\n".join(rows) + "\n")
    capsys.readouterr()
    assert main(["train", "--env", "dev", "--workdir", str(clone)]) == 2
    err = capsys.readouterr().err
    path = (clone / "data" / "churn.csv").resolve()
    assert f"model.task: binary needs two classes; data.target 'churned' in {path} has 3" in err
    assert not (clone / "artifacts").exists()
