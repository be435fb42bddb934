"""The capture's contract (records, files, the label store), its writer in-process (rotation, retention, the
file bound), POST /v1/feedback through the app, and the metrics port's live-quality text file."""

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from model_service.contract.capture import (
    CAPTURE_SCHEMA_VERSION,
    LABELS_FILE,
    CaptureError,
    CaptureRecord,
    LabelOutcome,
    LabelStore,
    capture_file_name,
    capture_files,
    card_label,
    read_capture,
    redact_row,
    utc_now,
)
from model_service.contract.monitoring import CAPTURE_DROPPED
from model_service.model.drift import InputSampler
from model_service.model.runtime import load_card
from model_service.operations.capture import MAX_FEEDBACK_LABELS, CaptureWriter, Held
from model_service.server.metrics_server import MAX_TEXTFILE_BYTES, MetricsApp

DAY = 86400.0


def _record(request_id: str = "r1", row: int = 0, rows: int = 1, **changes: Any) -> CaptureRecord:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "trace_id": None,
        "time": utc_now(),
        "model": "m",
        "version": "1.0.0",
        "inputs": {"age": 31.5, "city": "Paris"},
        "outputs": {"label": 1, "probabilities": {"0": 0.25, "1": 0.75}},
        "latency_ms": 1.5,
        "row": row,
        "rows": rows,
    }
    return CaptureRecord(**{**fields, **changes})


# --- the contract ------------------------------------------------------------------------------------


def test_a_record_reads_back_as_written_and_keys_a_batched_row_with_its_index() -> None:
    record = _record("abc", row=2, rows=3, trace_id="0af7651916cd43dd8448eb211c80319c")
    assert CaptureRecord.from_json(record.to_json()) == record
    assert record.key == "abc#2"
    assert _record("abc").key == "abc"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{", "not JSON"),
        ("[]", "expected a JSON object"),
        ('{"v": 99}', f"expected capture schema {CAPTURE_SCHEMA_VERSION}"),
        (_record().to_json().replace('"latency_ms":1.5', '"latency_ms":true'), "latency_ms: expected"),
        (_record().to_json().replace('"row":0', '"row":1'), "row: 1 is not in 0..0"),
        (_record().to_json().replace('"model":"m",', ""), "model: missing"),
    ],
)
def test_a_bad_line_is_refused_naming_the_field(line: str, message: str) -> None:
    with pytest.raises(CaptureError, match=message):
        CaptureRecord.from_json(line)


def test_files_are_read_oldest_first_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    now = time.time()
    newer = tmp_path / capture_file_name(now, 7)
    older = tmp_path / capture_file_name(now - 60, 8)
    newer.write_text(_record("new").to_json() + "\n" + _record("torn").to_json()[:30])
    older.write_text(_record("old-1").to_json() + "\n" + _record("old-2").to_json() + "\n")
    assert capture_files(tmp_path) == [older, newer]
    assert [record.request_id for record in read_capture(tmp_path)] == ["old-1", "old-2", "new"]


def test_a_bad_line_before_the_last_names_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / capture_file_name(time.time(), 7)
    path.write_text(_record("a").to_json() + "\n" + "garbage\n" + _record("b").to_json() + "\n")
    with pytest.raises(CaptureError, match=f"{path.name}:2: not JSON"):
        list(read_capture(tmp_path))


def test_the_label_store_answers_each_outcome_and_only_stored_changes_it(tmp_path: Path) -> None:
    store = LabelStore(tmp_path / LABELS_FILE, label_window_days=7)
    now = time.time()
    store.record_captured([("fresh", now - DAY), ("old", now - 8 * DAY), ("batch#0", now), ("batch#1", now)])
    add = store.add
    assert add("fresh", "yes", received_at=now, source="t") is LabelOutcome.STORED
    assert add("fresh", "yes", received_at=now, source="t") is LabelOutcome.DUPLICATE
    assert add("fresh", "no", received_at=now, source="t") is LabelOutcome.CONFLICT
    assert add("never-served", "yes", received_at=now, source="t") is LabelOutcome.UNKNOWN
    assert add("old", "yes", received_at=now, source="t") is LabelOutcome.LATE
    assert add("batch", 1, received_at=now, source="t") is LabelOutcome.UNKNOWN  # a batch's rows: id#row
    assert add("batch#1", 1.0, received_at=now, source="t") is LabelOutcome.STORED
    for request_id, label in [("fresh", None), ("fresh", float("nan")), ("fresh", [1]), ("", 1), (7, 1)]:
        assert add(request_id, label, received_at=now, source="t") is LabelOutcome.MALFORMED
    assert add(" fresh", "x" * 257, received_at=now, source="t") is LabelOutcome.MALFORMED
    assert store.labels() == {"fresh": "yes", "batch#1": 1.0}
    assert store.counts() == {"captured": 4, "labelled": 2}
    assert store.forget_captured_before(now - 2 * DAY) == 1  # retention: "old" is forgotten
    assert add("old", "yes", received_at=now, source="t") is LabelOutcome.UNKNOWN
    store.close()


