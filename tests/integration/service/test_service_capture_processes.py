"""The capture with real service processes: what two workers served lands in their own rotating files with
sensitive features redacted, labels posted for it get their outcomes, the live-quality file shows on the
metrics port; a blocked writer and a full disk drop samples (counted), never requests."""

import json
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_service.contract.capture import (
    LABELS_FILE,
    LIVE_QUALITY_FILE,
    LabelStore,
    capture_files,
    read_capture,
    redacted_value,
)
from model_service.contract.monitoring import CAPTURE_DROPPED
from tests._metrics import scraped_when
from tests.integration.service.conftest import START_TIMEOUT_S, Server, free_port, service_env

ROW = {"age": 30.5, "rooms": 2, "garden": True, "city": "Paris"}
SENSITIVE = "city:hash,rooms:drop"


def _predict(server: Server, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One request on a new connection, so that the kernel spreads them over the workers."""
    response = httpx.post(f"{server.url}/v1/predict", json={"instances": rows}, timeout=10)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _sample(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    return sum(values)


def _counted(server: Server, name: str, timeout_s: float = 20.0) -> str:
    """The metrics text once the sample `name` is above 0 (workers flush on a timer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = httpx.get(f"{server.metrics_url}/metrics", timeout=5).text
        if _sample(text, name) > 0:
            return text
        assert time.monotonic() < deadline, f"{name} still 0:\n{text}"
        time.sleep(0.2)


def test_two_workers_capture_what_they_served_and_take_labels_for_it(
    start_server: Callable[..., Server], mixed_model_dir: Path, tmp_path: Path
) -> None:
    capture = tmp_path / "capture"
    server = start_server(
        "--workers",
        "2",
        model=mixed_model_dir,
        capture_dir=capture,
        capture_sample_ratio=1.0,
        capture_max_file_bytes=4096,
        log_inputs_sensitive=SENSITIVE,
    )
    answers = [_predict(server, [{**ROW, "age": 20.0 + i}] * (1 + i % 3)) for i in range(30)]
    v2 = httpx.post(
        f"{server.url}/v2/models/mixed-classifier/infer",
        json={
            "id": "client-id-1",
            "inputs": [
                {"name": "age", "datatype": "FP32", "shape": [1, 1], "data": [44.0]},
                {"name": "rooms", "datatype": "INT64", "shape": [1, 1], "data": [3]},
                {"name": "garden", "datatype": "BOOL", "shape": [1, 1], "data": [False]},
                {"name": "city", "datatype": "BYTES", "shape": [1, 1], "data": ["Lyon"]},
            ],
        },
        timeout=10,
    )
    assert v2.status_code == 200, v2.text
    rows = sum(len(answer["predictions"]) for answer in answers) + 1
    scraped_when(server.metrics_url, f"model_service_capture_rows_total {rows}.0")

    single = next(answer["request_id"] for answer in answers if len(answer["predictions"]) == 1)
    batched = next(answer["request_id"] for answer in answers if len(answer["predictions"]) == 3)
    labels = [
        {"request_id": single, "label": 1},
        {"request_id": f"{batched}#2", "label": 0},
        {"request_id": "client-id-1", "label": 1},
        {"request_id": single, "label": 0},
        {"request_id": "never-served", "label": 1},
        {"request_id": batched, "label": 1},
    ]
    feedback = httpx.post(f"{server.url}/v1/feedback", json={"labels": labels}, timeout=10)
    assert feedback.status_code == 200, feedback.text
    outcomes = [result["outcome"] for result in feedback.json()["results"]]
    assert outcomes == ["stored", "stored", "stored", "conflict", "unknown", "unknown"]

    # The live-quality gauges pipeline evaluate writes, appended to /metrics; a broken file is left out.
    (capture / LIVE_QUALITY_FILE).write_text('model_live_quality{version="v",metric="accuracy"} 0.91\n')
    scraped_when(server.metrics_url, 'model_live_quality{version="v",metric="accuracy"} 0.91')
    (capture / LIVE_QUALITY_FILE).write_text("model_live_quality{version=v} not-a-number\n")
    text = scraped_when(server.metrics_url, 'model_service_textfile_errors_total{reason="malformed"} 1')
    assert "model_live_quality{" not in text
    server.stop()

    records = list(read_capture(capture))
    assert len(records) == rows
    files = capture_files(capture)
    assert len(files) > 1 and all(path.stat().st_size <= 4096 for path in files)  # rotated
    assert len({path.stem.rsplit("-", 1)[1] for path in files}) == 2  # one file at a time per worker (pid)
    by_key = {record.key: record for record in records}
    assert len(by_key) == rows
    for number, answer in enumerate(answers):
        n = len(answer["predictions"])
        for i, probabilities in enumerate(answer["probabilities"]):
            record = by_key[answer["request_id"] if n == 1 else f"{answer['request_id']}#{i}"]
            inputs = {"age": 20.0 + number, "garden": True, "city": redacted_value("Paris")}  # rooms dropped
            assert record.inputs == inputs
            assert record.outputs["label"] == answer["predictions"][i]
            expected = dict(zip(("0", "1"), probabilities, strict=True))
            assert record.outputs["probabilities"] == pytest.approx(expected)
            assert record.version == answer["model"]["version"] and record.latency_ms > 0
    assert by_key["client-id-1"].inputs == {"age": 44.0, "garden": False, "city": redacted_value("Lyon")}
    store = LabelStore(capture / LABELS_FILE)
    assert store.labels() == {single: 1, f"{batched}#2": 0, "client-id-1": 1}
    store.close()


def test_a_blocked_writer_drops_samples_never_requests(
    start_server: Callable[..., Server], mixed_model_dir: Path, tmp_path: Path
) -> None:
    """The writer waits for the index's lock (another process holds labels.sqlite): its queue fills, the
    samples past it are dropped and counted, every request is answered; once the lock goes, it catches up."""
    capture = tmp_path / "capture"
    LabelStore(capture / LABELS_FILE).close()
    lock = sqlite3.connect(capture / LABELS_FILE, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    server = start_server(
        model=mixed_model_dir, capture_dir=capture, capture_sample_ratio=1.0, capture_queue_size=2
    )
    for _ in range(60):
        _predict(server, [ROW])
    _counted(server, f'{CAPTURE_DROPPED}_total{{reason="queue_full"}}')
    assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
    lock.execute("ROLLBACK")
    lock.close()
    deadline = time.monotonic() + 20
    sent: set[str] = set()
    while not sent & {record.request_id for record in read_capture(capture)}:
        assert time.monotonic() < deadline, "the writer did not catch up once the lock was released"
        sent.add(_predict(server, [ROW])["request_id"])  # the first may meet a queue still full
        time.sleep(0.2)


def _start_with_file_size_limit(model_dir: Path, tmp_path: Path, limit: int, **settings: object) -> Server:
    """The service with RLIMIT_FSIZE: a write past `limit` bytes fails with EFBIG, as on a full disk
    (Python ignores SIGXFSZ, so the write raises rather than the process dying)."""
    port, metrics_port = free_port(), free_port()
    command = [sys.executable, "-m", "model_service", "--model-dir", str(model_dir), "--port", str(port)]
    command += ["--metrics-port", str(metrics_port)]

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with (tmp_path / "server.log").open("w") as log:
        process = subprocess.Popen(
            command,
            env=service_env(**settings),
            stdout=log,
            stderr=log,
            text=True,
            preexec_fn=limit_file_size,  # noqa: PLW1509 - a setrlimit before exec, no threads here
        )
    server = Server(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.stop()
    raise AssertionError(f"service not ready after {START_TIMEOUT_S}s")


def test_a_full_disk_drops_samples_never_requests(model_dir: Path, tmp_path: Path) -> None:
    """A write past the limit fails: the sample is dropped and counted, the torn line stays the last of its
    file, the next sample goes to a new file. The 30-feature model's lines are large, so the capture file
    meets the limit before labels.sqlite does (which would drop as `index_error`)."""
    capture = tmp_path / "capture"
    limit = 256 * 1024
    server = _start_with_file_size_limit(
        model_dir, tmp_path, limit, capture_dir=capture, capture_sample_ratio=1.0
    )
    rows = json.loads((model_dir / "eval.json").read_text())["rows"]
    try:
        for _ in range(8):  # about 1 KiB per captured row: past the limit
            response = httpx.post(f"{server.url}/v1/predict", json={"instances": rows * 5}, timeout=10)
            assert response.status_code == 200
        text = _counted(server, f'{CAPTURE_DROPPED}_total{{reason="write_error"}}')
        assert _sample(text, "model_service_capture_rows_total") > 0
        assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
    finally:
        server.stop()
    files = capture_files(capture)
    assert len(files) > 1 and all(path.stat().st_size <= limit for path in files)
    assert len(list(read_capture(capture))) > 0  # the torn line a failed write left is the last: skipped


def test_a_capture_folder_that_cannot_be_written_is_refused_at_start(
    run_service: Callable[..., subprocess.CompletedProcess[str]], mixed_model_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    result = run_service(mixed_model_dir, "--port", "1", capture_dir=tmp_path / "a-file" / "capture")
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("model_service: refusing to start: MODEL_SERVICE_CAPTURE_DIR: cannot capture in ")
    assert "Not a directory; mount a writable folder there or unset it" in line
