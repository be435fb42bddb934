"""The route table: every route the service answers, each once, and how it is served.

Two routes, the inference routes, are served raw by the middleware (model_service/server/middleware.py):
body in, JSON bytes out, without Starlette's routing, Request and Response objects, which cost about 20 µs
per request on the hot path, as much as parsing, validating and predicting together (docs/bench.md).
Starlette serves the others. Everything that names a route is built from this table: the app's Starlette
routes (model_service/app.py), the middleware's raw dispatch (`raw_route`), the `route` metric label
(`route_label`), the probes, the routes open without credentials and the metric series bound at start-up.
"""

from dataclasses import dataclass, field
from typing import Literal

from model_service.contract.monitoring import PREDICT_ROUTE, V2_INFER_ROUTE

UNMATCHED = "unmatched"
"""The `route` label of every path no route answers (a bounded label set)."""


@dataclass(frozen=True)
class Route:
    """One route: its path template (also its `route` metric label), its method and what answers it."""

    path: str
    method: Literal["GET", "POST"]
    endpoint: str
    """The method that answers: on the app's `Endpoints`, or on the `ServedModel` for a raw route."""
    raw: bool = False
    """Served by the middleware itself: the inference hot path."""
    probe: bool = False
    """Liveness or readiness: never traced, logged and counted only with MODEL_SERVICE_LOG_PROBES."""
    open: bool = False
    """Answered without credentials when auth is on."""
    versioned: bool = False
    """Also answered with the Open Inference Protocol's version segment:
    /v2/models/{name}/versions/{version}/..."""
    bound: bool = False
    """Its (route, status) metric series exist from start-up, so they read 0 before the first request."""
    paths: tuple[str, ...] = field(init=False)
    """The path, and its versioned form when `versioned`."""

    def __post_init__(self) -> None:
        versioned = self.path.replace("{name}", "{name}/versions/{version}")
        object.__setattr__(self, "paths", (self.path, versioned) if self.versioned else (self.path,))


ROUTES: tuple[Route, ...] = (
    # V1
    Route(PREDICT_ROUTE, "POST", "predict", raw=True, bound=True),
    Route("/v1/model", "GET", "model_card", bound=True),
    # Open Inference Protocol v2
    Route("/v2", "GET", "v2_server"),
    Route("/v2/health/live", "GET", "v2_live", probe=True, open=True),
    Route("/v2/health/ready", "GET", "v2_ready", probe=True, open=True),
    Route("/v2/models/{name}", "GET", "v2_model", versioned=True),
    Route("/v2/models/{name}/ready", "GET", "v2_model_ready", versioned=True),
    Route(V2_INFER_ROUTE, "POST", "v2_infer", raw=True, versioned=True, bound=True),
    # Operations (GET /metrics is the metrics port's, model_service/server/metrics_server.py)
    Route("/healthz", "GET", "healthz", probe=True, open=True),
    Route("/readyz", "GET", "readyz", probe=True, open=True),
    Route("/openapi.json", "GET", "openapi", open=True),  # the docs page fetches it without credentials
    Route("/docs", "GET", "docs", open=True),
)

PROBES = frozenset(route.path for route in ROUTES if route.probe)
OPEN = frozenset(route.path for route in ROUTES if route.open)
BOUND = tuple(route.path for route in ROUTES if route.bound)


class _Template:
    """A path template's segments: `{...}` matches one non-empty segment (no `/`, as in Starlette)."""

    def __init__(self, template: str) -> None:
        self.segments = template.split("/")

    def match(self, path: str) -> dict[str, str] | None:
        parts = path.split("/")
        if len(parts) != len(self.segments):
            return None
        params = {}
        for segment, part in zip(self.segments, parts, strict=True):
            if segment.startswith("{"):
                if not part:
                    return None
                params[segment[1:-1]] = part
            elif segment != part:
                return None
        return params


_EXACT = {path: route for route in ROUTES for path in route.paths if "{" not in path}
_TEMPLATED = [(_Template(path), route) for route in ROUTES for path in route.paths if "{" in path]
_RAW_EXACT = {path: route for path, route in _EXACT.items() if route.raw}
_RAW_TEMPLATED = [(template, route) for template, route in _TEMPLATED if route.raw]


def route_label(path: str) -> str:
    """The route a path belongs to (its template), or `UNMATCHED`: the bounded `route` metric label."""
    route = _EXACT.get(path)
    if route is not None:
        return route.path
    for template, route in _TEMPLATED:
        if template.match(path) is not None:
            return route.path
    return UNMATCHED


def raw_route(path: str) -> tuple[Route, str | None, str | None] | None:
    """(route, model name, model version) when the middleware serves the path itself; else None.

    `/v1/predict` names no model; `/v2/models/{name}[/versions/{version}]/infer` does."""
    route = _RAW_EXACT.get(path)
    if route is not None:
        return route, None, None
    for template, route in _RAW_TEMPLATED:
        params = template.match(path)
        if params is not None:
            return route, params["name"], params.get("version")
    return None
