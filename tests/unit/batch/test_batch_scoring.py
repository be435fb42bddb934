"""A batch scores and rejects rows exactly as the service answers them: same verdict per row, same reason,
same outputs; CSV text is typed per the card; the Spark UDF's function gives the embedded engine's rows."""

import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from model_service.model.drift import DriftCounters
from pipeline.batch import scoring, spark
from pipeline.batch.scoring import PREDICTION, PROBABILITY_PREFIX, REASON, SOURCE_ROW, Scorer
from pipeline.ml import profile

KEYS = pa.schema([("id", pa.int64())])
MIXED_TYPES = {"age": pa.float64(), "rooms": pa.int64(), "garden": pa.bool_(), "city": pa.string()}
AGES = st.one_of(
    st.floats(0, 100, allow_nan=False),
    st.sampled_from([None, math.nan, math.inf, -math.inf, 1e39, 0.0]),
)
ROWS = st.lists(
    st.tuples(
        AGES,
        st.one_of(st.none(), st.integers(-5, 10)),
        st.one_of(st.none(), st.booleans()),
        st.sampled_from([None, "", "Lyon", "Nice", "Paris", "Berlin"]),
    ),
    min_size=1,
    max_size=25,
)


def _batch(rows: list[tuple[Any, ...]], types: dict[str, pa.DataType]) -> pa.RecordBatch:
    columns = {name: pa.array([row[j] for row in rows], kind) for j, (name, kind) in enumerate(types.items())}
    columns["id"] = pa.array(range(len(rows)), pa.int64())
    return pa.RecordBatch.from_pydict(columns)


def _score(scorer: Scorer, batch: pa.RecordBatch) -> tuple[pa.Table, pa.Table]:
    n = batch.num_rows
    chunk = scorer.score(batch, pa.array(["part.parquet"] * n), np.arange(n, dtype=np.int64))
    assert chunk.totals.rows == n and chunk.totals.rejected == chunk.rejects.num_rows
    return pa.Table.from_batches([chunk.scores]), pa.Table.from_batches([chunk.rejects])


@dataclass(frozen=True)
class Answer:
    reason: str | None
    prediction: Any = None
    probabilities: list[float] | None = None


def _ask(client: TestClient, row: dict[str, Any]) -> Answer:
    """The service's verdict on one row sent as JSON; a non-finite number cannot be sent at all."""
    for name, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            return Answer(f"{name}: expected a finite number, got {value} (a missing value is null)")
    response = client.post("/v1/predict", json={"instances": [row]})
    if response.status_code == 422:
        return Answer(response.json()["error"]["message"].removeprefix("instances[0]."))
    assert response.status_code == 200, response.text
    body = response.json()
    return Answer(None, body["predictions"][0], body.get("probabilities", [None])[0])


def _assert_agrees(scorer: Scorer, client: TestClient, batch: pa.RecordBatch) -> None:
    scores, rejects = _score(scorer, batch)
    names = scorer.card.feature_names
    rows = [
        dict(zip(names, values, strict=True))
        for values in zip(*(batch.column(n).to_pylist() for n in names), strict=True)
    ]
    answers = [_ask(client, row) for row in rows]
    assert rejects[SOURCE_ROW].to_pylist() == [i for i, a in enumerate(answers) if a.reason is not None]
    expected = [a.reason for a in answers if a.reason is not None]
    if scorer.card.numeric_only and not scorer.card.is_regression:
        # The service's fast parser words the same verdicts by position: `instances[0][0] ('name'): ...`.
        expected = [
            reason.replace(f"instances[0][{j}] ('{name}')", name)
            for reason in expected
            for j, name in _first_named(reason, names)
        ]
    assert rejects[REASON].to_pylist() == expected
    valid = [a for a in answers if a.reason is None]
    assert scores[SOURCE_ROW].to_pylist() == [i for i, a in enumerate(answers) if a.reason is None]
    assert scores[PREDICTION].to_pylist() == pytest.approx([a.prediction for a in valid])
    if not scorer.card.is_regression:
        columns = [f"{PROBABILITY_PREFIX}{c}" for c in scorer.card.classes]
        written = (
            np.column_stack([scores[c].to_numpy() for c in columns]) if valid else np.zeros((0, len(columns)))
        )
        sent = np.asarray([a.probabilities for a in valid], dtype=np.float32).reshape(written.shape)
        # Many rows may take another SIMD path than one (a linear model's GEMM): float rounding differs.
        np.testing.assert_allclose(written.astype(np.float32), sent, rtol=0, atol=1e-6)


