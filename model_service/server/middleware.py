"""The ASGI plumbing: one middleware for the cross-cutting concerns, and the inference routes served raw.

Per request `ServiceMiddleware` assigns the request id, continues the caller's trace
(model_service/operations/tracing.py), sheds load, authenticates, injects rehearsal faults, maps what a
handler raises to the JSON error format (the Open Inference Protocol's on /v2; `_send_exception`, the one
place), and records metrics and one log line. It also serves the raw routes of the route table
(model_service/protocol/routes.py: the two inference routes) itself, body in, JSON bytes out, or binary
tensor data on /v2 (model_service/protocol/v2_binary.py); Starlette serves every other route.

Over 400 lines on purpose: a request's whole path through the service reads top to bottom here, once; what
it uses (the route table, the errors, the body framing, the worker) lives in the rooms it imports.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_service.model.breaker import FallbackResponse
from model_service.model.served import ServedModel
from model_service.operations.logs import exception_fields
from model_service.operations.rate_limit import retry_after
from model_service.operations.tracing import SCOPE_KEY as TRACE_KEY
from model_service.operations.tracing import TRACEPARENT, TRACESTATE, Trace, Tracing
from model_service.protocol.errors import (
    ClientDisconnected,
    InternalError,
    MalformedJSON,
    MethodNotAllowed,
    ModelServiceError,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    ShuttingDown,
    UnsupportedContentEncoding,
    UnsupportedMediaType,
    error_json,
)
from model_service.protocol.routes import PROBES, UNMATCHED, Route, raw_route, route_label, route_of
from model_service.protocol.v2_binary import HEADER as INFERENCE_HEADER_LENGTH
from model_service.protocol.v2_binary import MEDIA_TYPE as BINARY_MEDIA_TYPE
from model_service.protocol.v2_binary import BinaryBody, read_request
from model_service.server.http import ARRIVED, BODY_TIMED_OUT
from model_service.server.worker import Service

REQUEST_ID_HEADER = b"x-request-id"
JSON = "application/json"
_JSON_HEADER = (b"content-type", b"application/json")
RawMatch = tuple[Route, str | None, str | None]
"""A raw route and the model name and version its path names (`raw_route`)."""


def error_body(exc: ModelServiceError, request_id: str, path: str) -> bytes:
    return error_json(exc.code, exc.message, request_id, path)


@dataclass(slots=True)
class RequestHead:
    """What the middleware needs from the raw headers, read in one pass."""

    request_id: str | None = None
    """The client's X-Request-ID when usable (printable ASCII, at most 128 characters)."""
    authorization: bytes | None = None
    api_key: bytes | None = None
    content_type: bytes | None = None
    content_length: bytes | None = None
    content_encoding: bytes | None = None
    inference_header_length: bytes | None = None
    """Inference-Header-Content-Length: the body is JSON then binary tensors
    (model_service/protocol/v2_binary.py)."""
    traceparent: bytes | None = None
    tracestate: bytes | None = None

    @classmethod
    def read(cls, scope: Scope) -> "RequestHead":
        head = cls()
        for name, value in scope["headers"]:
            if name == b"content-type":
                head.content_type = value
            elif name == b"content-length":
                head.content_length = value
            elif name == b"content-encoding":
                head.content_encoding = value
            elif name == REQUEST_ID_HEADER:
                if 0 < len(value) <= 128 and value.isascii() and value.decode().isprintable():
                    head.request_id = value.decode()
            elif name == b"authorization":
                head.authorization = value
            elif name == b"x-api-key":
                head.api_key = value
            elif name == INFERENCE_HEADER_LENGTH:
                head.inference_header_length = value
            elif name == TRACEPARENT:
                head.traceparent = value
            elif name == TRACESTATE:
                head.tracestate = value
        return head


