"""`python -m pipeline init` on a real clone of this repository: it renames the model and points Argo CD at
the fork, writes the data section, regenerates what derives from environments/, refuses a dirty tree, and a
second run changes nothing; bad input changes nothing either."""

import subprocess
from pathlib import Path

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