def _first_named(reason: str, names: Sequence[str]) -> list[tuple[int, str]]:
    """The feature the fast parser's message names by position, as (index, name)."""
    return [next((j, name) for j, name in enumerate(names) if f"[{j}] ('{name}')" in reason)]


@settings(max_examples=30, deadline=None)
@given(rows=ROWS)
def test_rows_are_judged_and_scored_as_the_service_does(
    rows: list[tuple[Any, ...]], mixed_strict_model_dir: Path, service: Callable[[Path], TestClient]
) -> None:
    scorer = Scorer(mixed_strict_model_dir, registry_version="7", key_schema=KEYS, text_input=False)
    _assert_agrees(scorer, service(mixed_strict_model_dir), _batch(rows, MIXED_TYPES))


def test_a_column_of_another_type_rejects_its_rows_with_the_services_reason(
    mixed_strict_model_dir: Path, service: Callable[[Path], TestClient]
) -> None:
    scorer = Scorer(mixed_strict_model_dir, registry_version="7", key_schema=KEYS, text_input=False)
    rows = [("41.5", 2, True, "Lyon"), ("30", 1, False, None)]
    batch = _batch(rows, {**MIXED_TYPES, "age": pa.string()})
    _assert_agrees(scorer, service(mixed_strict_model_dir), batch)
    _, rejects = _score(scorer, batch)
    assert rejects[REASON].to_pylist() == ["age: expected a number or null, got string"] * 2


def test_csv_text_is_typed_per_the_card_and_a_bad_cell_is_its_rows_reject(
    mixed_strict_model_dir: Path,
) -> None:
    scorer = Scorer(
        mixed_strict_model_dir,
        registry_version="7",
        key_schema=pa.schema([("id", pa.string())]),
        text_input=True,
    )
    text = {
        "age": ["41.5", "abc", None, "30", "30"],
        "rooms": ["2", "2", "3", "2.5", "1"],
        "garden": ["true", "0", "1", "false", "yes"],
        "city": ["Lyon", "Paris", None, "Nice", "Nice"],
        "id": ["a", "b", "c", "d", "e"],
    }
    batch = pa.RecordBatch.from_pydict({name: pa.array(values, pa.string()) for name, values in text.items()})
    scores, rejects = _score(scorer, batch)
    assert scores[SOURCE_ROW].to_pylist() == [0, 2]
    assert scores["id"].to_pylist() == ["a", "c"]
    assert rejects[REASON].to_pylist() == [
        "age: expected a number, got 'abc'",
        "rooms: expected an integer, got '2.5'",
        "garden: expected true or false, got 'yes'",
    ]
    assert json.loads(rejects["values"][0].as_py()) == {
        "age": "abc",
        "rooms": "2",
        "garden": "0",
        "city": "Paris",
    }
    assert scorer.client_rows(batch)[2] == {"age": None, "rooms": 3, "garden": True, "city": None}


@pytest.mark.parametrize("model", ["regression_model_dir", "iris_model_dir"])
def test_a_regression_and_string_classes_score_as_the_service_answers(
    model: str, request: pytest.FixtureRequest, service: Callable[[Path], TestClient]
) -> None:
    model_dir: Path = request.getfixturevalue(model)
    scorer = Scorer(model_dir, registry_version="1", key_schema=KEYS, text_input=False)
    eval_rows = json.loads((model_dir / "eval.json").read_text())["rows"]
    names = scorer.card.feature_names
    rows = [tuple(row) for row in eval_rows] + [tuple([None] * len(names)), tuple([1e39] * len(names))]
    batch = _batch(rows, dict.fromkeys(names, pa.float64()))
    _assert_agrees(scorer, service(model_dir), batch)


class _Shipped:
    """What a broadcast hands a worker: its `value`."""

    def __init__(self, value: Any) -> None:
        self.value = value


def test_the_spark_function_scores_each_batch_and_ends_with_the_partitions_totals(
    mixed_strict_model_dir: Path,
) -> None:
    scorer = Scorer(mixed_strict_model_dir, registry_version="7", key_schema=KEYS, text_input=False)
    files = (
        (mixed_strict_model_dir / "model.json").read_bytes(),
        scorer.card.onnx_file,
        scorer.card.onnx_path.read_bytes(),
    )
    job = spark.Job(
        _Shipped(files), scorer.card.sha256, "7", KEYS, text_input=False, absent=(), row_index=False
    )
    rows = [(30.0, 1, True, "Lyon"), (None, 2, False, "Berlin"), (50.0, None, True, "Paris")]
    first, second = _batch(rows, MIXED_TYPES), _batch(rows[:1], MIXED_TYPES)
    batches = [
        b.append_column(spark.FILE_COLUMN, pa.array([name] * b.num_rows))
        for b, name in ((first, "a.csv"), (second, "a.csv"))
    ]
    out = pa.Table.from_batches(list(spark.score_partition(iter(batches), job)))
    kinds = out[spark.KIND].to_pylist()
    assert kinds.count(spark.TOTALS) == 1 and kinds[-1] == spark.TOTALS
    scored = out.filter(pa.compute.equal(out[spark.KIND], spark.SCORE))
    assert scored[SOURCE_ROW].to_pylist() == [0, 3]  # the second batch counts on in the same part
    totals = out.filter(pa.compute.equal(out[spark.KIND], spark.TOTALS)).to_pylist()[0]
    assert (totals["_rows"], totals["_rejected"]) == (4, 2)
    assert sum(totals["_counts"]) > 0