def test_a_label_is_typed_as_the_card_types_it() -> None:
    assert [card_label(label, (0, 1)) for label in (1, 1.0, "1", "0", True, 2, "cat", None)] == [
        1, 1, 1, 0, None, None, None, None
    ]  # fmt: skip
    assert [card_label(label, ("no", "yes")) for label in ("yes", 1, "No")] == ["yes", None, None]
    assert [card_label(label, ()) for label in (3, 2.5, "3", float("inf"), False)] == [
        3.0,
        2.5,
        None,
        None,
        None,
    ]


def test_the_input_log_and_the_capture_redact_alike() -> None:
    """One mechanism: a hashed feature shows the same pseudonym in the input log and in the capture."""
    sampler = InputSampler(["age", "rooms", "city"], 1.0, {"age": "hash", "city": "drop"}, seed=0)
    [logged] = sampler.sample([[31, 2, "Paris"]], [1])
    captured = redact_row({"age": 31, "rooms": 2, "city": "Paris"}, {"age": "hash", "city": "drop"})
    assert captured == logged["inputs"] == {"age": logged["inputs"]["age"], "rooms": 2.0}
    assert captured["age"] != 31
    assert redact_row({"age": None}, {"age": "hash"}) == {"age": None}  # missing stays missing


# --- the writer, in-process --------------------------------------------------------------------------


def _writer(directory: Path, card_dir: Path, registry: CollectorRegistry, **bounds: Any) -> CaptureWriter:
    settings = {"max_file_bytes": 1 << 20, "max_files": 10, "retention_days": 30.0, "queue_size": 1024}
    return CaptureWriter(
        directory,
        load_card(card_dir),
        registry,
        sample_ratio=1.0,
        sensitive={"city": "hash", "rooms": "drop"},
        **{**settings, **bounds},
    )


def _serve(writer: CaptureWriter, request_id: str, n: int, status: int = 200) -> None:
    columns: list[list[Any]] = [[30.5] * n, [2] * n, [1.0] * n, ["Paris"] * (n - 1) + [""]]
    scores = np.tile(np.asarray([[0.25, 0.75]], dtype=np.float32), (n, 1))
    writer.hold(request_id, Held(request_id, "v1", None, columns, np.ones(n, dtype=np.int64), scores))
    writer.release(request_id, None, status, 2.0)


def test_the_writer_types_redacts_rotates_and_keeps_at_most_max_files(
    tmp_path: Path, mixed_model_dir: Path
) -> None:
    registry = CollectorRegistry()
    writer = _writer(tmp_path, mixed_model_dir, registry, max_file_bytes=4096, max_files=3)
    for i in range(60):
        _serve(writer, f"req-{i:03d}", 2)
    _serve(writer, "failed", 1, status=500)  # only what was answered 200 is captured
    writer.close()

    files = capture_files(tmp_path)
    assert len(files) == 3
    assert all(path.stat().st_size <= 4096 for path in files)
    records = list(read_capture(tmp_path))
    keys = [record.key for record in records]
    assert keys == sorted(keys) and keys[-1] == "req-059#1"  # the newest rows, the oldest files gone
    assert len(keys) < 120
    first = records[0]
    assert first.inputs == {
        "age": 30.5,
        "garden": True,
        "city": redact_row({"c": "Paris"}, {"c": "hash"})["c"],
    }
    assert records[1].inputs["city"] is None  # a nullable string's missing value ("" in the parser)
    assert first.outputs == {"label": 1, "probabilities": {"0": 0.25, "1": 0.75}}
    assert (first.model, first.version, first.rows) == ("mixed-classifier", "v1", 2)
    store = LabelStore(tmp_path / LABELS_FILE)
    assert store.counts()["captured"] == 120  # the index keeps every served key, files or not
    assert registry.get_sample_value("model_service_capture_rows_total") == 120


