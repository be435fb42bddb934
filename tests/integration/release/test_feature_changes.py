"""A fork changes its features, end to end on a temporary clone of this repository with a registry where
version 1 serves dev: it adds a feature with a default and one without, renames one and reorders the
columns. Each release gets its compatibility level, the gate's comparison that is still possible, the plan
`rollout.breaking` names, a fallback the service can start with, and messages that say what to do."""

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from pipeline.adapters.service_process import running_service
from pipeline.artifacts import current_model_dir
from pipeline.cli import main
from pipeline.config import Config, load_config
from pipeline.console import Reporter
from pipeline.release.gating import release_rollout
from pipeline.rollout.plan import plan
from pipeline.runner import Runner
from pipeline.workspace import Workspace

pytestmark = pytest.mark.slow  # a trained version per variant

REPO = Path(__file__).resolve().parents[3]
DATA = "data/train.csv"
ROWS = 400
FORK = (
    "--set", f"data={{source: csv, path: {DATA}, target: y}}",
    "--set", "model.estimator=logistic_regression",
    "--set", "model.params=!replace {}",
    "--set", "gates.metrics={roc_auc: {min: 0.9, vs_champion: {min_delta: -0.05}}}",
    "--set", "service.fallback={source: previous}",
)  # fmt: skip
"""What the fork's environments say: its CSV, a quick estimator, a gate its data passes."""


def columns() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(34)
    x = {name: rng.normal(size=ROWS).round(4) for name in ("x1", "x2", "x3", "x4")}
    x["y"] = (x["x1"] + 0.5 * x["x2"] - x["x3"] + 0.3 * x["x4"] > 0).astype(int)
    return x


def write_csv(root: Path, names: list[str], renamed: dict[str, str] | None = None) -> None:
    data = columns()
    header = [(renamed or {}).get(name, name) for name in names]
    lines = [",".join([*header, "y"])]
    lines += [",".join([*(str(data[name][i]) for name in names), str(data["y"][i])]) for i in range(ROWS)]
    (root / DATA).parent.mkdir(exist_ok=True)
    (root / DATA).write_text("\n".join(lines) + "\n")


def stages(root: Path, *names: str, extra: tuple[str, ...] = ()) -> list[int]:
    return [main([name, "--env", "dev", "--workdir", str(root), *FORK, *extra]) for name in names]


