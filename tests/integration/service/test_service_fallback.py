"""The fallback model behind the circuit breaker, through the real service process: a primary whose ONNX
graph raises on some rows, or is slow on them (tests/_faulty_model.py); the breaker opens, the fallback
answers and says so, the primary is retried half-open and takes over again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from model_service.model.breaker import BREAKER_OPEN, FALLBACK_HEADER, PRIMARY_ERROR
from tests._faulty_model import RAISE_BELOW, SLOW_ABOVE, faulty_primary, other_version

if TYPE_CHECKING:
    from tests.integration.service.conftest import Server

pytestmark = pytest.mark.slow

NAME = "breast-cancer-classifier"
PRIMARY = "2"
FALLBACK = "1"
TAKEOVER_TIMEOUT_S = 60
BREAKER = {
    "breaker_failures": 3,
    "breaker_window_s": 600,
    # Long enough that the requests checking the open state all land within it, even on a busy machine.
    "breaker_open_s": 4,
    "breaker_half_open_probes": 2,
    # A clean answer takes well under a millisecond, a slow one most of a second (2 GFLOP per product).
    "breaker_latency_budget_ms": 200,
}


@pytest.fixture(scope="module")
def model_dir(plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return faulty_primary(plain_model_dir, tmp_path_factory.mktemp("primary") / "model", PRIMARY)


@pytest.fixture(scope="module")
def fallback_dir(plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return other_version(plain_model_dir, tmp_path_factory.mktemp("fallback") / "model", FALLBACK)


def _rows(model_dir: Path, poison: float | None = None) -> list[list[float]]:
    rows: list[list[float]] = json.loads((model_dir / "eval.json").read_text())["rows"][:2]
    if poison is not None:
        rows[0][0] = poison
    return rows


def _predict(server: Server, rows: list[list[float]]) -> httpx.Response:
    response = httpx.post(f"{server.url}/v1/predict", json={"instances": rows}, timeout=30)
    assert response.status_code == 200, response.text
    return response


def _answered_by(response: httpx.Response) -> tuple[str, str | None]:
    return response.json()["model"]["version"], response.headers.get(FALLBACK_HEADER)


def _metric(server: Server, sample: str) -> float:
    for line in httpx.get(f"{server.metrics_url}/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{sample} not in /metrics")


def _until_primary_answers(server: Server, rows: list[list[float]]) -> list[tuple[str, str | None]]:
    """Send clean rows until the primary answers (after open_s and the half-open probes); the answers."""
    seen = []
    deadline = time.monotonic() + TAKEOVER_TIMEOUT_S
    while time.monotonic() < deadline:
        seen.append(_answered_by(_predict(server, rows)))
        if (
            seen[-1] == (PRIMARY, None)
            and _metric(server, 'model_service_breaker_state{state="closed"}') == 1
        ):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"the primary did not take over again within {TAKEOVER_TIMEOUT_S}s: {seen[-5:]}")


def _log_events(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    lines = [line for log in tmp_path.glob("server-*.log") for line in log.read_text().splitlines()]
    return [json.loads(line) for line in lines if line.startswith("{") and f'"event":"{event}"' in line]


def test_primary_that_raises_is_answered_by_the_fallback_until_it_recovers(
    start_server: Callable[..., Server], model_dir: Path, fallback_dir: Path, tmp_path: Path
) -> None:
    server = start_server(fallback_dir=fallback_dir, **BREAKER)
    clean, poisoned = _rows(model_dir), _rows(model_dir, RAISE_BELOW * 2)
    assert _answered_by(_predict(server, clean)) == (PRIMARY, None)

    # Each raising primary call is answered by the fallback; the third opens the breaker.
    for _ in range(3):
        assert _answered_by(_predict(server, poisoned)) == (FALLBACK, PRIMARY_ERROR)
    assert _metric(server, 'model_service_breaker_state{state="open"}') == 1
    # Open: clean rows too go to the fallback, on v1 and v2, without calling the primary.
    assert _answered_by(_predict(server, clean)) == (FALLBACK, BREAKER_OPEN)
    flat = [value for row in clean for value in row]
    v2 = httpx.post(
        f"{server.url}/v2/models/{NAME}/infer",
        json={"inputs": [{"name": "input", "shape": [2, 30], "datatype": "FP32", "data": flat}]},
    )
    assert v2.status_code == 200
    assert v2.json()["model_version"] == FALLBACK
    assert v2.headers[FALLBACK_HEADER] == BREAKER_OPEN
    # The fallback's answers are the plain model's: the same rows the primary answers when clean.
    assert v2.json()["outputs"][0]["data"] == _predict(server, clean).json()["predictions"]
    # Bad input is the request's fault: a 422 whoever answers, never a fallback answer.
    assert httpx.post(f"{server.url}/v1/predict", json={"instances": [[1.0]]}).status_code == 422

    _until_primary_answers(server, clean)
    assert _metric(server, f'model_service_fallback_answers_total{{reason="{PRIMARY_ERROR}"}}') == 3
    assert _metric(server, f'model_service_fallback_answers_total{{reason="{BREAKER_OPEN}"}}') >= 2
    assert _metric(server, 'model_service_primary_failures_total{kind="error"}') == 3

    server.stop()  # flushes the log
    fallback_lines = _log_events(tmp_path, "fallback_answer")
    assert {line["reason"] for line in fallback_lines} == {PRIMARY_ERROR, BREAKER_OPEN}
    assert all(line["model_version"] == FALLBACK for line in fallback_lines)
    assert "Gather" in next(line["error"] for line in fallback_lines if line["reason"] == PRIMARY_ERROR)
    states = [(line["previous"], line["state"]) for line in _log_events(tmp_path, "breaker_state")]
    # (A probe slower than the budget on a busy machine would open it once more: then it closes later.)
    assert states[0] == ("closed", "open")
    assert states[1] == ("open", "half_open")
    assert states[-1] == ("half_open", "closed")


def test_slow_primary_opens_the_breaker_and_takes_over_again(
    start_server: Callable[..., Server], model_dir: Path, fallback_dir: Path
) -> None:
    server = start_server(fallback_dir=fallback_dir, **BREAKER)
    clean, slow = _rows(model_dir), _rows(model_dir, SLOW_ABOVE * 2)
    # A slow answer is still the primary's (it is computed); three of them open the breaker.
    for _ in range(3):
        assert _answered_by(_predict(server, slow)) == (PRIMARY, None)
    assert _metric(server, 'model_service_primary_failures_total{kind="slow"}') == 3
    assert _answered_by(_predict(server, slow)) == (FALLBACK, BREAKER_OPEN)
    _until_primary_answers(server, clean)
    assert _metric(server, 'model_service_breaker_state{state="open"}') == 0


def test_fallback_of_another_model_is_refused_at_start(
    run_service: Callable[..., Any], model_dir: Path, tmp_path: Path
) -> None:
    other = other_version(model_dir, tmp_path / "other", "9")
    card = json.loads((other / "model.json").read_text())
    card["classes"] = ["benign", "malignant"]
    (other / "model.json").write_text(json.dumps(card))
    result = run_service(model_dir, fallback_dir=other)
    assert result.returncode != 0
    assert "MODEL_SERVICE_FALLBACK_DIR" in result.stderr
    assert "classes" in result.stderr
    assert "differs from the primary model's" in result.stderr
