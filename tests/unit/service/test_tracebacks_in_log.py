"""A 500 and a primary failure the breaker counts must be locatable: their log line carries the traceback
(a field of the one JSON line); the answer to the client stays clean (its request id, no stack)."""

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from model_service.app import create_app
from model_service.model.breaker import FALLBACK_HEADER, PRIMARY_ERROR
from model_service.model.served import ServedModel
from model_service.operations.settings import ServiceSettings
from tests._faulty_model import RAISE_BELOW, faulty_primary, other_version


def log_events(err: str, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line["event"] == event]


def broken_predict(self: ServedModel, body: Any, request_id: str) -> bytes:
    raise KeyError("a bug deep in the handler")


def test_an_unhandled_error_logs_its_traceback_and_answers_without_it(
    plain_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ServedModel, "predict", broken_predict)
    rows = json.loads((plain_model_dir / "eval.json").read_text())["rows"][:1]
    with TestClient(create_app(ServiceSettings(model_dir=plain_model_dir))) as client:
        response = client.post("/v1/predict", json={"instances": rows})
    assert response.status_code == 500
    assert "Traceback" not in response.text
    assert "a bug deep" not in response.text
    request_id = response.json()["error"]["request_id"]
    (line,) = log_events(capfd.readouterr().err, "unhandled_exception")
    assert line["request_id"] == request_id
    assert line["error"] == "KeyError: 'a bug deep in the handler'"
    assert line["traceback"].startswith("Traceback (most recent call last):")
    assert "in broken_predict" in line["traceback"]  # the frame that raised, not only its message


def test_a_primary_failure_that_trips_the_breaker_logs_its_traceback(
    plain_model_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    primary = faulty_primary(plain_model_dir, tmp_path / "primary", "2")
    fallback = other_version(plain_model_dir, tmp_path / "fallback", "1")
    rows = json.loads((primary / "eval.json").read_text())["rows"][:1]
    rows[0][3] = RAISE_BELOW * 2  # the faulty primary's graph fails on it
    settings = ServiceSettings(model_dir=primary, fallback_dir=fallback)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/predict", json={"instances": rows})
    assert response.status_code == 200
    assert response.headers[FALLBACK_HEADER] == PRIMARY_ERROR
    (line,) = log_events(capfd.readouterr().err, "fallback_answer")
    assert line["reason"] == PRIMARY_ERROR
    assert line["traceback"].startswith("Traceback (most recent call last):")
    assert line["error"].split(":")[0] in line["traceback"]
    assert "onnxruntime" in line["traceback"]  # down to the session's run
