"""W3C trace context: valid traceparents continued (response header, log line), invalid ones ignored; with
an OTLP endpoint set, request/validation/inference spans, caught by the SDK's in-memory exporter."""

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.testclient import TestClient

from model_service.operations import tracing
from model_service.operations.tracing import parse_traceparent

NAME = "breast-cancer-classifier"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def test_valid_traceparents() -> None:
    assert parse_traceparent(TRACEPARENT.encode()) == (TRACE_ID, PARENT_ID, "01")
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-00".encode()) == (TRACE_ID, PARENT_ID, "00")
    # A later version may add fields after a dash; its first four are read as version 00's.
    assert parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-01-what-ever".encode()) == (
        TRACE_ID,
        PARENT_ID,
        "01",
    )


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # uppercase hex
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace-id: MUST ignore
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent-id: MUST ignore
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is invalid
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 is exactly 55 characters
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-1",
        f"00_{TRACE_ID}_{PARENT_ID}_01",
        f"00-{TRACE_ID}-{PARENT_ID}-01 ",
        "",
        "00-\u00e9",
    ],
)
def test_invalid_traceparents_are_ignored(value: str) -> None:
    assert parse_traceparent(value.encode()) is None


def request_lines(capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [
        line
        for line in map(json.loads, filter(None, capfd.readouterr().err.splitlines()))
        if line.get("event") == "request"
    ]


def test_a_valid_traceparent_is_continued_in_the_answer_and_the_log(
    capfd: pytest.CaptureFixture[str], make_client: Callable[..., TestClient], rows: list[list[float]]
) -> None:
    client = make_client()  # after capfd: the log writes to the descriptor stderr has then
    answers = [
        client.post("/v1/predict", json={"instances": rows[:1]}, headers={"traceparent": TRACEPARENT}),
        client.post("/v1/predict", json={"instances": [[1.0]]}, headers={"traceparent": TRACEPARENT}),
        client.get("/v1/model", headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1"}),
        client.get("/v2/nope", headers={"traceparent": TRACEPARENT}),
    ]
    assert [answer.status_code for answer in answers] == [200, 422, 200, 404]
    span_ids = set()
    for answer in answers:
        version, trace_id, span_id, flags = answer.headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
        assert len(span_id) == 16
        assert span_id not in (PARENT_ID, "0" * 16)
        span_ids.add(span_id)
    assert len(span_ids) == 4  # a span of its own for each request
    client.app.state.service.log.flush()  # type: ignore[attr-defined]
    lines = request_lines(capfd)
    assert [line["trace_id"] for line in lines] == [TRACE_ID] * 4


def test_no_or_an_invalid_traceparent_gives_no_trace(
    capfd: pytest.CaptureFixture[str], make_client: Callable[..., TestClient], rows: list[list[float]]
) -> None:
    client = make_client()
    for headers in ({}, {"traceparent": f"00-{'0' * 32}-{PARENT_ID}-01", "tracestate": "vendor=1"}):
        answer = client.post("/v1/predict", json={"instances": rows[:1]}, headers=headers)
        assert answer.status_code == 200
        assert "traceparent" not in answer.headers
    client.app.state.service.log.flush()  # type: ignore[attr-defined]
    lines = request_lines(capfd)
    assert len(lines) == 2
    assert all("trace_id" not in line for line in lines)


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Export on (an endpoint set), with the spans kept in memory instead of sent."""
    memory = InMemorySpanExporter()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(tracing, "span_processor", lambda: SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()


def test_request_validation_and_inference_spans_in_the_callers_trace(
    exported: InMemorySpanExporter, make_client: Callable[..., TestClient], rows: list[list[float]]
) -> None:
    client = make_client()
    flat = [value for row in rows[:2] for value in row]
    v2 = {"inputs": [{"name": "input", "shape": [2, 30], "datatype": "FP32", "data": flat}]}
    for path, body in (("/v1/predict", {"instances": rows[:2]}), (f"/v2/models/{NAME}/infer", v2)):
        exported.clear()
        answer = client.post(path, json=body, headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
        assert answer.status_code == 200
        spans = {span.name: span for span in exported.get_finished_spans()}
        route = "/v1/predict" if path == "/v1/predict" else "/v2/models/{name}/infer"
        assert set(spans) == {"validation", "inference", f"POST {route}"}
        request = spans[f"POST {route}"]
        context = request.get_span_context()
        assert context is not None
        assert f"{context.trace_id:032x}" == TRACE_ID
        assert request.parent is not None
        assert f"{request.parent.span_id:016x}" == PARENT_ID
        assert context.trace_state.get("vendor") == "1"
        assert answer.headers["traceparent"] == f"00-{TRACE_ID}-{context.span_id:016x}-01"
        for child in ("validation", "inference"):
            parent = spans[child].parent
            assert parent is not None
            assert parent.span_id == context.span_id
        assert request.attributes is not None
        assert request.attributes["http.response.status_code"] == 200
        assert request.attributes["http.route"] == route


def test_without_traceparent_an_exported_request_starts_a_trace(
    exported: InMemorySpanExporter, make_client: Callable[..., TestClient], rows: list[list[float]]
) -> None:
    client = make_client()
    answer = client.post("/v1/predict", json={"instances": [[1.0]]})
    assert answer.status_code == 422
    (request,) = [span for span in exported.get_finished_spans() if span.name == "POST /v1/predict"]
    assert request.parent is None
    context = request.get_span_context()
    assert context is not None
    flags = f"{int(context.trace_flags):02x}"  # sampled, and the SDK's random-trace-id bit (Level 2)
    assert answer.headers["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags}"
    assert int(flags, 16) & 1
    assert {span.name for span in exported.get_finished_spans()} == {"validation", "POST /v1/predict"}


def test_probes_are_not_traced(
    exported: InMemorySpanExporter, make_client: Callable[..., TestClient]
) -> None:
    client = make_client()
    answer = client.get("/readyz", headers={"traceparent": TRACEPARENT})
    assert answer.status_code == 200
    assert "traceparent" not in answer.headers
    assert exported.get_finished_spans() == ()