class ServiceMiddleware:
    """Request id, trace context, load shedding, auth, fault injection, the inference routes, error
    mapping, metrics and the request log."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        self.tracing = Tracing.from_environment(service.log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        head = RequestHead.read(scope)
        scope["request_id"] = head.request_id or self.service.next_request_id()
        tracing = self.tracing
        # Nothing to trace, nothing spent on it; probes are never traced (kubelet's would flood the traces).
        if (head.traceparent is None and not tracing.exporting) or scope["path"] in PROBES:
            await self._dispatch(scope, receive, send, head, started)
            return
        trace = tracing.start(head.traceparent, head.tracestate, self.service.model)
        if trace is None:  # an invalid traceparent is ignored (W3C Trace Context 3.2.2)
            await self._dispatch(scope, receive, send, head, started)
            return
        scope[TRACE_KEY] = trace
        try:
            await self._dispatch(scope, receive, send, head, started)
        finally:
            tracing.end(trace, scope["method"])

    async def _dispatch(
        self, scope: Scope, receive: Receive, send: Send, head: RequestHead, started: float
    ) -> None:
        service = self.service
        path: str = scope["path"]
        model = service.model
        if path in PROBES:
            status = await self._call(scope, receive, send)
            if service.settings.log_probes and model is not None:
                self._record(scope, route_label(path), status, started, model)
            return
        if model is None:
            await _send_error(send, NotReady("model not loaded yet; poll /readyz"), scope)
            return
        raw = raw_route(path)
        if await self._shed_if_queued(scope, send, raw, started, model):
            return
        if raw is not None:
            await self._inference(scope, receive, send, raw=raw, head=head, model=model, started=started)
            return
        await self._route(scope, receive, send, head=head, model=model, started=started)

    async def _route(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        head: RequestHead,
        model: ServedModel,
        started: float,
    ) -> None:
        """Every other route, through Starlette, counted in flight."""
        service = self.service
        path: str = scope["path"]
        if service.in_flight >= service.settings.max_in_flight:
            status = await self._shed(send, scope)
            self._record(scope, route_label(path), status, started, model)
            return
        route = UNMATCHED
        service.in_flight += 1
        status = 500
        try:
            if service.gated:
                await self._admit(scope, head, route_of(path))
            if service.faults_enabled:
                await service.inject_fault()
            status = await self._call(scope, receive, send)
            route = route_label(path) if "route" in scope or status != 404 else UNMATCHED
        except (Exception, asyncio.CancelledError) as exc:
            status = await self._send_exception(send, exc, scope)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            service.in_flight -= 1
            self._record(scope, route, status, started, model)

    async def _inference(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        raw: RawMatch,
        head: RequestHead,
        model: ServedModel,
        started: float,
    ) -> None:
        """Authenticate, read the body, then (and only then) count the request in flight and predict:
        a client still sending its body holds no slot of `max_in_flight` (the body deadline bounds it)."""
        service = self.service
        request_id: str = scope["request_id"]
        path: str = scope["path"]
        route, name, version = raw
        counted = False
        status = 500
        try:
            if service.gated:
                await self._admit(scope, head, route)
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"method {scope['method']} not allowed on {path}", {"Allow": "POST"})
            data = await _read_body(scope, receive, head, service.settings.max_body_bytes)
            if time.perf_counter() - scope.get(ARRIVED, started) > service.max_queue_delay_s:
                status = await self._shed(send, scope, queued=True)  # the body waited for the loop
                return
            if service.in_flight >= service.settings.max_in_flight:
                status = await self._shed(send, scope)
                return
            body = _parse(data, head, v2=name is not None)
            service.in_flight += 1
            counted = True
            if service.faults_enabled:
                await service.inject_fault()
            if name is not None:
                model.check_model(name, version)
            # The table names the ServedModel method that answers (predict, v2_infer).
            response: bytes | BinaryBody = getattr(model, route.endpoint)(body, request_id)
            status = await _send_answer(send, response, scope)
        except (Exception, asyncio.CancelledError) as exc:
            status = await self._send_exception(send, exc, scope)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if counted:
                service.in_flight -= 1
            self._record(scope, route.path, status, started, model)
            if model.capture is not None:  # a sampled answer goes to the capture's writer once sent
                trace: Trace | None = scope.get(TRACE_KEY)
                elapsed_ms = (time.perf_counter() - started) * 1000
                trace_id = trace.trace_id if trace is not None else None
                model.capture.release(request_id, trace_id, status, elapsed_ms)

    async def _admit(self, scope: Scope, head: RequestHead, route: Route | None) -> None:
        """Authenticate (401), check the route's scope (403), take a token from the client's bucket (429);
        raises the refusal. With auth on, the open routes need nothing; with auth off, the client is the
        remote address."""
        service = self.service
        auth, limiter = service.auth, service.rate_limiter
        client = None
        if auth is not None:
            if route is not None and route.open:
                return
            principal = await auth.authenticate(head.authorization, head.api_key)
            principal.require(auth.scope(route.scope if route is not None else None))
            client = principal.client
        if limiter is not None:
            if client is None:
                client = f"ip:{scope['client'][0]}" if scope.get("client") else "ip:unknown"
            wait = limiter.take(client)
            if wait:
                label = route.path if route is not None else UNMATCHED
                self.service.served().metrics.count_rate_limited(label)
                rate, burst = limiter.limit(client)
                message = (
                    f"rate limit of {client} reached ({rate:g} requests/s, burst {burst:g}, per worker); "
                    "retry after Retry-After seconds"
                )
                raise RateLimited(message, {"Retry-After": retry_after(wait)})

    async def _shed_if_queued(
        self,
        scope: Scope,
        send: Send,
        raw: RawMatch | None,
        started: float,
        model: ServedModel,
    ) -> bool:
        """Shed a request that waited for the event loop longer than allowed: the CPU is the bottleneck.
        Answering now costs far less than predicting, so the queue drains and probes keep their turn."""
        if started - scope.get(ARRIVED, started) <= self.service.max_queue_delay_s:
            return False
        status = await self._shed(send, scope, queued=True)
        self._record(scope, raw[0].path if raw else route_label(scope["path"]), status, started, model)
        return True

    async def _shed(self, send: Send, scope: Scope, *, queued: bool = False) -> int:
        settings = self.service.settings
        retry = {"Retry-After": str(settings.retry_after_s)}
        message = (
            f"queued longer than {settings.max_queue_delay_ms:g} ms before it could start; retry after the delay"
            if queued
            else f"more than {settings.max_in_flight} requests in flight; retry after the delay"
        )
        return await _send_error(send, Overloaded(message, retry), scope)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Run Starlette for the other routes, adding the request id (and trace) headers; errors it raises
        become JSON responses, unexpected ones a bare 500 (no trace). Returns the status sent."""
        status = 0
        ids = _id_headers(scope)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *ids]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:  # noqa: BLE001 - answered in one place, unless Starlette has answered
            if not status:
                return await self._send_exception(send, exc, scope)
        return status or 500

    async def _send_exception(self, send: Send, exc: BaseException, scope: Scope) -> int:
        """The one mapping of what a handler raised to an answer: a `ModelServiceError` as its status and
        JSON; a cancellation (uvicorn's graceful-shutdown timeout) as 503 `shutting_down`, JSON rather than
        uvicorn's text 500; anything else as a bare 500, the error in the log under the request id (never
        a stack trace to the client). Returns the status sent."""
        if isinstance(exc, ModelServiceError):
            return await _send_error(send, exc, scope)
        if isinstance(exc, asyncio.CancelledError):
            return await _send_error(send, ShuttingDown(), scope)
        trace: Trace | None = scope.get(TRACE_KEY)
        self.service.log.event(
            "ERROR",
            "unhandled_exception",
            request_id=scope["request_id"],
            trace_id=trace.trace_id if trace is not None else None,
            path=scope["path"],
            **exception_fields(exc),  # the traceback locates it; the client gets the request id only
        )
        internal = InternalError("internal error; the service log has the details under this request_id")
        return await _send_error(send, internal, scope)

    def _record(self, scope: Scope, route: str, status: int, started: float, model: ServedModel) -> None:
        elapsed = time.perf_counter() - started
        model.metrics.observe_request(route, status, elapsed)
        trace: Trace | None = scope.get(TRACE_KEY)
        if trace is not None:
            trace.route, trace.status, trace.version = route, status, model.card.version
        self.service.log.request(
            request_id=scope["request_id"],
            method=scope["method"],
            route=route,
            status=status,
            latency_ms=elapsed * 1000,
            version=model.card.version,
            trace_id=trace.trace_id if trace is not None else None,
        )


