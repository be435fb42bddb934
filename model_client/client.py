"""The clients: sync `Client` and async `AsyncClient`, one call plan for both.

A call is written once, as a generator (`_Core.predict`, `_Core.infer`, `_Core.read_card`) that yields the
steps it needs (an HTTP attempt, a wait) and gets each attempt's outcome back: retries, deadlines and request
ids live there, without I/O. Each client only runs the steps, `Client` blocking and `AsyncClient` awaiting
(`_run`), so the two stay alike by construction.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar, cast

import httpx

from model_client.codec import Codec, Prediction, Row
from model_client.errors import ClientError, ServiceError, ServiceTimeout, ServiceUnreachable

RETRIED_STATUSES = frozenset({429, 502, 503, 504})
"""429 only when the service says when (Retry-After): the client's own budget comes back then."""
T = TypeVar("T")


@dataclass(frozen=True)
class Retry:
    """How failed attempts are retried: at most `attempts` in all; the n-th wait is uniform in
    [0, min(max_backoff_s, backoff_s * 2**n)] ("full jitter"), or the 503's or 429's Retry-After plus up
    to `backoff_s` of jitter when the service sends one (a 429 without it is not retried)."""

    attempts: int = 4
    backoff_s: float = 0.05
    max_backoff_s: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"Retry: expected attempts >= 1 and backoffs >= 0, got {self}")

    def delay(self, attempt: int, response: httpx.Response | None, rng: random.Random) -> float:
        retry_after = _retry_after(response)
        if retry_after is not None:
            return retry_after + rng.uniform(0, self.backoff_s)
        return rng.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None or response.status_code not in (429, 503):
        return None
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None  # the service sends seconds (RFC 9110 delay-seconds)


@dataclass(frozen=True)
class _Attempt:
    """One try of a call: its headers and time left; `failed` says how long to wait before the next."""

    core: _Core
    number: int
    headers: dict[str, str]
    request_id: str
    timeout_s: float
    deadline: float
    what: str

    def failed(self, outcome: httpx.Response | httpx.TransportError) -> float:
        """The wait before the next attempt; raises when this failure is not retried or no time is left."""
        if isinstance(outcome, httpx.TimeoutException):  # this attempt had all the time left
            raise ServiceTimeout(
                f"{self.what}: no answer within {self.core.timeout} s (request {self.request_id})"
            ) from outcome
        if isinstance(outcome, httpx.TransportError):
            failure: ClientError = ServiceUnreachable(f"{self.what}: {outcome} (request {self.request_id})")
            response = None
        else:
            failure = ServiceError.of(outcome, self.request_id)
            response = outcome
            if outcome.status_code not in RETRIED_STATUSES:
                raise failure
            if outcome.status_code == 429 and _retry_after(outcome) is None:
                raise failure  # a rate limit that says not when: retrying at once would be refused again
        wait = self.core.retry.delay(self.number, response, self.core.rng)
        if self.number + 1 >= self.core.retry.attempts or time.monotonic() + wait >= self.deadline:
            raise failure
        return wait


@dataclass(frozen=True)
class _Send:
    """A step of a call: one HTTP attempt; the outcome (a response or a transport error) comes back."""

    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    timeout_s: float


@dataclass(frozen=True)
class _Wait:
    """A step of a call: wait before the next attempt."""

    seconds: float


Outcome = httpx.Response | httpx.TransportError | None
Call = Generator[_Send | _Wait, Outcome, T]
"""A call plan: it yields steps and returns the call's value (or raises the call's error)."""