@pytest.fixture(scope="module")
def served_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of this repository whose dev runs version 1, trained on x1, x2, x3."""
    root = tmp_path_factory.mktemp("fork") / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(root)], check=True, timeout=300)
    shutil.copytree(
        REPO / "environments", root / "environments", dirs_exist_ok=True
    )  # this checkout's config
    write_csv(root, ["x1", "x2", "x3"])
    assert stages(root, "train", "export", "gate", "register", "promote") == [0] * 5
    return root


@pytest.fixture
def fork(served_v1: Path, tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    shutil.copytree(served_v1, root, ignore=shutil.ignore_patterns("reports"))
    return root


def config(root: Path, *extra: str) -> Config:
    given = [*FORK, *extra]
    overrides = [value for flag, value in zip(given[::2], given[1::2], strict=True) if flag == "--set"]
    return load_config("dev", root / "environments", overrides)


def release(root: Path, *extra: str) -> dict[str, Any]:
    card = json.loads(current_model_dir(config(root, *extra), Workspace(root)).card.read_text())
    return dict(card["release"])


def gate_record(root: Path, *extra: str) -> dict[str, Any]:
    model = current_model_dir(config(root, *extra), Workspace(root))
    return dict(json.loads(model.gate("dev").read_text()))


def fallback(root: Path, *extra: str) -> str | None:
    runner = Runner(config(root, *extra), Workspace(root), Reporter(), whole_run=False)
    found = runner.fallback_model(runner.model)
    return None if found is None else found.version


def test_a_feature_appended_with_a_default_is_additive_and_old_clients_keep_working(
    fork: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(fork, ["x1", "x2", "x3", "x4"])
    extra = ("--set", "model.feature_defaults={x4: 0.0}")
    assert stages(fork, "train", "export", "gate", "register", extra=extra) == [0] * 4
    out = capsys.readouterr().out
    record = release(fork, *extra)
    assert record["semver"] == "1.1.0" and record["level"] == "additive"
    assert record["environments"]["dev"]["level"] == "additive"
    assert "feature 'x4' added with default 0.0" in out
    gate = gate_record(fork, *extra)
    assert gate["status"] == "pass" and gate["compatibility"]["level"] == "additive"
    assert "on the same rows cut to its own features" in gate["note"]
    assert release_rollout(config(fork, *extra), breaking=False).rollout.strategy == "canary"
    model = current_model_dir(config(fork, *extra), Workspace(fork))
    with running_service(config(fork, *extra), model.path, fork / "service.log") as service:
        old_records = httpx.post(f"{service.url}/v1/predict", json=[{"x1": 1.0, "x2": 0.5, "x3": -1.0}])
        old_lists = httpx.post(f"{service.url}/v1/predict", json={"instances": [[1.0, 0.5, -1.0]]})
        new = httpx.post(f"{service.url}/v1/predict", json={"instances": [[1.0, 0.5, -1.0, 0.0]]})
    assert (old_records.status_code, old_lists.status_code, new.status_code) == (200, 200, 200)
    assert old_records.json()["predictions"] == new.json()["predictions"] == old_lists.json()["predictions"]


def test_a_feature_added_without_a_default_is_breaking_and_goes_blue_green(
    fork: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(fork, ["x1", "x2", "x3", "x4"])
    assert stages(fork, "train", "export", "gate") == [0] * 3
    out = capsys.readouterr()
    record = release(fork)
    assert record["semver"] == "2.0.0" and record["environments"]["dev"]["level"] == "breaking"
    assert "declare one in model.feature_defaults (x4: VALUE)" in out.err + out.out
    assert "BREAKING release for dev" in out.err + out.out
    gate = gate_record(fork)
    assert gate["status"] == "pass"  # compared with version 1 on the same rows: it takes x1..x3 of them
    assert "cut to its own features" in gate["note"]
    assert release_rollout(config(fork), breaking=True).rollout.strategy == "blue-green"
    assert plan(release_rollout(config(fork), breaking=True)).strategy == "blue-green"

    refuse = ("--set", "rollout.breaking=refuse")
    assert stages(fork, "gate", extra=refuse) == [1]
    out = capsys.readouterr()
    assert "release it under a new model.name" in out.err + out.out

    assert stages(fork, "gate", "register", "promote") == [0, 0, 0]
    assert fallback(fork) is None  # version 1 cannot answer its requests: served without, not refused


def test_a_renamed_feature_is_breaking_and_compared_by_the_champions_own_metrics(
    fork: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(fork, ["x1", "x2", "x3"], renamed={"x2": "x2b"})
    assert stages(fork, "train", "export", "gate") == [0] * 3
    out = capsys.readouterr()
    assert "feature 'x2' renamed to 'x2b'" in out.err + out.out
    assert "keep the name 'x2' (rename the column back)" in out.err + out.out
    gate = gate_record(fork)
    assert gate["compatibility"]["level"] == "breaking"
    assert "by its card's metrics on its own evaluation rows" in gate["note"]
    assert gate["champion"] is not None  # the comparison that is still possible


def test_reordered_columns_are_breaking_and_compared_on_the_same_rows(
    fork: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(fork, ["x3", "x1", "x2"])
    assert stages(fork, "train", "export", "gate") == [0] * 3
    out = capsys.readouterr()
    assert "columns reordered" in out.err + out.out
    assert "keep the column order of v1 (reorder the data's columns back)" in out.err + out.out
    gate = gate_record(fork)
    assert gate["compatibility"]["level"] == "breaking"
    assert "cut to its own features" in gate["note"]
    assert gate["champion"]["roc_auc"] == pytest.approx(gate["candidate"]["roc_auc"], abs=0.02)