def test_retention_removes_files_untouched_for_longer(tmp_path: Path, mixed_model_dir: Path) -> None:
    stale = tmp_path / capture_file_name(time.time() - 40 * DAY, 1)
    stale.write_text(_record("stale").to_json() + "\n")
    os.utime(stale, (time.time() - 40 * DAY, time.time() - 40 * DAY))
    writer = _writer(tmp_path, mixed_model_dir, CollectorRegistry(), retention_days=30.0)
    _serve(writer, "fresh", 1)
    writer.close()
    assert [record.request_id for record in read_capture(tmp_path)] == ["fresh"]


def test_a_locked_index_drops_the_batch_and_counts_it(tmp_path: Path, mixed_model_dir: Path) -> None:
    registry = CollectorRegistry()
    writer = _writer(tmp_path, mixed_model_dir, registry)
    _serve(writer, "first", 1)  # creates labels.sqlite
    deadline = time.monotonic() + 10
    while registry.get_sample_value("model_service_capture_rows_total") != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    lock = sqlite3.connect(tmp_path / LABELS_FILE, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    _serve(writer, "blocked", 1)
    writer.close(timeout_s=10)
    lock.execute("ROLLBACK")
    assert registry.get_sample_value(f"{CAPTURE_DROPPED}_total", {"reason": "index_error"}) == 1
    assert [record.request_id for record in read_capture(tmp_path)] == ["first"]


# --- POST /v1/feedback ---------------------------------------------------------------------------------


@pytest.fixture
def captured(make_client: Callable[..., TestClient], mixed_model_dir: Path, tmp_path: Path) -> TestClient:
    return make_client(model_dir=mixed_model_dir, capture_dir=tmp_path, capture_sample_ratio=1.0)


def _predict(client: TestClient, rows: int) -> str:
    row = {"age": 30.5, "rooms": 2, "garden": True, "city": "Paris"}
    response = client.post("/v1/predict", json={"instances": [row] * rows})
    assert response.status_code == 200
    request_id: str = response.json()["request_id"]
    return request_id


def _wait_indexed(directory: Path, rows: int) -> None:
    """The writer thread indexes an answer shortly after it was sent."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        store = LabelStore(directory / LABELS_FILE)
        captured = store.counts()["captured"]
        store.close()
        if captured == rows:
            return
        time.sleep(0.05)
    raise AssertionError(f"{rows} rows not indexed")


def test_feedback_answers_each_item_and_stores_only_the_new_labels(
    captured: TestClient, tmp_path: Path
) -> None:
    single, batched, old = _predict(captured, 1), _predict(captured, 2), _predict(captured, 1)
    _wait_indexed(tmp_path, 4)
    db = sqlite3.connect(tmp_path / LABELS_FILE)
    with db:  # the row served 40 days ago, past the 30-day label window
        db.execute("UPDATE captured SET served_at = served_at - 40 * 86400 WHERE key = ?", (old,))
    db.close()
    items = [
        {"request_id": single, "label": 1},
        {"request_id": single, "label": 1},
        {"request_id": single, "label": 0},
        {"request_id": f"{batched}#1", "label": "1"},
        {"request_id": batched, "label": 1},
        {"request_id": old, "label": 1},
        {"request_id": single},
        {"request_id": f"{batched}#0", "label": None},
        "not an object",
        {"request_id": f"{batched}#0", "label": "cat"},
        {"request_id": f"{batched}#1", "label": 1.0},
    ]
    response = captured.post("/v1/feedback", json={"labels": items})
    assert response.status_code == 200
    outcomes = [result["outcome"] for result in response.json()["results"]]
    assert outcomes == [
        "stored", "duplicate", "conflict", "stored", "unknown", "late", "malformed", "malformed", "malformed",
        "malformed", "duplicate",
    ]  # fmt: skip
    assert response.json()["counts"] == {
        "stored": 2, "duplicate": 2, "conflict": 1, "unknown": 1, "late": 1, "malformed": 4
    }  # fmt: skip
    assert (
        response.json()["results"][9]["message"]
        == "label 'cat': expected one of the classes 0, 1; nothing stored"
    )
    store = LabelStore(tmp_path / LABELS_FILE)
    assert store.labels() == {single: 1, f"{batched}#1": 1}  # "1" and 1.0 name class 1, as the card types it
    store.close()


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{", {}, 400, "not valid JSON"),
        (b'{"labels": []}', {}, 422, "non-empty list"),
        (b'{"labels": {"request_id": "a"}}', {}, 422, "non-empty list"),
        (b'{"labels": [], "extra": 1}', {}, 422, "expected"),
        (b"[]", {}, 422, "expected"),
        (b'{"labels": [{"request_id": "a", "label": 1}]}', {"content-type": "text/csv"}, 415, "text/csv"),
    ],
)
def test_a_malformed_body_is_refused_whole_and_stores_nothing(  # noqa: PLR0917 - the parameters
    captured: TestClient, tmp_path: Path, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    response = captured.post(
        "/v1/feedback", content=body, headers={"content-type": "application/json", **headers}
    )
    assert response.status_code == status
    assert message in response.json()["error"]["message"]
    assert LabelStore(tmp_path / LABELS_FILE).labels() == {}


def test_too_many_labels_or_too_large_a_body_is_refused(
    make_client: Callable[..., TestClient], mixed_model_dir: Path, tmp_path: Path
) -> None:
    client = make_client(model_dir=mixed_model_dir, capture_dir=tmp_path, max_body_bytes=200_000)
    item = {"request_id": "a", "label": 1}
    response = client.post("/v1/feedback", json={"labels": [item] * (MAX_FEEDBACK_LABELS + 1)})
    assert response.status_code == 422
    assert f"at most {MAX_FEEDBACK_LABELS}" in response.json()["error"]["message"]
    response = client.post("/v1/feedback", json={"labels": [{"request_id": "a" * 100_000, "label": 1}] * 3})
    assert response.status_code == 413


def test_feedback_without_a_capture_is_404_saying_so(make_client: Callable[..., TestClient]) -> None:
    response = make_client().post("/v1/feedback", json={"labels": [{"request_id": "a", "label": 1}]})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "capture_off"
    assert "MODEL_SERVICE_CAPTURE_DIR" in response.json()["error"]["message"]


def test_feedback_needs_credentials_like_predict(
    make_client: Callable[..., TestClient], mixed_model_dir: Path, tmp_path: Path
) -> None:
    digest = "a" * 64
    client = make_client(model_dir=mixed_model_dir, capture_dir=tmp_path, api_key_sha256=digest)
    response = client.post("/v1/feedback", json={"labels": [{"request_id": "a", "label": 1}]})
    assert response.status_code == 401


# --- the metrics port's text file ----------------------------------------------------------------------

GAUGE = '# TYPE model_live_quality gauge\nmodel_live_quality{version="1",metric="accuracy"} 0.93\n'


@pytest.fixture
def metrics_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MetricsApp:
    (tmp_path / "multiproc").mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "multiproc"))
    return MetricsApp(render_interval_s=0, textfile=tmp_path / "live_quality.prom")


def test_the_text_file_is_appended_when_present(metrics_app: MetricsApp) -> None:
    assert metrics_app.textfile is not None
    assert b"model_live_quality" not in metrics_app.render()  # absent: nothing, no error
    metrics_app.textfile.write_text(GAUGE)
    text = metrics_app.render().decode()
    assert 'model_live_quality{version="1",metric="accuracy"} 0.93' in text
    assert 'model_service_textfile_errors_total{reason="malformed"} 0' in text


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("model_live_quality{version=1} 0.9\n", "malformed"),
        ("model_live_quality 0.9 extra words\n", "malformed"),
        (b"\xff\xfe".decode("latin-1"), "malformed"),
        ("# TYPE model_service_requests counter\nmodel_service_requests_total 1\n", "malformed"),
        ("x" * (MAX_TEXTFILE_BYTES + 1), "too_large"),
    ],
)
def test_a_bad_text_file_is_left_out_and_counted(metrics_app: MetricsApp, content: str, reason: str) -> None:
    assert metrics_app.textfile is not None
    metrics_app.textfile.write_text(content, encoding="latin-1")
    exported = {"model_service_requests"}
    text = metrics_app._textfile(exported).decode()
    assert f'model_service_textfile_errors_total{{reason="{reason}"}} 1' in text
    assert "model_live_quality" not in text and "model_service_requests_total" not in text
