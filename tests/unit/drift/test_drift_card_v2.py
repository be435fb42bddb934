"""Drift on a card v2 (hand-written, tests/_card_v2.py): categorical share PSI with its chi-square beside
it, the nullable numeric's missing bin, strings and nulls read from files, and regression's score shift."""

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from model_service.contract.card import FeatureProfile
from pipeline.artifacts import ModelDir
from pipeline.config import load_config
from pipeline.errors import StageError
from pipeline.ml.drift_checks import SCORE, compare
from pipeline.ml.onnx_model import predicted_scores
from pipeline.ml.profile import profile_counts
from pipeline.stage import Check
from pipeline.stages.drift import file_sample, read_rows
from tests._card_v2 import EVAL_ROWS, REFERENCE_FEATURES, predicted, write_export

REPO = Path(__file__).parents[3]
AGE, N, CITY = (
    FeatureProfile(
        p["name"],
        p["kind"],
        tuple(p["frequencies"]),
        tuple(p.get("edges", ())),
        tuple(p.get("categories", ())),
    )
    for p in cast("list[dict[str, Any]]", REFERENCE_FEATURES)
)


def _config() -> Any:
    return load_config("dev", REPO / "environments")


def _jsonl(path: Path, rows: list[list[Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(dict(zip(["age", "n", "city"], row, strict=True))) + "\n" for row in rows)
    )
    return path


def _reference_like(count: int, seed: int) -> list[list[Any]]:
    """Rows drawn from the reference profile's shares (the `edges`' bins, the missing bin, the categories)."""
    rng = np.random.default_rng(seed)
    ages = [None, 30.0, 50.0, 70.0]
    age_bins = rng.choice([1, 2, 3, 0], size=count, p=[0.3, 0.3, 0.3, 0.1])
    cities = rng.choice(["Lyon", "Paris", "Nice"], size=count, p=[0.5, 0.4, 0.1])
    ns = rng.choice([2, 7], size=count)
    return [[ages[a], int(n), str(c)] for a, n, c in zip(age_bins, ns, cities, strict=True)]


def _by(checks: list[Check]) -> dict[tuple[str, str], Check]:
    return {(c.scope, c.metric): c for c in checks}


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    return ModelDir(write_export(tmp_path_factory.mktemp("v2") / "binary"))


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> ModelDir:
    return ModelDir(write_export(tmp_path_factory.mktemp("v2") / "regression", "regression"))


def test_categorical_bins_are_the_categories_then_other_for_unknown_and_missing() -> None:
    counts = profile_counts(CITY, ["Paris", "Lyon", "Paris", "Marseille", None, ""])
    assert counts.tolist() == [1, 2, 3]


def test_nullable_numeric_counts_missing_values_in_the_extra_bin() -> None:
    assert profile_counts(AGE, [25.0, None, 45.0, 79.0, 90.0, None, 10.0]).tolist() == [2, 1, 2, 2]
    assert profile_counts(N, [1, 6, 6]).tolist() == [1, 2]


def test_the_card_reads_task_features_and_one_input_per_column(binary: ModelDir) -> None:
    card = binary.read_card()
    assert card.task == "binary"
    assert [(f.name, f.type, f.nullable) for f in card.features] == [
        ("age", "float", True),
        ("n", "int", False),
        ("city", "string", True),
    ]
    assert card.features[2].categories == ("Lyon", "Paris")
    assert [(i.name, i.v2_datatype, i.features) for i in card.inputs] == [
        ("age", "FP32", ("age",)),
        ("n", "FP32", ("n",)),
        ("city", "BYTES", ("city",)),
    ]


def test_scores_of_rows_with_strings_and_nulls_are_the_models(binary: ModelDir, regression: ModelDir) -> None:
    for model, task in ((binary, "binary"), (regression, "regression")):
        got = predicted_scores(model.onnx, model.read_card(), EVAL_ROWS)
        assert got == pytest.approx([predicted(row, task) for row in EVAL_ROWS], abs=1e-5)


def test_files_keep_strings_and_nulls_and_refuse_what_the_card_does_not_accept(
    tmp_path: Path, binary: ModelDir
) -> None:
    features = binary.read_card().features
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("id,city,n,age\n1,Paris,3,\n2,,4,41.5\n")
    assert read_rows(csv_file, features) == [[None, 3.0, "Paris"], [41.5, 4.0, None]]
    assert read_rows(_jsonl(tmp_path / "rows.jsonl", EVAL_ROWS), features) == EVAL_ROWS
    with pytest.raises(StageError, match=r"rows\.csv:2: feature 'age': expected a number, got 'old'"):
        csv_file.write_text("age,n,city\nold,3,Paris\n")
        read_rows(csv_file, features)
    with pytest.raises(
        StageError, match=r"bad\.jsonl:1: feature 'n' is missing, and the card says it is not nullable"
    ):
        read_rows(_jsonl(tmp_path / "bad.jsonl", [[30.0, None, "Lyon"]]), features)
    with pytest.raises(StageError, match=r"num\.jsonl:1: feature 'city': expected a string, got 3"):
        read_rows(_jsonl(tmp_path / "num.jsonl", [[30.0, 1, 3]]), features)


def test_a_sample_like_the_reference_flags_nothing(tmp_path: Path, binary: ModelDir) -> None:
    card = binary.read_card()
    sample = file_sample(_jsonl(tmp_path / "same.jsonl", _reference_like(2000, seed=1)), card, binary)
    checks = _by(compare(_config(), card, sample, None))
    assert {c.result for key, c in checks.items() if key[0] != SCORE and key[1] != "chi2"} == {"pass"}
    assert set(checks) >= {
        ("city", "psi"),
        ("city", "chi2"),
        ("age", "psi"),
        ("age", "ks_binned"),
        (SCORE, "psi"),
    }
    assert ("city", "ks_binned") not in checks  # KS has no meaning over categories
    chi2 = checks["city", "chi2"]
    assert chi2.result == "info" and chi2.note.startswith("p ") and chi2.note.endswith("dof 2")
    assert float(chi2.note.split()[1].rstrip(",")) > 0.001


def test_a_category_mix_shift_and_a_surge_of_missing_values_are_flagged(
    tmp_path: Path, binary: ModelDir
) -> None:
    card = binary.read_card()
    rows = _reference_like(2000, seed=2)
    for i, row in enumerate(rows):
        row[2] = "Marseille" if i % 2 else row[2]  # half the cities unknown to the model
        row[0] = None if i % 3 == 0 else row[0]  # a third of the ages missing (10 % in training)
    checks = _by(
        compare(_config(), card, file_sample(_jsonl(tmp_path / "shift.jsonl", rows), card, binary), None)
    )
    assert checks["city", "psi"].result == "fail"
    assert (checks["city", "chi2"].value or 0) > 500 and checks["city", "chi2"].note.startswith("p 0")
    assert checks["age", "psi"].result == "fail"
    # The value distribution of the ages that are present did not move: KS is not fooled by the missing bin.
    assert checks["age", "ks_binned"].result == "pass"
    assert checks["n", "psi"].result == "pass"


def test_regression_scores_are_predicted_values_in_the_reference_quantile_bins(
    tmp_path: Path, regression: ModelDir
) -> None:
    card = regression.read_card()
    rows = _reference_like(400, seed=3)
    sample = file_sample(_jsonl(tmp_path / "rows.jsonl", rows), card, regression)
    assert sample.score_counts is not None
    values = [predicted(row, "regression") for row in rows]
    expected = np.bincount(
        np.searchsorted([-1.0, 0.0, 1.0], np.asarray(values, dtype=np.float32), side="right"), minlength=4
    )
    assert sample.score_counts.tolist() == expected.tolist()
    shifted = [[row[0], 9, "Paris"] for row in rows]  # every prediction moves up
    before = _by(compare(_config(), card, sample, None))[SCORE, "psi"].value
    after = _by(
        compare(_config(), card, file_sample(_jsonl(tmp_path / "up.jsonl", shifted), card, regression), None)
    )
    assert after[SCORE, "psi"].result == "fail" and (after[SCORE, "psi"].value or 0) > (before or 0)


def test_the_drift_stage_on_a_card_v2_export_writes_its_report_and_chart(
    tmp_path: Path, binary: ModelDir
) -> None:
    import io  # noqa: PLC0415

    from pipeline.console import Reporter  # noqa: PLC0415
    from pipeline.stages.drift import drift  # noqa: PLC0415
    from pipeline.workspace import Workspace  # noqa: PLC0415

    config = load_config("dev", REPO / "environments", ["drift.min_rows=5"])
    workspace = Workspace(tmp_path / "workspace")
    rows = _reference_like(300, seed=4)
    for row in rows[::2]:
        row[2] = "Marseille"
    out = io.StringIO()
    shifted = drift(
        config, workspace, Reporter(out, out), model=binary, input_path=_jsonl(tmp_path / "in.jsonl", rows)
    )
    assert shifted.status == "fail" and "city" in shifted.flagged
    report = json.loads((shifted.report_dir / "drift.json").read_text())
    assert {(c["scope"], c["metric"], c["result"]) for c in report["checks"]} >= {
        ("city", "psi", "fail"),
        ("city", "chi2", "info"),
    }
    assert (shifted.report_dir / "drift.png").is_file()
    # No --input: the model's own evaluation rows (strings and nulls) go through the same path.
    own = drift(config, workspace, Reporter(out, out), model=binary)
    assert own.rows == len(EVAL_ROWS)
    assert (own.report_dir / "eval-rows.jsonl").read_text().splitlines()[
        2
    ] == '{"age": null, "n": 8, "city": "Paris"}'
