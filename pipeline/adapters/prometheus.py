"""Instant queries to a Prometheus HTTP API (`/api/v1/query`): what the promotion policy reads of an
environment's error budget."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT_S = 10.0


class PrometheusError(Exception):
    """The query could not be answered; the message says by whom and why."""


def instant(url: str, promql: str, *, timeout_s: float = TIMEOUT_S) -> float:
    """The value of a query that sums to one number: a one-element vector or a scalar; an empty vector
    (no series: nothing counted) is 0."""
    address = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(address, timeout=timeout_s) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PrometheusError(f"{url} did not answer {promql!r}: {exc}") from None
    if body.get("status") != "success":
        raise PrometheusError(f"{url} refused {promql!r}: {body.get('error', body)}")
    data = body["data"]
    if data["resultType"] == "scalar":
        return float(data["result"][1])
    series = data["result"]
    if len(series) > 1:
        raise PrometheusError(f"{url}: {promql!r} gave {len(series)} series; expected one sum")
    return float(series[0]["value"][1]) if series else 0.0
