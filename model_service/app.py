"""The app factory: Starlette routes, one ASGI middleware for the cross-cutting concerns, lifespan loading.

Per request the middleware assigns the request id, sheds load, authenticates, injects rehearsal faults,
maps `ModelServiceError` to the JSON error format, and records metrics and one log line. It also serves
the two inference routes itself (body in, JSON bytes out), without Starlette's routing, Request and
Response objects: on the hot path those cost about 20 µs per request, as much as parsing, validating
and predicting together (measured with `nox -s bench`). Starlette serves every other route.
"""

import asyncio
import contextlib
import itertools
import os
import random
import signal
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import numpy as np
import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_service.auth import Authenticator
from model_service.card import ModelCard, load_card
from model_service.drift import DriftCounters, InputSampler, invert_scores, parse_sensitive
from model_service.errors import (
    ClientDisconnected,
    InjectedFault,
    InternalError,
    InvalidInput,
    MalformedJSON,
    MethodNotAllowed,
    ModelNotFound,
    ModelServiceError,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from model_service.logs import JsonLog
from model_service.metrics import Metrics
from model_service.openapi import build_openapi, docs_html
from model_service.runtime import OnnxModel
from model_service.schemas import RowParser
from model_service.settings import ServiceSettings

PROBES = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
OPEN = PROBES | {"/docs", "/openapi.json"}  # the docs page fetches /openapi.json without credentials
_STATIC_ROUTES = frozenset({"/v1/predict", "/v1/model", "/v2", "/docs", "/openapi.json"}) | PROBES
_V2_MODELS = "/v2/models/"
_V2_INFER = "/v2/models/{name}/infer"
_V2_MODEL_SUFFIXES = (("/infer", _V2_INFER), ("/ready", "/v2/models/{name}/ready"))
REQUEST_ID_HEADER = b"x-request-id"
_JSON = "application/json"
_JSON_HEADER = (b"content-type", b"application/json")
FLUSH_INTERVAL_S = 0.5
"""Logs and metrics are written in bulk this often (and /metrics flushes its own worker first)."""


def route_label(path: str) -> str:
    """Bounded metric label for a path (unknown paths share one label)."""
    if path in _STATIC_ROUTES:
        return path
    if path.startswith(_V2_MODELS):
        for suffix, label in _V2_MODEL_SUFFIXES:
            if path.endswith(suffix):
                return label
        return "/v2/models/{name}"
    return "unmatched"


def inference_route(path: str) -> tuple[str, str | None, str | None] | None:
    """(metric label, model name, model version) of an inference path the middleware serves itself.

    `/v1/predict` has no name; `/v2/models/{name}[/versions/{version}]/infer` names the model (a name
    or version holds no `/`, as in Starlette's routes). Any other path: None."""
    if path == "/v1/predict":
        return path, None, None
    if path.startswith(_V2_MODELS) and path.endswith("/infer"):
        parts = path[len(_V2_MODELS) : -len("/infer")].split("/")
        if len(parts) == 1 and parts[0]:
            return _V2_INFER, parts[0], None
        if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
            return _V2_INFER, parts[0], parts[2]
    return None


def error_body(exc: ModelServiceError, request_id: str) -> bytes:
    return orjson.dumps({"error": {"code": exc.code, "message": exc.message, "request_id": request_id}})


class Service:
    """Everything one worker serves. Built empty by `create_app`; `start` loads the model in lifespan."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.faults_enabled = settings.faults_enabled
        self.log = JsonLog()
        self.ready = False
        self.draining = False
        self.in_flight = 0
        self.model: OnnxModel | None = None
        self._ids = itertools.count()
        self._id_prefix = f"{os.getpid():x}{random.getrandbits(16):04x}-"
        self._random = random.Random()

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        settings = self.settings
        card = load_card(settings.model_dir)
        model = OnnxModel(card, settings.intra_op_threads, settings.inter_op_threads)
        model.warm_up()
        self.card: ModelCard = card
        self.parser = RowParser(card.features, model.dtype, settings.max_rows)
        self.auth = Authenticator(settings) if settings.auth_enabled else None
        self.metrics = Metrics(card.name, card.version, card.sha256)
        self.metrics.bind(
            ["/v1/predict", "/v2/models/{name}/infer", "/v1/model"], [200, 400, 401, 413, 415, 422, 500, 503]
        )
        self._start_drift(card)
        self.model_ref = {"name": card.name, "version": card.version}
        self.card_json = orjson.dumps(card.raw)
        self.openapi_json = orjson.dumps(build_openapi(card, settings.auth_enabled))
        self.docs_html = docs_html(card)
        self.v2_metadata = orjson.dumps(self._v2_metadata(model))
        self.model = model
        self.ready = True

    def _start_drift(self, card: ModelCard) -> None:
        """Drift counters when the card has a reference profile (older cards: off); opt-in input sampling."""
        settings = self.settings
        reference = card.raw.get("reference")
        self.drift = (
            DriftCounters(
                reference, card.features, card.classes, settings.drift_window, self.metrics.registry
            )
            if isinstance(reference, dict)
            else None
        )
        self._classes = np.asarray(card.classes)
        self.inputs = (
            InputSampler(
                card.features,
                settings.log_inputs_sample_ratio,
                parse_sensitive(settings.log_inputs_sensitive),
                seed=os.getpid(),
            )
            if settings.log_inputs
            else None
        )

    def _v2_metadata(self, model: OnnxModel) -> dict[str, Any]:
        card = self.card
        datatype = "FP32" if card.input_dtype == "float32" else "FP64"
        return {
            "name": card.name,
            "versions": [card.version],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": card.input_name, "datatype": datatype, "shape": [-1, card.n_features]}],
            "outputs": [
                {"name": card.label_output, "datatype": model.label_datatype, "shape": [-1]},
                {"name": card.probabilities_output, "datatype": datatype, "shape": [-1, len(card.classes)]},
            ],
        }

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

    # -- inference (served by the middleware: JSON body in, JSON bytes out) --------------------------
    def _infer(self, rows: Any) -> tuple[Any, Any]:
        assert self.model is not None  # the middleware answers 503 until the model is loaded
        started = time.perf_counter()
        predictions, probabilities = self.model.predict(rows)
        self.metrics.observe_inference(time.perf_counter() - started, len(rows))
        if self.settings.fault_invert_scores:
            predictions, probabilities = invert_scores(probabilities, self._classes)
        if self.drift is not None:
            self.drift.observe(rows, probabilities)
        if self.inputs is not None:
            for record in self.inputs.sample(rows, predictions):
                self.log.event("INFO", "input", model_version=self.card.version, **record)
        return predictions, probabilities

    def predict(self, body: Any, request_id: str) -> bytes:
        rows = self.parser.v1(body)
        predictions, probabilities = self._infer(rows)
        response = {
            "request_id": request_id,
            "model": self.model_ref,
            "predictions": predictions,
            "probabilities": probabilities,
        }
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)

    def check_model(self, name: str, version: str | None) -> None:
        if name != self.card.name:
            raise ModelNotFound(name, self.card.name)
        if version is not None and version != self.card.version:
            raise ModelNotFound(f"{name}/{version}", f"{self.card.name}/{self.card.version}")

    def v2_infer(self, body: Any, request_id: str) -> bytes:
        if type(body) is not dict:
            raise InvalidInput("body: expected an object with 'inputs' (Open Inference Protocol v2)")
        inputs = body.get("inputs")
        if type(inputs) is not list or len(inputs) != 1:
            raise InvalidInput(f"inputs: expected a list with 1 tensor named {self.card.input_name!r}")
        request_id = body.get("id", request_id)
        if type(request_id) is not str:
            raise InvalidInput("id: expected a string")
        wanted = self._requested_outputs(body.get("outputs"))
        rows = self.parser.v2(inputs[0], self.card.input_name)
        predictions, probabilities = self._infer(rows)
        assert self.model is not None
        card = self.card
        outputs = []
        if card.label_output in wanted:
            outputs.append(
                {
                    "name": card.label_output,
                    "datatype": self.model.label_datatype,
                    "shape": [len(rows)],
                    "data": predictions,
                }
            )
        if card.probabilities_output in wanted:
            outputs.append(
                {
                    "name": card.probabilities_output,
                    "datatype": "FP32" if probabilities.dtype == "float32" else "FP64",
                    "shape": list(probabilities.shape),
                    "data": probabilities.ravel(),
                }
            )
        response = {
            "model_name": card.name,
            "model_version": card.version,
            "id": request_id,
            "outputs": outputs,
        }
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)

    def _requested_outputs(self, outputs: object) -> set[str]:
        known = {self.card.label_output, self.card.probabilities_output}
        if outputs is None:
            return known
        if type(outputs) is not list:
            raise InvalidInput(f"outputs: expected a list of objects with a name in {sorted(known)}")
        wanted = set()
        for i, output in enumerate(outputs):
            name = output.get("name") if type(output) is dict else None
            if name not in known:
                raise InvalidInput(f"outputs[{i}].name: expected one of {sorted(known)}, got {name!r}")
            wanted.add(name)
        return wanted

    # -- the other routes (Starlette) ----------------------------------------------------------------
    async def model_card(self, request: Request) -> Response:
        return Response(self.card_json, media_type=_JSON)

    async def v2_model(self, request: Request) -> Response:
        self.check_model(request.path_params["name"], request.path_params.get("version"))
        return Response(self.v2_metadata, media_type=_JSON)

    async def v2_model_ready(self, request: Request) -> Response:
        self.check_model(request.path_params["name"], request.path_params.get("version"))
        return self._readiness(b'{"name": %s, "ready": true}' % orjson.dumps(self.card.name))

    async def v2_server(self, request: Request) -> Response:
        return Response(b'{"name":"model-service","version":"1","extensions":[]}', media_type=_JSON)

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def v2_live(self, request: Request) -> Response:
        return Response(b'{"live":true}', media_type=_JSON)

    async def readyz(self, request: Request) -> Response:
        return self._readiness(b'{"status":"ready"}')

    async def v2_ready(self, request: Request) -> Response:
        return self._readiness(b'{"ready":true}')

    def _readiness(self, body: bytes) -> Response:
        if not self.ready or self.draining:
            raise NotReady(
                "not ready (loading or shutting down); poll /readyz",
                {"Retry-After": str(self.settings.retry_after_s)},
            )
        return Response(body, media_type=_JSON)

    def flush_metrics(self) -> None:
        self.metrics.flush(self.in_flight)
        if self.drift is not None:
            self.drift.flush()

    async def metrics_endpoint(self, request: Request) -> Response:
        self.flush_metrics()
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return Response(self.openapi_json, media_type=_JSON)

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(self.docs_html)


@dataclass(slots=True)
class RequestHead:
    """What the middleware needs from the raw headers, read in one pass."""

    request_id: str | None = None
    """The client's X-Request-ID when usable (printable ASCII, at most 128 characters)."""
    authorization: bytes | None = None
    api_key: bytes | None = None
    content_type: bytes | None = None
    content_length: bytes | None = None

    @classmethod
    def read(cls, scope: Scope) -> "RequestHead":
        head = cls()
        for name, value in scope["headers"]:
            if name == b"content-type":
                head.content_type = value
            elif name == b"content-length":
                head.content_length = value
            elif name == REQUEST_ID_HEADER:
                if 0 < len(value) <= 128 and value.isascii() and value.decode().isprintable():
                    head.request_id = value.decode()
            elif name == b"authorization":
                head.authorization = value
            elif name == b"x-api-key":
                head.api_key = value
        return head


class ServiceMiddleware:
    """Request id, load shedding, auth, fault injection, the inference routes, error mapping, metrics
    and the request log."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        service = self.service
        head = RequestHead.read(scope)
        request_id = head.request_id or service.next_request_id()
        scope["request_id"] = request_id
        path: str = scope["path"]
        if path in PROBES:
            status = await self._call(scope, receive, send, request_id)
            if service.settings.log_probes and service.model is not None:
                self._record(scope, route_label(path), status, started, request_id)
            return
        if service.model is None:
            await _send_error(send, NotReady("model not loaded yet; poll /readyz"), request_id)
            return
        inference = inference_route(path)
        route = inference[0] if inference is not None else None
        if service.in_flight >= service.settings.max_in_flight:
            retry = {"Retry-After": str(service.settings.retry_after_s)}
            message = f"more than {service.settings.max_in_flight} requests in flight; retry after the delay"
            status = await _send_error(send, Overloaded(message, retry), request_id)
            self._record(scope, route or route_label(path), status, started, request_id)
            return
        service.in_flight += 1
        status = 500
        try:
            if service.auth is not None and path not in OPEN:
                service.auth.check(head.authorization, head.api_key)
            if service.faults_enabled:
                await service.inject_fault()
            if inference is None:
                status = await self._call(scope, receive, send, request_id)
                route = route_label(path) if "route" in scope or status != 404 else "unmatched"
            else:
                status = await self._serve_inference(scope, receive, send, inference, head)
        except ModelServiceError as exc:
            status = await _send_error(send, exc, request_id)
        except Exception as exc:  # noqa: BLE001 - the client gets a bare 500, the log gets the error
            status = await self._internal_error(send, exc, path, request_id)
        finally:
            service.in_flight -= 1
            self._record(scope, route or "unmatched", status, started, request_id)

    async def _serve_inference(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        inference: tuple[str, str | None, str | None],
        head: RequestHead,
    ) -> int:
        """Read the JSON body, predict, answer 200 with JSON; errors raise `ModelServiceError`."""
        request_id: str = scope["request_id"]
        if scope["method"] != "POST":
            raise MethodNotAllowed(
                f"method {scope['method']} not allowed on {scope['path']}", {"Allow": "POST"}
            )
        service = self.service
        body = _loads(await _read_body(receive, head, service.settings.max_body_bytes))
        _, name, version = inference
        if name is None:
            response = service.predict(body, request_id)
        else:
            service.check_model(name, version)
            response = service.v2_infer(body, request_id)
        return await _send_json(send, 200, response, request_id)

    async def _call(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> int:
        """Run Starlette for the other routes, adding the request id header; errors it raises become
        JSON responses, unexpected ones a bare 500 (no trace). Returns the status sent."""
        status = 0
        id_header = (REQUEST_ID_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ModelServiceError as exc:
            if not status:
                return await _send_error(send, exc, request_id)
        except Exception as exc:  # noqa: BLE001 - the client gets a bare 500, the log gets the error
            if not status:
                return await self._internal_error(send, exc, scope["path"], request_id)
        return status or 500

    async def _internal_error(self, send: Send, exc: Exception, path: str, request_id: str) -> int:
        self.service.log.event(
            "ERROR",
            "unhandled_exception",
            request_id=request_id,
            path=path,
            error=f"{type(exc).__name__}: {exc}",
        )
        internal = InternalError("internal error; the service log has the details under this request_id")
        return await _send_error(send, internal, request_id)

    def _record(self, scope: Scope, route: str, status: int, started: float, request_id: str) -> None:
        service = self.service
        elapsed = time.perf_counter() - started
        service.metrics.observe_request(route, status, elapsed)
        service.log.request(
            request_id=request_id,
            method=scope["method"],
            route=route,
            status=status,
            latency_ms=elapsed * 1000,
            version=service.card.version,
        )


async def _read_body(receive: Receive, head: RequestHead, limit: int) -> bytes:
    # A missing Content-Type is read as JSON: some Open Inference Protocol clients send none.
    content_type, content_length = head.content_type, head.content_length
    if content_type is not None and content_type != b"application/json":
        media_type = content_type.decode("latin-1")
        if media_type.partition(";")[0].strip().lower() != _JSON:
            raise UnsupportedMediaType(media_type)
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
        raise ClientDisconnected()
    return b"".join(chunks)


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"body is not valid JSON: {exc}") from None


async def _send_json(
    send: Send, status: int, body: bytes, request_id: str, headers: dict[str, str] | None = None
) -> int:
    """One JSON response with the request id header; returns the status."""
    raw_headers = [
        _JSON_HEADER,
        (b"content-length", b"%d" % len(body)),
        (REQUEST_ID_HEADER, request_id.encode()),
    ]
    if headers:
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
    return status


async def _send_error(send: Send, exc: ModelServiceError, request_id: str) -> int:
    return await _send_json(send, exc.status_code, error_body(exc, request_id), request_id, exc.headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Routing errors (unknown path, wrong method) in the same JSON format."""
    assert isinstance(exc, HTTPException)
    error: ModelServiceError
    if exc.status_code == 405:
        error = MethodNotAllowed(f"method {request.method} not allowed on {request.url.path}")
    else:
        error = NotFound(f"no route {request.url.path}; see /openapi.json")
    headers = dict(exc.headers or {})
    return Response(
        error_body(error, request.scope["request_id"]),
        status_code=error.status_code,
        headers=headers,
        media_type=_JSON,
    )


def create_app(settings: ServiceSettings | None = None) -> Starlette:
    """Build the app; nothing is loaded until lifespan start-up (settings default to the environment)."""
    service = Service(settings if settings is not None else ServiceSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start()
        flusher = asyncio.create_task(_flush_periodically(service))
        service.drain_on_sigterm()
        card = service.card
        service.log.event("INFO", "started", model=card.name, model_version=card.version, pid=os.getpid())
        if service.settings.faults_enabled:
            service.log.event(
                "WARNING",
                "fault_injection_on",
                message="FAULT INJECTION IS ON: this instance adds latency, fails requests and/or inverts scores on purpose",
                fault_latency_ms=service.settings.fault_latency_ms,
                fault_error_ratio=service.settings.fault_error_ratio,
                fault_invert_scores=service.settings.fault_invert_scores,
            )
        try:
            yield
        finally:
            service.ready = False
            flusher.cancel()
            service.flush_metrics()  # this worker's last counts
            service.log.event("INFO", "stopped", pid=os.getpid())
            Metrics.mark_worker_gone()

    # POST /v1/predict and /v2/models/{name}[/versions/{version}]/infer: served by the middleware.
    model_routes = [
        Route("/v2/models/{name}", service.v2_model, methods=["GET"]),
        Route("/v2/models/{name}/ready", service.v2_model_ready, methods=["GET"]),
    ]
    versioned = [
        Route(
            route.path.replace("{name}", "{name}/versions/{version}"), route.endpoint, methods=route.methods
        )
        for route in model_routes
    ]
    routes = [
        # V1
        Route("/v1/model", service.model_card, methods=["GET"]),
        # Open Inference Protocol v2
        Route("/v2", service.v2_server, methods=["GET"]),
        Route("/v2/health/live", service.v2_live, methods=["GET"]),
        Route("/v2/health/ready", service.v2_ready, methods=["GET"]),
        *model_routes,
        *versioned,
        # Operations
        Route("/healthz", service.healthz, methods=["GET"]),
        Route("/readyz", service.readyz, methods=["GET"]),
        Route("/metrics", service.metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", service.openapi, methods=["GET"]),
        Route("/docs", service.docs, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ServiceMiddleware, service=service)],
        exception_handlers={HTTPException: _http_exception},
        lifespan=lifespan,
    )
    app.state.service = service
    return app


async def _flush_periodically(service: Service) -> None:
    """Write the buffered log lines and add the counted requests to the metrics: with several workers
    /metrics reads every worker's multiprocess files, so each keeps its share current."""
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        service.log.flush()
        service.flush_metrics()