def test_rows_are_counted_per_part_in_order() -> None:
    counted = {"a.csv": 2}
    rows = spark._count_rows(pa.array(["a.csv", "a.csv", "b.csv", "a.csv"]), counted)
    assert rows.tolist() == [2, 3, 0, 4]
    assert counted == {"a.csv": 5, "b.csv": 1}


def test_a_feature_the_input_lacks_takes_the_cards_default_as_the_service_fills_it(
    mixed_strict_model_dir: Path, tmp_path: Path, service: Callable[[Path], TestClient]
) -> None:
    model_dir = tmp_path / "with-default"
    shutil.copytree(mixed_strict_model_dir, model_dir)
    card = json.loads((model_dir / "model.json").read_text())
    next(f for f in card["features"] if f["name"] == "rooms")["default"] = 3
    (model_dir / "model.json").write_text(json.dumps(card))
    scorer = Scorer(model_dir, registry_version="7", key_schema=KEYS, text_input=False, absent=("rooms",))
    assert "rooms" not in scorer.columns
    rows = [(30.0, True, "Lyon"), (None, False, "Paris"), (61.5, True, None)]
    types = {name: kind for name, kind in MIXED_TYPES.items() if name != "rooms"}
    scores, rejects = _score(scorer, _batch(rows, types))
    assert rejects.num_rows == 0
    client = service(model_dir)
    sent = [dict(zip(types, row, strict=True)) for row in rows]  # no "rooms": the service fills it in
    answers = client.post("/v1/predict", json={"instances": sent}).json()
    assert scores[PREDICTION].to_pylist() == answers["predictions"]
    written = np.column_stack([scores[f"{PROBABILITY_PREFIX}{c}"].to_numpy() for c in (0, 1)])
    np.testing.assert_allclose(written, answers["probabilities"], rtol=0, atol=1e-6)


def test_the_reference_counts_are_the_services_drift_counters(mixed_strict_model_dir: Path) -> None:
    scorer = Scorer(mixed_strict_model_dir, registry_version="7", key_schema=KEYS, text_input=False)
    rows = [
        (30.0, 1, True, "Lyon"),
        (None, 2, False, None),
        (80.0, 9, True, "Nice"),
        (45.5, 4, False, "Paris"),
    ]
    batch = _batch(rows * 40, MIXED_TYPES)
    chunk = scorer.score(batch, pa.array(["p"] * batch.num_rows), np.arange(batch.num_rows, dtype=np.int64))
    counters = DriftCounters(scorer.card, 10_000, CollectorRegistry())
    names = scorer.card.feature_names
    columns = [
        [
            ("" if v is None else v) if name == "city" else (np.nan if v is None else v)
            for v in batch.column(name).to_pylist()
        ]
        for name in names
    ]
    probabilities = np.column_stack([chunk.scores[f"{PROBABILITY_PREFIX}{c}"].to_numpy() for c in (0, 1)])
    counters.observe(counters.encode(columns), probabilities)
    _, served = counters.window()
    assert chunk.totals.counts is not None
    assert chunk.totals.counts.tolist() == served[: len(chunk.totals.counts)].tolist()


@settings(max_examples=200, deadline=None)
@given(
    edges=st.lists(st.floats(-1e6, 1e6, width=32), min_size=2, max_size=12, unique=True).map(sorted),
    values=st.lists(st.floats(-2e6, 2e6, allow_nan=False), max_size=60),
    on_edges=st.integers(0, 5),
)
def test_bin_counts_are_the_profiles(edges: list[float], values: list[float], on_edges: int) -> None:
    numbers = np.asarray(values + edges[:on_edges], dtype=np.float64)  # values equal to an edge too
    assert scoring.bin_counts(edges, numbers).tolist() == profile.bin_counts(edges, numbers).tolist()
