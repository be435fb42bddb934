"""The client SDK of the service: sync `Client` and async `AsyncClient`, /v1 and /v2, with retries.

A package of its own, outside `model_service`: the service's image does not carry it, and a caller needs
httpx alone (the `client` dependency group) and the card contract (model_service/contract/card.py, standard
library only): no numpy, no onnxruntime.

    from model_client import Client
    with Client("http://127.0.0.1:8000", api_key="...", timeout=2.0) as client:
        answer = client.predict([{"mean radius": 17.99, ...}])   # rows as dicts keyed by feature, or lists
        answer.predictions, answer.probabilities, answer.model_version, answer.request_id

- Typed from the model card (version 2, or version 1 read as all-float features): `client.card()` reads
  GET /v1/model once; rows are lists in the card's feature order or dicts keyed by feature name, and each
  value is checked by its feature's type (float, int, bool, string; null, or NaN, where nullable; a
  category the model refuses) before anything is sent: `RowError`, naming the row and the feature.
- Answers: `predictions` (classes, or a regression's values) and `probabilities` (None for a regression).
- Auth: `api_key` (X-API-Key) or `token` (Authorization: Bearer, a JWT), as docs/service.md describes.
- Request ids: every call sends X-Request-ID (yours, or a new one) and keeps it over its retries, so the
  service's log lines of all attempts share it; the answer carries it.
- `timeout` bounds the whole call, retries and waits included: past it, `ServiceTimeout`.
- Retries: 502/503/504 and connection failures, after a jittered exponential backoff, or after the
  service's Retry-After on a 503 when it gives one; a 429 (this client's rate limit) after its Retry-After;
  never another 4xx (the same request would fail again) nor a 500. At most `Retry.attempts` in all, and a
  wait that would end past the deadline is not started: the last error is raised instead.
- Errors: `ServiceError` subclasses by status (`InvalidInput` for 422, `Unauthorized`, `Forbidden` (a
  token without the route's scope), `NotFound`, `RateLimited` for 429, `Overloaded` for 503, ...) carrying
  the service's error JSON, both /v1's `{"error": {"code", "message", "request_id"}}` and /v2's
  `{"error": "<message>"}`; `InvalidInput.field` is the field the message names.

Modules: client.py (the clients and the one call plan they share: retries, deadlines, request ids),
codec.py (rows checked against the card, request bodies, answers), errors.py (what it raises).
"""

from model_client.client import AsyncClient, Client, Retry
from model_client.codec import Prediction, Row
from model_client.errors import (
    BadRequest,
    ClientError,
    Forbidden,
    InvalidInput,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    RowError,
    ServerError,
    ServiceError,
    ServiceTimeout,
    ServiceUnreachable,
    Unauthorized,
)

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientError",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "Prediction",
    "RateLimited",
    "Retry",
    "Row",
    "RowError",
    "ServerError",
    "ServiceError",
    "ServiceTimeout",
    "ServiceUnreachable",
    "Unauthorized",
]
