"""The client SDK against the service process serving card version 2 exports (tests/_card_v2.py: a float
nullable, an int and a string nullable feature, one ONNX input each): rows with strings and nulls as lists
and objects, /v2 as JSON and binary tensor data, a classifier and a regression, answers checked against
what the graph computes; a bad row refused by the client before anything is sent, and by the service too."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from model_client import AsyncClient, Client, Prediction, Row, RowError
from tests._card_v2 import EVAL_ROWS, FEATURES, NAME, predicted, write_export

if TYPE_CHECKING:
    from tests.integration.service.conftest import Server

NAMES = [str(feature["name"]) for feature in FEATURES]


@pytest.fixture
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The card v2 export for `request.param`: "binary" (also when not parametrized), "regression", or
    "binary-strict" (city's unknown_category "error": the service refuses a city outside Lyon and Paris)."""
    kind = getattr(request, "param", "binary")
    task = "regression" if kind == "regression" else "binary"
    out = write_export(tmp_path_factory.mktemp(kind), task)
    if kind == "binary-strict":
        card = json.loads((out / "model.json").read_text())
        card["features"][2]["unknown_category"] = "error"
        (out / "model.json").write_text(json.dumps(card))
    return out


def expected(task: str) -> list[float]:
    return [predicted(row, task) for row in EVAL_ROWS]


@pytest.mark.parametrize("model_dir", ["binary"], indirect=True)
def test_mixed_rows_as_lists_objects_and_v2_json_give_what_the_model_computes(
    start_server: Callable[..., Server],
) -> None:
    server = start_server()
    objects: list[Row] = [dict(zip(NAMES, row, strict=True)) for row in EVAL_ROWS]
    with Client(server.url) as client:
        as_lists = client.predict(EVAL_ROWS)
        answers = (as_lists, client.predict(objects), client.infer(objects, binary=False))
    for answer in answers:
        assert answer.probabilities is not None
        assert [p[1] for p in answer.probabilities] == pytest.approx(expected("binary"), rel=1e-5)
        assert answer.predictions == [int(p >= 0.5) for p in expected("binary")]
        assert answer.model_name == NAME


@pytest.mark.parametrize("model_dir", ["regression"], indirect=True)
def test_a_regression_answers_values_on_v1_and_v2_json(start_server: Callable[..., Server]) -> None:
    server = start_server()

    async def calls() -> list[Prediction]:
        async with AsyncClient(server.url) as client:
            return [await client.predict(EVAL_ROWS), await client.infer(EVAL_ROWS, binary=False)]

    with Client(server.url) as client:
        answers = [client.predict(EVAL_ROWS), client.infer(EVAL_ROWS, binary=False), *asyncio.run(calls())]
    for answer in answers:
        assert answer.probabilities is None
        assert answer.predictions == pytest.approx(expected("regression"), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("model_dir", ["binary", "regression"], indirect=True)
def test_v2_binary_tensor_data_with_bytes_inputs(
    start_server: Callable[..., Server], model_dir: Path
) -> None:
    """Rows without a null go wholly as binary (FP32 and BYTES); with nulls, those inputs go as JSON."""
    task = json.loads((model_dir / "model.json").read_text())["task"]
    server = start_server()
    with Client(server.url) as client:
        answer = client.infer(EVAL_ROWS)
    scores = [p[1] for p in answer.probabilities] if answer.probabilities is not None else answer.predictions
    assert scores == pytest.approx(expected(task), rel=1e-5, abs=1e-5)
    complete = [row for row in EVAL_ROWS if None not in row]
    with Client(server.url) as client:
        answer = client.infer(complete)
    scores = [p[1] for p in answer.probabilities] if answer.probabilities is not None else answer.predictions
    assert scores == pytest.approx([predicted(row, task) for row in complete], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("model_dir", ["binary-strict"], indirect=True)
def test_a_bad_row_is_refused_before_sending_and_the_service_agrees(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    server = start_server()
    good = [25.0, 1, "Lyon"]
    with Client(server.url) as client:
        assert client.predict([good]).predictions == [int(predicted(good, "binary") >= 0.5)]
        for row, message in (
            (
                [good, [65.0, 4, "Marseille"]],
                (
                    r"rows\[1\]\['city'\]: unknown category 'Marseille'; the model was trained on "
                    r"\['Lyon', 'Paris'\] and refuses others"
                ),
            ),
            ([{"age": "41", "n": 1, "city": "Lyon"}], r"rows\[0\]\['age'\]: expected a number or null"),
            ([[25.0, 1.5, "Lyon"]], r"rows\[0\]\['n'\]: expected an integer \(int\), got 1\.5"),
            ([[25.0, None, "Lyon"]], r"rows\[0\]\['n'\]: expected an integer, got null"),
        ):
            for call in (client.predict, client.infer):
                with pytest.raises(RowError, match=message):
                    call(row, request_id="never-sent")
    refused = httpx.post(f"{server.url}/v1/predict", json={"instances": [good, [65.0, 4, "Marseille"]]})
    assert refused.status_code == 422
    assert "instances[1][2] ('city'): unknown category 'Marseille'" in refused.json()["error"]["message"]
    server.stop()
    assert "never-sent" not in "".join(log.read_text() for log in tmp_path.glob("server-*.log"))


def test_int64_and_bool_features_through_every_path(
    start_server: Callable[..., Server], mixed_model_dir: Path
) -> None:
    """c2-card's ColumnTransformer model (tests/_service_models.py): a bool feature in an FP32 input (sent
    as 0/1 on /v2), an int feature in an INT64 input, a nullable string; every path answers alike."""
    evaluation = json.loads((mixed_model_dir / "eval.json").read_text())
    rows, names = evaluation["rows"], evaluation["features"]
    complete = [row for row in rows if None not in row]
    assert len(complete) < len(rows)  # nulls among the rows: some /v2 inputs go as JSON
    server = start_server(model=mixed_model_dir)
    with Client(server.url) as client:
        reference = client.predict(rows)
        objects: list[Row] = [dict(zip(names, row, strict=True)) for row in rows]
        answers = [client.predict(objects), client.infer(rows, binary=False), client.infer(rows)]
        assert reference.probabilities is not None
        for answer in answers:
            assert answer.predictions == reference.predictions
            assert answer.probabilities is not None
            for ours, theirs in zip(answer.probabilities, reference.probabilities, strict=True):
                assert ours == pytest.approx(theirs, rel=1e-6)
        wholly_binary = client.infer(complete)
        assert wholly_binary.predictions == client.predict(complete).predictions