async def _read_body(scope: Scope, receive: Receive, head: RequestHead, limit: int) -> bytes:
    # A missing Content-Type is read as JSON: some Open Inference Protocol clients send none.
    content_type, content_length = head.content_type, head.content_length
    if content_type is not None and content_type != b"application/json":
        media_type = content_type.decode("latin-1")
        essence = media_type.partition(";")[0].strip().lower()
        if essence != JSON and (essence != BINARY_MEDIA_TYPE or head.inference_header_length is None):
            raise UnsupportedMediaType(media_type)
    if head.content_encoding is not None and head.content_encoding.strip().lower() not in (b"", b"identity"):
        raise UnsupportedContentEncoding(head.content_encoding.decode("latin-1"))
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise PayloadTooLarge(limit)
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and message["type"] == "http.request":
        if len(body) > limit:
            raise PayloadTooLarge(limit)
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        chunks.append(chunk)
    if message["type"] == "http.disconnect":
        if scope.get(BODY_TIMED_OUT):
            raise RequestTimeout("request body not complete within MODEL_SERVICE_BODY_TIMEOUT_S")
        raise ClientDisconnected()
    return b"".join(chunks)


def _parse(raw: bytes, head: RequestHead, *, v2: bool) -> Any:
    """The request body: JSON, or on v2 JSON followed by binary tensors when the header says so."""
    if v2 and head.inference_header_length is not None:
        return read_request(raw, head.inference_header_length)
    return _loads(raw)


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"body is not valid JSON: {exc}") from None


