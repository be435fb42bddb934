"""Per-client rate limits: a token bucket per client, per worker process.

Each client (an API key, a token's subject, or with auth off a remote address; `auth.Principal.client`)
holds up to `burst` tokens, refilled at `rate` per second; a request takes one or is refused with the
seconds until one is back (429 with Retry-After). The buckets live in the worker: a client spreading its
connections over W workers may send up to W times the rate to a pod (docs/service.md, Rate limits). Sharing
the buckets would cost a lock or a round trip per request on the hot path, where this costs a dict lookup
and a few float operations (benchmarks/rate_limit.py).
"""

import itertools
import math
import time
from collections.abc import Callable, Mapping


class RateLimiter:
    """Token buckets by client id; `take(client)` is 0.0 when the request may go, else the wait in seconds."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clients: Mapping[str, tuple[float, int]] | None = None,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default = (rate, float(burst or math.ceil(rate)))
        self._limits = {client: (r, float(b)) for client, (r, b) in (clients or {}).items()}
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}
        """client -> [tokens left, when they were counted]."""

    def take(self, client: str) -> float:
        now = self._clock()
        bucket = self._buckets.get(client)
        rate, burst = self._limits.get(client, self._default)
        if bucket is None:
            if len(self._buckets) >= self._max_clients:
                self._forget(now)
            self._buckets[client] = [burst - 1.0, now]
            return 0.0
        tokens = bucket[0] + (now - bucket[1]) * rate
        tokens = min(tokens, burst)
        if tokens >= 1.0:
            bucket[0], bucket[1] = tokens - 1.0, now
            return 0.0
        bucket[0], bucket[1] = tokens, now
        return (1.0 - tokens) / rate

    def limit(self, client: str) -> tuple[float, float]:
        """The client's (rate, burst)."""
        return self._limits.get(client, self._default)

    def _forget(self, now: float) -> None:
        """Make room: drop every bucket that has refilled (a full bucket is what a new client gets, so
        nothing is lost); if none has, the oldest clients' (they start again with a full burst)."""
        limits, default = self._limits, self._default
        full = []
        for client, (tokens, counted) in self._buckets.items():
            rate, burst = limits.get(client, default)
            if tokens + (now - counted) * rate >= burst:
                full.append(client)
        if not full:  # a tenth at once, so the scan above runs once per max_clients / 10 new clients
            full = list(itertools.islice(self._buckets, max(1, self._max_clients // 10)))
        for client in full:
            del self._buckets[client]

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(wait_s: float) -> str:
    """Retry-After as RFC 9110 10.2.3 delay-seconds (a non-negative integer), rounded up: a client that
    waits that long finds a token."""
    return str(max(1, math.ceil(wait_s)))
