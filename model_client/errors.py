"""What the client raises: `ClientError` and, for an answer with an error status, a `ServiceError`
subclass by status carrying the service's error JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx


class ClientError(Exception):
    """Base class of everything the client raises."""


class RowError(ClientError, ValueError):
    """A row does not fit the model card; raised before the request is sent."""


class ServiceTimeout(ClientError, TimeoutError):
    """No answer within the call's `timeout` (retries and waits included)."""


class ServiceUnreachable(ClientError, ConnectionError):
    """The connection failed on every attempt (refused, reset, DNS)."""


class ServiceError(ClientError):
    """The service answered with an error status: `status`, `message`, the `body` (its error JSON), the
    `code` (/v1; on /v2 the protocol carries none: None), the `request_id` and the response headers."""

    status_classes: ClassVar[dict[int, type[ServiceError]]] = {}

    def __init__(self, status: int, body: Any, headers: Mapping[str, str], request_id: str) -> None:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):  # /v1: {"error": {"code", "message", "request_id"}}
            self.code: str | None = str(error.get("code"))
            self.message = str(error.get("message"))
        elif isinstance(error, str):  # /v2: {"error": "<message>"}
            self.code, self.message = None, error
        else:
            self.code, self.message = None, f"HTTP {status} without the service's error JSON: {body!r:.200}"
        self.status = status
        self.body = body
        self.headers = dict(headers)
        self.request_id = request_id
        super().__init__(
            f"{status} {self.code or ''} {self.message} (request {request_id})".replace("  ", " ")
        )

    @classmethod
    def of(cls, response: httpx.Response, request_id: str) -> ServiceError:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        kind = cls.status_classes.get(
            response.status_code, ServerError if response.status_code >= 500 else cls
        )
        return kind(response.status_code, body, response.headers, request_id)


class BadRequest(ServiceError):
    """400: the body is not JSON (or not a binary tensor request)."""


class Unauthorized(ServiceError):
    """401: no or a bad credential."""


class Forbidden(ServiceError):
    """403: the credential is valid but lacks the route's scope (`predict`, `model:read`, `feedback`)."""


class NotFound(ServiceError):
    """404: no such route or model."""


class PayloadTooLarge(ServiceError):
    """413: split the rows over several calls."""


class InvalidInput(ServiceError):
    """422: the rows do not fit the model; `field` is what the message names (`instances[3]`, ...)."""

    @property
    def field(self) -> str:
        return self.message.partition(":")[0]


class RateLimited(ServiceError):
    """429: this client's rate limit; retried after the service's Retry-After while attempts and the
    deadline allow."""


class ServerError(ServiceError):
    """5xx other than the ones below."""


class Overloaded(ServerError):
    """503: shedding load, not ready or shutting down; retried while the deadline allows."""


ServiceError.status_classes.update(
    {
        400: BadRequest,
        401: Unauthorized,
        403: Forbidden,
        404: NotFound,
        413: PayloadTooLarge,
        422: InvalidInput,
        429: RateLimited,
        503: Overloaded,
    }
)