@dataclass
class _Core:
    """What both clients share: headers, request ids, the attempts of a call and the calls themselves."""

    url: str
    api_key: str | None
    token: str | None
    timeout: float
    retry: Retry
    codec: Codec | None = None
    """Built from the card on the first call (GET /v1/model, read once)."""
    rng: random.Random = field(default_factory=random.Random)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _prefix: str = field(default_factory=lambda: f"sdk-{os.getpid():x}-{random.getrandbits(24):06x}-")

    def headers(self, request_id: str) -> dict[str, str]:
        headers = {"x-request-id": request_id}
        if self.api_key is not None:
            headers["x-api-key"] = self.api_key
        if self.token is not None:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    def request_id(self, given: str | None) -> str:
        return given or f"{self._prefix}{next(self._ids):x}"

    def attempts(
        self, method: str, path: str, request_id: str | None, headers: Mapping[str, str] | None
    ) -> Iterator[_Attempt]:
        """The attempts of one call, each with the time left; ends by raising (timeout or last failure)."""
        rid = self.request_id(request_id)
        all_headers = {**self.headers(rid), **(headers or {})}
        deadline = time.monotonic() + self.timeout
        what = f"{method} {path}"
        for number in range(self.retry.attempts):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            yield _Attempt(self, number, all_headers, rid, left, deadline, what)
        raise ServiceTimeout(f"{what}: no answer within {self.timeout} s (request {rid})")

    # -- calls ------------------------------------------------------------------------------------------
    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        request_id: str | None,
    ) -> Call[httpx.Response]:
        """One request, retried as `retry` says within `timeout`: the first successful response."""
        for attempt in self.attempts(method, path, request_id, headers):
            outcome = yield _Send(method, path, body, attempt.headers, attempt.timeout_s)
            assert outcome is not None, "the client answers every _Send with its outcome"
            if isinstance(outcome, httpx.Response) and outcome.is_success:
                return outcome
            yield _Wait(attempt.failed(outcome))
        raise AssertionError("unreachable: `attempts` raises when it ends")

    def read_card(self) -> Call[Codec]:
        """The card's codec, reading GET /v1/model on the first call."""
        if self.codec is None:
            response = yield from self.send("GET", "/v1/model", request_id=None)
            self.codec = Codec(response.json())
        return self.codec

    def predict(self, rows: Sequence[Row], request_id: str | None) -> Call[Prediction]:
        codec = yield from self.read_card()
        body = codec.v1_body(rows)
        headers = {"content-type": "application/json"}
        response = yield from self.send("POST", "/v1/predict", body, headers, request_id=request_id)
        return codec.v1_answer(response)

    def infer(self, rows: Sequence[Row], request_id: str | None, *, binary: bool) -> Call[Prediction]:
        codec = yield from self.read_card()
        rid = self.request_id(request_id)
        body, headers = codec.v2_request(codec.matrix(rows), rid, binary=binary)
        response = yield from self.send("POST", codec.v2_path(), body, headers, request_id=rid)
        return codec.v2_answer(response)


class Client:
    """Synchronous client; a context manager (or call `close`)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = 5.0,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = _Core(url.rstrip("/"), api_key, token, timeout, retry or Retry())
        self._http = httpx.Client(base_url=self._core.url, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def card(self) -> dict[str, Any]:
        """The model card (GET /v1/model), read once."""
        return self._run(self._core.read_card()).card_json

    def predict(self, rows: Sequence[Row], *, request_id: str | None = None) -> Prediction:
        """POST /v1/predict with rows as dicts keyed by feature name or lists in the card's order."""
        return self._run(self._core.predict(rows, request_id))

    def infer(self, rows: Sequence[Row], *, binary: bool = True, request_id: str | None = None) -> Prediction:
        """POST /v2/models/{name}/infer (Open Inference Protocol), as binary tensor data unless `binary=False`."""
        return self._run(self._core.infer(rows, request_id, binary=binary))

    def _run(self, call: Call[T]) -> T:
        outcome: Outcome = None
        try:
            while True:
                step = call.send(outcome)
                if isinstance(step, _Wait):
                    time.sleep(step.seconds)
                    outcome = None
                    continue
                try:
                    outcome = self._http.request(
                        step.method,
                        step.path,
                        content=step.body,
                        headers=step.headers,
                        timeout=step.timeout_s,
                    )
                except httpx.TransportError as exc:
                    outcome = exc
        except StopIteration as done:
            return cast("T", done.value)


class AsyncClient:
    """Asynchronous client (asyncio); an async context manager (or await `close`)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = 5.0,
        retry: Retry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._core = _Core(url.rstrip("/"), api_key, token, timeout, retry or Retry())
        self._http = httpx.AsyncClient(base_url=self._core.url, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def card(self) -> dict[str, Any]:
        """The model card (GET /v1/model), read once."""
        return (await self._run(self._core.read_card())).card_json

    async def predict(self, rows: Sequence[Row], *, request_id: str | None = None) -> Prediction:
        """POST /v1/predict with rows as dicts keyed by feature name or lists in the card's order."""
        return await self._run(self._core.predict(rows, request_id))

    async def infer(
        self, rows: Sequence[Row], *, binary: bool = True, request_id: str | None = None
    ) -> Prediction:
        """POST /v2/models/{name}/infer (Open Inference Protocol), as binary tensor data unless `binary=False`."""
        return await self._run(self._core.infer(rows, request_id, binary=binary))

    async def _run(self, call: Call[T]) -> T:
        outcome: Outcome = None
        try:
            while True:
                step = call.send(outcome)
                if isinstance(step, _Wait):
                    await asyncio.sleep(step.seconds)
                    outcome = None
                    continue
                try:
                    outcome = await self._http.request(
                        step.method,
                        step.path,
                        content=step.body,
                        headers=step.headers,
                        timeout=step.timeout_s,
                    )
                except httpx.TransportError as exc:
                    outcome = exc
        except StopIteration as done:
            return cast("T", done.value)
