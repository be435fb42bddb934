"""The SDK and the service's per-client rate limit: a 429 is retried after its Retry-After (RFC 6585 4:
"MAY include a Retry-After header indicating how long to wait"), within the attempts and the deadline;
without Retry-After it is raised at once; a 403 (missing scope) is never retried."""

import random
import time

import httpx
import pytest

from model_client import Forbidden, RateLimited, Retry
from model_client.client import _Attempt, _Core


def _attempt(number: int = 0, attempts: int = 3, deadline_s: float = 60.0) -> _Attempt:
    core = _Core("http://127.0.0.1:1", None, None, deadline_s, Retry(attempts=attempts, backoff_s=0.05))
    return _Attempt(core, number, {}, "rid", deadline_s, time.monotonic() + deadline_s, "POST /v1/predict")


def _limited(retry_after: str | None) -> httpx.Response:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    body = {"error": {"code": "rate_limited", "message": "rate limit of sub:a reached", "request_id": "r"}}
    return httpx.Response(429, json=body, headers=headers)


def test_a_429_waits_its_retry_after() -> None:
    assert 3.0 <= _attempt().failed(_limited("3")) <= 3.05
    assert 3.0 <= Retry(backoff_s=0.05).delay(0, _limited("3"), random.Random(1)) <= 3.05


def test_a_429_is_not_retried_without_retry_after_past_the_attempts_or_the_deadline() -> None:
    with pytest.raises(RateLimited) as raised:
        _attempt().failed(_limited(None))
    assert (raised.value.status, raised.value.code) == (429, "rate_limited")
    with pytest.raises(RateLimited):
        _attempt(number=2, attempts=3).failed(_limited("1"))  # the last attempt
    with pytest.raises(RateLimited):
        _attempt(deadline_s=2.0).failed(_limited("5"))  # would wait past the deadline


def test_a_missing_scope_is_raised_at_once() -> None:
    body = {"error": {"code": "forbidden", "message": "this route needs scope 'predict'", "request_id": "r"}}
    with pytest.raises(Forbidden, match="needs scope 'predict'"):
        _attempt().failed(httpx.Response(403, json=body))
