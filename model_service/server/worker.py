"""What one worker process holds: `Service` (settings, readiness, draining, requests in flight, request ids,
rehearsal faults) and, once `Service.start` has loaded it in the app's lifespan, the model it serves
(model_service/model/served.py; behind a circuit breaker when a fallback is configured).
"""

import asyncio
import itertools
import os
import random
import signal
import threading
from types import FrameType

from model_service.model.breaker import GuardedModel
from model_service.model.served import ServedModel
from model_service.operations.auth import Authenticator
from model_service.operations.logs import JsonLog
from model_service.operations.rate_limit import RateLimiter
from model_service.operations.settings import ServiceSettings
from model_service.protocol.errors import InjectedFault, NotReady


class Service:
    """Everything one worker serves. Built empty by `create_app`; `start` loads the model in lifespan."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.faults_enabled = settings.faults_enabled
        self.log = JsonLog()
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self.max_queue_delay_s = settings.max_queue_delay_ms / 1000
        self.model: ServedModel | None = None
        """None until `start` has loaded it: requests other than probes are answered 503 until then."""
        self.auth: Authenticator | None = None
        """None while auth is off (or before `start`)."""
        self.rate_limiter = (
            RateLimiter(
                settings.rate_limit_rps,
                settings.rate_limit_burst,
                clients=settings.rate_limit_clients,
                max_clients=settings.rate_limit_max_clients,
            )
            if settings.rate_limit_rps > 0
            else None
        )
        """Per-client token buckets (model_service/operations/rate_limit.py); None: no limit."""
        self.gated = settings.auth_enabled or self.rate_limiter is not None
        """A request passes `ServiceMiddleware._admit` (credentials, scope, rate limit) before its handler."""
        self._ids = itertools.count()
        self._id_prefix = f"{os.getpid():x}{random.getrandbits(16):04x}-"
        self._random = random.Random()

    def start(self) -> ServedModel:
        """Load the model and the credentials (lifespan start-up); `StartupError` on a bad card or key."""
        settings = self.settings
        model = ServedModel(settings, self.log)
        if settings.fallback_dir is not None:
            model = GuardedModel(model, settings, self.log)
        self.auth = Authenticator(settings, self.log) if settings.auth_enabled else None
        self.model = model
        self.ready = True
        return model

    def served(self) -> ServedModel:
        """The loaded model, or 503 `not_ready` before `start` (for the routes Starlette serves)."""
        if self.model is None:
            raise NotReady("model not loaded yet; poll /readyz")
        return self.model

    def check_ready(self) -> None:
        """503 `not_ready` (with Retry-After) while loading or draining."""
        if not self.ready or self.draining:
            raise NotReady(
                "not ready (loading or shutting down); poll /readyz",
                {"Retry-After": str(self.settings.retry_after_s)},
            )

    def next_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    def drain_on_sigterm(self) -> None:
        """Turn readiness false on SIGTERM, then (after `shutdown_delay_s`) hand over to uvicorn's handler,
        which stops accepting and lets in-flight requests finish."""
        if threading.current_thread() is not threading.main_thread():
            return  # in-process test clients: no signals to catch
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return
        loop = asyncio.get_running_loop()
        delay = self.settings.shutdown_delay_s

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            self.draining = True
            self.log.event("INFO", "draining", in_flight=self.in_flight, shutdown_delay_s=delay)
            if delay > 0:
                loop.call_later(delay, previous, signum, frame)
            else:
                previous(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

    async def inject_fault(self) -> None:
        settings = self.settings
        if settings.fault_latency_ms > 0 and self._random.random() < settings.fault_latency_ratio:
            await asyncio.sleep(settings.fault_latency_ms / 1000)
        if self._random.random() < settings.fault_error_ratio:
            raise InjectedFault()

    def flush_metrics(self) -> None:
        """Add what was counted since the last flush to the Prometheus metrics (nothing before `start`)."""
        model = self.model
        if model is None:
            return
        model.metrics.flush(self.in_flight)
        if model.drift is not None:
            model.drift.flush()
