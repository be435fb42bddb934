"""The circuit breaker's state machine on a fake clock, and the fallback wiring in process."""

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from model_service.app import create_app
from model_service.model.breaker import FALLBACK_HEADER, PRIMARY_ERROR, BreakerState, CircuitBreaker
from model_service.operations.settings import ServiceSettings, unknown_variables
from model_service.protocol.errors import StartupError
from model_service.server.worker import Service
from tests._faulty_model import RAISE_BELOW, faulty_primary, other_version


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Changes(list[tuple[str, str]]):
    """(previous, new) state values, in order."""


def state(cb: CircuitBreaker) -> BreakerState:
    """The state now (a call, so the type checker does not carry one comparison over to the next)."""
    return cb.state


def breaker(clock: Clock, changes: Changes, **overrides: float) -> CircuitBreaker:
    settings: dict[str, float] = {"failures": 3, "window_s": 10, "open_s": 5, "half_open_probes": 2}
    settings.update(overrides)
    return CircuitBreaker(
        failures=int(settings["failures"]),
        window_s=settings["window_s"],
        open_s=settings["open_s"],
        half_open_probes=int(settings["half_open_probes"]),
        on_change=lambda old, new: changes.append((old.value, new.value)),
        clock=clock,
    )


def test_failures_within_the_window_open_it() -> None:
    clock, changes = Clock(), Changes()
    cb = breaker(clock, changes)
    cb.failed()
    cb.failed()
    assert state(cb) is BreakerState.CLOSED and cb.allow()
    cb.failed()
    assert state(cb) is BreakerState.OPEN
    assert not cb.allow()
    assert changes == [("closed", "open")]


def test_failures_older_than_the_window_do_not_count() -> None:
    clock, changes = Clock(), Changes()
    cb = breaker(clock, changes)
    cb.failed()
    cb.failed()
    clock.now += 10.5
    cb.failed()
    assert state(cb) is BreakerState.CLOSED
    cb.failed()
    cb.failed()  # three within 10 s
    assert state(cb) is BreakerState.OPEN


def test_successes_while_closed_do_not_reset_the_window() -> None:
    clock, changes = Clock(), Changes()
    cb = breaker(clock, changes)
    cb.failed()
    cb.succeeded()
    cb.failed()
    cb.succeeded()
    cb.failed()
    assert state(cb) is BreakerState.OPEN


def test_open_turns_half_open_after_open_s_and_probes_close_it() -> None:
    clock, changes = Clock(), Changes()
    cb = breaker(clock, changes, failures=1)
    cb.failed()
    clock.now += 4.9
    assert not cb.allow()
    clock.now += 0.1
    assert cb.allow()
    assert state(cb) is BreakerState.HALF_OPEN
    cb.succeeded()
    assert state(cb) is BreakerState.HALF_OPEN  # two probes needed
    assert cb.allow()
    cb.succeeded()
    assert state(cb) is BreakerState.CLOSED
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_one_failure_half_open_opens_it_again_for_a_full_open_s() -> None:
    clock, changes = Clock(), Changes()
    cb = breaker(clock, changes, failures=1)
    cb.failed()
    clock.now += 5
    assert cb.allow()
    cb.succeeded()
    cb.failed()
    assert state(cb) is BreakerState.OPEN
    clock.now += 4.9
    assert not cb.allow()
    clock.now += 0.1
    assert cb.allow()
    assert changes[-2:] == [("half_open", "open"), ("open", "half_open")]


def test_closing_forgets_earlier_failures() -> None:
    clock, changes = Clock(), Changes()
    cb = breaker(clock, changes, half_open_probes=1)
    for _ in range(3):
        cb.failed()
    clock.now += 5
    assert cb.allow()
    cb.succeeded()
    cb.failed()
    cb.failed()
    assert state(cb) is BreakerState.CLOSED


@pytest.fixture(scope="module")
def folders(plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("breaker")
    return faulty_primary(plain_model_dir, root / "primary", "2"), other_version(
        plain_model_dir, root / "fallback", "1"
    )


def test_in_process_fallback_answer(folders: tuple[Path, Path]) -> None:
    primary, fallback = folders
    rows = json.loads((primary / "eval.json").read_text())["rows"][:1]
    rows[0][3] = RAISE_BELOW * 2
    settings = ServiceSettings(model_dir=primary, fallback_dir=fallback)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/predict", json={"instances": rows})
        assert response.status_code == 200
        assert response.json()["model"]["version"] == "1"
        assert response.headers[FALLBACK_HEADER] == PRIMARY_ERROR
        assert client.get("/v1/model").json()["version"] == "2"  # the card served stays the primary's


def test_fallback_dir_without_a_card_is_refused(folders: tuple[Path, Path], tmp_path: Path) -> None:
    primary, _ = folders
    settings = ServiceSettings(model_dir=primary, fallback_dir=tmp_path)
    with pytest.raises(StartupError, match=r"model\.json: model card not found"):
        Service(settings).start()


def test_breaker_settings_are_declared() -> None:
    assert unknown_variables({"MODEL_SERVICE_FALLBACK_DIR": "/fallback"}) is None
    assert unknown_variables({"MODEL_SERVICE_BREAKER_OPEN_S": "10"}) is None
    message = unknown_variables({"MODEL_SERVICE_BREAKER_OPEN_SECONDS": "10"})
    assert message is not None and "MODEL_SERVICE_BREAKER_OPEN_S" in message