def _id_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """X-Request-ID, and the response's traceparent when the request is traced."""
    ids = [(REQUEST_ID_HEADER, scope["request_id"].encode())]
    trace: Trace | None = scope.get(TRACE_KEY)
    if trace is not None:
        ids.append((TRACEPARENT, trace.header))
    return ids


async def _send_json(
    send: Send, status: int, body: bytes, scope: Scope, headers: dict[str, str] | None = None
) -> int:
    """One JSON response with the request id (and trace) headers; returns the status."""
    raw_headers = [
        _JSON_HEADER,
        (b"content-length", b"%d" % len(body)),
        (REQUEST_ID_HEADER, scope["request_id"].encode()),
    ]
    trace: Trace | None = scope.get(TRACE_KEY)
    if trace is not None:
        raw_headers.append((TRACEPARENT, trace.header))
    if headers:
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
    return status


async def _send_answer(send: Send, response: bytes | BinaryBody, scope: Scope) -> int:
    """A 200 with the inference answer: JSON, or (binary tensor data extension) JSON and then tensors,
    the JSON object's length in Inference-Header-Content-Length."""
    if type(response) is bytes:
        return await _send_json(send, 200, response, scope)
    if isinstance(response, FallbackResponse):  # a fallback's JSON answer, with the header that says so
        return await _send_json(send, 200, response, scope, response.headers)
    assert isinstance(response, BinaryBody)
    headers = [
        (b"content-type", BINARY_MEDIA_TYPE.encode()),
        (b"content-length", b"%d" % len(response.body)),
        (INFERENCE_HEADER_LENGTH, b"%d" % response.header_length),
        *_id_headers(scope),
        *[(k.lower().encode(), v.encode()) for k, v in (response.headers or {}).items()],
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
    return 200


async def _send_error(send: Send, exc: ModelServiceError, scope: Scope) -> int:
    body = error_body(exc, scope["request_id"], scope["path"])
    return await _send_json(send, exc.status_code, body, scope, exc.headers)


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's routing errors (unknown path, wrong method) in the same JSON format."""
    assert isinstance(exc, HTTPException)
    error: ModelServiceError
    if exc.status_code == 405:
        error = MethodNotAllowed(f"method {request.method} not allowed on {request.url.path}")
    else:
        error = NotFound(f"no route {request.url.path}; see /openapi.json")
    headers = dict(exc.headers or {})
    return Response(
        error_body(error, request.scope["request_id"], request.url.path),
        status_code=error.status_code,
        headers=headers,
        media_type=JSON,
    )
