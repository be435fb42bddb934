"""A fallback model behind a circuit breaker (MODEL_SERVICE_FALLBACK_DIR, MODEL_SERVICE_BREAKER_*).

`GuardedModel` answers like the primary `ServedModel` and wraps its `predict` and `v2_infer`: while the
breaker is closed the primary answers; a primary that raises is answered for by the fallback at once and
counts as a failure, and so does a primary answer slower than the latency budget (that answer, already
computed, is still returned). `failures` failures within `window_s` open the breaker: the fallback answers
every request, the primary is not called. After `open_s` the breaker is half-open: the primary answers
again, `half_open_probes` good answers in a row close it, one failure opens it again.

Every fallback answer says so: the body's model version is the fallback's, the `x-model-fallback` header
names the reason, `model_service_fallback_answers_total` counts it and the log has a `fallback_answer`
line. `model_service_breaker_state` exports the state. With no fallback configured none of this is built
and the primary's `predict` is called directly: the hot path is unchanged.
"""

import copy
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from model_service.contract.card import ModelCard
from model_service.contract.monitoring import (
    BREAKER_STATE,
    FALLBACK_ANSWERS,
    FALLBACK_REASON_LABEL,
    PRIMARY_FAILURE_KIND_LABEL,
    PRIMARY_FAILURES,
    STATE_LABEL,
)
from model_service.model.runtime import OnnxModel, load_card
from model_service.model.served import ServedModel
from model_service.model.signature import verify_model_signature
from model_service.operations.logs import JsonLog, exception_fields
from model_service.operations.settings import ServiceSettings
from model_service.protocol.errors import ModelServiceError, StartupError
from model_service.protocol.v2_binary import BinaryBody

