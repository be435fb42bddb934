"""Domain errors carry their HTTP status and error code; `error_json` is their one JSON form."""

from typing import ClassVar

import orjson


def is_v2(path: str) -> bool:
    """True for the Open Inference Protocol's routes, whose errors take the protocol's shape."""
    return path == "/v2" or path.startswith("/v2/")


def error_json(code: str, message: str, request_id: str, path: str) -> bytes:
    """An error body: `{"error": "<message>"}` on /v2 routes, the project's object everywhere else.

    The Open Inference Protocol (KServe docs/predict-api/v2/required_api.md, "Inference Response JSON
    Error Object"; the same for server and model metadata) says "The HTTP body must contain the
    $inference_error_response object", `{"error": <error message string>}`. A v2 client shows that
    string, so nothing else goes in: the status carries the class, X-Request-ID the request id.
    """
    if is_v2(path):
        return orjson.dumps({"error": message})
    return orjson.dumps({"error": {"code": code, "message": message, "request_id": request_id}})


class ModelServiceError(Exception):
    """Base class: `status_code` and `code` go to the client, `headers` (if any) with them."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class MalformedJSON(ModelServiceError):
    status_code = 400
    code = "malformed_json"


class MalformedBinaryData(ModelServiceError):
    """A binary tensor data request (model_service/protocol/v2_binary.py) whose framing does not add up."""

    status_code = 400
    code = "malformed_binary_data"


class Unauthorized(ModelServiceError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ModelServiceError):
    """Authenticated, but the credential does not grant the route's scope."""

    status_code = 403
    code = "forbidden"


class NotFound(ModelServiceError):
    status_code = 404
    code = "not_found"


class CaptureOff(ModelServiceError):
    """POST /v1/feedback on a service without a capture (MODEL_SERVICE_CAPTURE_DIR unset): nothing to join
    a label to."""

    status_code = 404
    code = "capture_off"


class ModelNotFound(ModelServiceError):
    status_code = 404
    code = "model_not_found"

    def __init__(self, name: str, served: str) -> None:
        super().__init__(f"model {name!r} not found; this server serves {served!r} (GET /v1/model)")


class MethodNotAllowed(ModelServiceError):
    status_code = 405
    code = "method_not_allowed"


class RequestTimeout(ModelServiceError):
    """The body did not arrive within MODEL_SERVICE_BODY_TIMEOUT_S (the HTTP layer sent the 408 itself)."""

    status_code = 408
    code = "request_timeout"


class PayloadTooLarge(ModelServiceError):
    status_code = 413
    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"request body exceeds {limit} bytes; split the rows over several requests "
            "or raise MODEL_SERVICE_MAX_BODY_BYTES"
        )


class UnsupportedMediaType(ModelServiceError):
    status_code = 415
    code = "unsupported_media_type"

    def __init__(self, got: str) -> None:
        super().__init__(f"expected Content-Type application/json, got {got or 'none'!r}")


class UnsupportedContentEncoding(ModelServiceError):
    """A compressed body (RFC 9110 15.5.16: 415, with Accept-Encoding naming what the server takes)."""

    status_code = 415
    code = "unsupported_content_encoding"

    def __init__(self, got: str) -> None:
        super().__init__(
            f"Content-Encoding {got!r} is not supported; send the JSON body uncompressed",
            {"Accept-Encoding": "identity"},
        )


class InvalidInput(ModelServiceError):
    """The body parsed but does not fit the model: the message names the field and what was expected."""

    status_code = 422
    code = "invalid_input"


class RateLimited(ModelServiceError):
    """The client has spent its request budget (MODEL_SERVICE_RATE_LIMIT_*); Retry-After says when to come back."""

    status_code = 429
    code = "rate_limited"


class ClientDisconnected(ModelServiceError):
    """The client closed the connection before sending the whole body (nginx's 499; no one reads the answer)."""

    status_code = 499
    code = "client_closed_request"

    def __init__(self) -> None:
        super().__init__("the client closed the connection before the request body was complete")


class InjectedFault(ModelServiceError):
    status_code = 500
    code = "injected_fault"

    def __init__(self) -> None:
        super().__init__("fault injected on purpose (MODEL_SERVICE_FAULT_ERROR_RATIO); not a real failure")


class InternalError(ModelServiceError):
    status_code = 500
    code = "internal_error"


class NotReady(ModelServiceError):
    status_code = 503
    code = "not_ready"


class ShuttingDown(ModelServiceError):
    """The graceful-shutdown timeout cut the request short (MODEL_SERVICE_GRACEFUL_TIMEOUT_S)."""

    status_code = 503
    code = "shutting_down"

    def __init__(self) -> None:
        super().__init__(
            "the service stopped before this request finished (MODEL_SERVICE_GRACEFUL_TIMEOUT_S); retry",
            {"Retry-After": "1"},
        )


class Overloaded(ModelServiceError):
    status_code = 503
    code = "overloaded"


class StartupError(Exception):
    """The service must not start; the message is the one-line reason printed before exiting."""
