"""The app factory: `create_app(settings)` builds the Starlette app; the model loads in its lifespan.

The package's rooms: server/ (the worker, the middleware, the HTTP protocol, the event loop, the metrics
process), protocol/ (the route table, request parsing, errors, the v2 binary framing, the OpenAPI
document), model/ (the served model, onnxruntime, the fallback breaker, drift counters), operations/
(settings, auth, metrics, logs, tracing) and contract/ (the card and the monitoring names, shared with the
pipeline). Every route is a row of model_service/protocol/routes.py: Starlette serves the rows below
(`Endpoints`: documents, metadata, probes), the middleware (model_service/server/middleware.py) the raw
ones, inference. /metrics is not among them: model_service/server/metrics_server.py serves it on its own
port, from the files each worker writes every `FLUSH_INTERVAL_S`.
"""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from model_service.operations.capture import parse_feedback, store_feedback
from model_service.operations.metrics import FLUSH_INTERVAL_S, Metrics
from model_service.operations.settings import ServiceSettings
from model_service.protocol.errors import CaptureOff, MalformedJSON, PayloadTooLarge, UnsupportedMediaType
from model_service.protocol.openapi import ASSET_CACHE_CONTROL, DOCS_ASSETS, DOCS_CSP
from model_service.protocol.routes import ROUTES
from model_service.server.middleware import JSON, ServiceMiddleware, http_exception
from model_service.server.worker import Service


class Endpoints:
    """The endpoints Starlette serves: the route table's rows that are not raw (inference is the
    middleware's)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def feedback(self, request: Request) -> Response:
        """Labels for captured answers (model_service/operations/capture.py): one outcome per item."""
        settings = self.service.settings
        if settings.capture_dir is None:
            raise CaptureOff(
                "the capture is off (MODEL_SERVICE_CAPTURE_DIR unset), so no label can be joined to an "
                "answer; enable `capture` in the environment's YAML"
            )
        content_type = request.headers.get("content-type")
        if content_type is not None and content_type.partition(";")[0].strip().lower() != JSON:
            raise UnsupportedMediaType(content_type)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                raise PayloadTooLarge(settings.max_body_bytes)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedJSON(f"body is not valid JSON: {exc}") from None
        items = parse_feedback(parsed)
        classes = self.service.served().card.classes
        answer = await asyncio.to_thread(
            store_feedback, settings.capture_dir, settings.capture_label_window_days, items, classes
        )
        return Response(orjson.dumps(answer), media_type=JSON)

    async def model_card(self, request: Request) -> Response:
        return Response(self.service.served().card_json, media_type=JSON)

    async def v2_model(self, request: Request) -> Response:
        model = self.service.served()
        model.check_model(request.path_params["name"], request.path_params.get("version"))
        return Response(model.v2_metadata, media_type=JSON)

    async def v2_model_ready(self, request: Request) -> Response:
        model = self.service.served()
        model.check_model(request.path_params["name"], request.path_params.get("version"))
        self.service.check_ready()
        return Response(b'{"name": %s, "ready": true}' % orjson.dumps(model.card.name), media_type=JSON)

    async def v2_server(self, request: Request) -> Response:
        return Response(
            b'{"name":"model-service","version":"1","extensions":["binary_tensor_data"]}', media_type=JSON
        )

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def v2_live(self, request: Request) -> Response:
        return Response(b'{"live":true}', media_type=JSON)

    async def readyz(self, request: Request) -> Response:
        self.service.check_ready()
        return Response(b'{"status":"ready"}', media_type=JSON)

    async def v2_ready(self, request: Request) -> Response:
        self.service.check_ready()
        return Response(b'{"ready":true}', media_type=JSON)

    async def openapi(self, request: Request) -> Response:
        return Response(self.service.served().openapi_json, media_type=JSON)

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(self.service.served().docs_html, headers={"Content-Security-Policy": DOCS_CSP})

    async def docs_asset(self, request: Request) -> Response:
        name = request.path_params["asset"]
        data = self.service.served().docs_assets.get(name)
        if data is None:
            raise HTTPException(404)
        headers = {"Cache-Control": ASSET_CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
        return Response(data, media_type=DOCS_ASSETS[name].media_type, headers=headers)

    def routes(self) -> list[Route]:
        """Starlette's routes, one per path of each row the middleware does not serve raw."""
        return [
            Route(path, getattr(self, route.endpoint), methods=[route.method])
            for route in ROUTES
            if not route.raw
            for path in route.paths
        ]


def create_app(settings: ServiceSettings | None = None) -> Starlette:
    """Build the app; nothing is loaded until lifespan start-up (settings default to the environment)."""
    service = Service(settings if settings is not None else ServiceSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        card = service.start().card
        if service.auth is not None and service.auth.jwks is not None:
            await service.auth.jwks.refresh()  # the issuer's keys before the first token; a failure is logged
        flusher = asyncio.create_task(_flush_periodically(service))
        service.drain_on_sigterm()
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
            if service.model is not None and service.model.capture is not None:
                service.model.capture.close()  # what it sampled, written before the worker exits
            service.log.event("INFO", "stopped", pid=os.getpid())
            Metrics.mark_worker_gone()

    app = Starlette(
        routes=Endpoints(service).routes(),
        middleware=[Middleware(ServiceMiddleware, service=service)],
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
    app.state.service = service
    return app


async def _flush_periodically(service: Service) -> None:
    """Write the buffered log lines and add the counted requests to the metrics: the metrics port reads
    every worker's multiprocess files, so each keeps its share current."""
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        service.log.flush()
        service.flush_metrics()