FALLBACK_HEADER = "x-model-fallback"
"""Set on every answer the fallback gave; its value is the reason (`primary_error` or `breaker_open`)."""
PRIMARY_ERROR = "primary_error"
BREAKER_OPEN = "breaker_open"


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed / open / half-open, on a clock (monotonic seconds) that tests can replace.

    Calls are synchronous on one event loop, so there is never more than one primary call at a time and
    no lock is needed."""

    def __init__(
        self,
        *,
        failures: int,
        window_s: float,
        open_s: float,
        half_open_probes: int,
        on_change: Callable[[BreakerState, BreakerState], None] = lambda old, new: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window_s = window_s
        self.open_s = open_s
        self.half_open_probes = half_open_probes
        self.state = BreakerState.CLOSED
        self._on_change = on_change
        self._clock = clock
        self._failed_at: deque[float] = deque()
        self._opened_at = 0.0
        self._probes_passed = 0

    def allow(self) -> bool:
        """Whether the primary may answer now (an open breaker turns half-open after `open_s`)."""
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.open_s:
                return False
            self._probes_passed = 0
            self._move(BreakerState.HALF_OPEN)
        return True

    def succeeded(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._probes_passed += 1
            if self._probes_passed >= self.half_open_probes:
                self._failed_at.clear()
                self._move(BreakerState.CLOSED)

    def failed(self) -> None:
        now = self._clock()
        if self.state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        failed_at = self._failed_at
        failed_at.append(now)
        while failed_at and now - failed_at[0] > self.window_s:
            failed_at.popleft()
        if len(failed_at) >= self.failures:
            self._open(now)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._failed_at.clear()
        self._move(BreakerState.OPEN)

    def _move(self, new: BreakerState) -> None:
        old, self.state = self.state, new
        if old is not new:
            self._on_change(old, new)


class FallbackResponse(bytes):
    """A response body the fallback gave, with the header that says so (the middleware sends it)."""

    headers: dict[str, str]


class GuardedModel(ServedModel):
    """Serves everything as the primary does (card, metadata, metrics); inference goes through the
    breaker to the primary or the fallback."""

    def __init__(self, primary: ServedModel, settings: ServiceSettings, log: JsonLog) -> None:
        assert settings.fallback_dir is not None
        # Not ServedModel.__init__: the primary is loaded already; this object answers as it does.
        vars(self).update(vars(primary))
        self._primary = primary
        self._fallback = _fallback_model(primary, settings.fallback_dir, settings)
        self._log = log
        self.latency_budget_s = settings.breaker_latency_budget_ms / 1000
        registry = primary.metrics.registry
        self._answers = Counter(
            FALLBACK_ANSWERS, "answers the fallback model gave, by reason", [FALLBACK_REASON_LABEL],
            registry=registry,
        )  # fmt: skip
        self._primary_failures = Counter(
            PRIMARY_FAILURES, "primary model failures the breaker counted, by kind",
            [PRIMARY_FAILURE_KIND_LABEL], registry=registry,
        )  # fmt: skip
        self._state = Gauge(
            BREAKER_STATE, "circuit breaker state (1 for the current one)", [STATE_LABEL],
            registry=registry, multiprocess_mode="max",
        )  # fmt: skip
        for reason in (PRIMARY_ERROR, BREAKER_OPEN):
            self._answers.labels(reason)
        for kind in ("error", "slow"):
            self._primary_failures.labels(kind)
        self.breaker = CircuitBreaker(
            failures=settings.breaker_failures,
            window_s=settings.breaker_window_s,
            open_s=settings.breaker_open_s,
            half_open_probes=settings.breaker_half_open_probes,
            on_change=self._state_changed,
        )
        self._export_state(BreakerState.CLOSED)
        fallback = self._fallback.card
        log.event(
            "INFO", "fallback_loaded", fallback_version=fallback.version, model_dir=str(settings.fallback_dir)
        )

    def predict(self, body: Any, request_id: str) -> bytes:
        answer = self._answer(self._primary.predict, self._fallback.predict, body, request_id)
        assert isinstance(answer, bytes)  # v1 answers are JSON
        return answer

    def v2_infer(self, body: Any, request_id: str) -> bytes | BinaryBody:
        return self._answer(self._primary.v2_infer, self._fallback.v2_infer, body, request_id)

    def _answer(
        self,
        primary: Callable[[Any, str], bytes | BinaryBody],
        fallback: Callable[[Any, str], bytes | BinaryBody],
        body: Any,
        request_id: str,
    ) -> bytes | BinaryBody:
        breaker = self.breaker
        if not breaker.allow():
            return self._from_fallback(fallback, body, request_id, BREAKER_OPEN, None)
        started = time.perf_counter()
        try:
            response = primary(body, request_id)
        except ModelServiceError:
            raise  # the request's fault (a 4xx), not the model's
        except Exception as exc:  # noqa: BLE001 - whatever the primary raises, the fallback answers
            self._primary_failures.labels("error").inc()
            breaker.failed()
            return self._from_fallback(fallback, body, request_id, PRIMARY_ERROR, exc)
        if time.perf_counter() - started > self.latency_budget_s:
            self._primary_failures.labels("slow").inc()
            breaker.failed()
        else:
            breaker.succeeded()
        return response

    def _from_fallback(
        self,
        fallback: Callable[[Any, str], bytes | BinaryBody],
        body: Any,
        request_id: str,
        reason: str,
        error: Exception | None,
    ) -> FallbackResponse | BinaryBody:
        answer = fallback(body, request_id)
        headers = {FALLBACK_HEADER: reason}
        response: FallbackResponse | BinaryBody
        if isinstance(answer, BinaryBody):
            response = replace(answer, headers=headers)
        else:
            response = FallbackResponse(answer)
            response.headers = headers
        self._answers.labels(reason).inc()
        self._log.event(
            "WARNING",
            "fallback_answer",
            request_id=request_id,
            reason=reason,
            model_version=self._fallback.card.version,
            primary_version=self.card.version,
            **(exception_fields(error) if error else {}),  # the primary's failure, with its traceback
        )
        return response

    def _state_changed(self, old: BreakerState, new: BreakerState) -> None:
        self._export_state(new)
        self._log.event("WARNING", "breaker_state", previous=old.value, state=new.value)

    def _export_state(self, state: BreakerState) -> None:
        for each in BreakerState:
            self._state.labels(each.value).set(1 if each is state else 0)


def _fallback_model(primary: ServedModel, fallback_dir: Path, settings: ServiceSettings) -> ServedModel:
    """The fallback, answering through the primary's parser, metrics and drift counters (it has the same
    features and classes, checked here): only its card, session and model version differ."""
    card = load_card(fallback_dir)
    # The fallback answers users too: the same model signature check as the primary's (MODEL_SERVICE_SIGNATURES).
    verify_model_signature(fallback_dir, settings.signatures, settings.signing_public_keys)
    _check_same_signature(primary.card, card)
    onnx = OnnxModel(card, settings.intra_op_threads, settings.inter_op_threads)
    onnx.warm_up()
    fallback = copy.copy(primary)
    fallback.card = card
    fallback.onnx = onnx
    fallback.model_ref = {"name": card.name, "version": card.version}
    fallback.invert_scores = False  # rehearsal faults are the primary's
    return fallback


def _check_same_signature(primary: ModelCard, fallback: ModelCard) -> None:
    where = f"MODEL_SERVICE_FALLBACK_DIR: {fallback.onnx_path.parent / 'model.json'}"
    for what, mine, theirs in (
        # The primary's parser feeds both: the same features by type (categories may grow between versions).
        ("features", _typed(fallback), _typed(primary)),
        ("task", fallback.task, primary.task),
        ("classes", fallback.classes, primary.classes),
        ("onnx.inputs", fallback.inputs, primary.inputs),
        ("onnx.outputs", fallback.outputs, primary.outputs),
        ("name", fallback.name, primary.name),
    ):
        if mine != theirs:
            raise StartupError(
                f"{where}: {what} {_short(mine)} differs from the primary model's {_short(theirs)}; "
                "a fallback must answer the same requests (take an earlier version of the same model)"
            )


def _typed(card: ModelCard) -> list[tuple[str, str, bool]]:
    return [(feature.name, feature.type, feature.nullable) for feature in card.features]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
