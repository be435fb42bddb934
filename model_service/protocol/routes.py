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
    scope: str | None = None
    """The scope a JWT must grant to call it (`predict`, `model:read`, `feedback`); None: any credential."""
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
    Route(PREDICT_ROUTE, "POST", "predict", raw=True, bound=True, scope="predict"),
    Route("/v1/model", "GET", "model_card", bound=True, scope="model:read"),
    Route("/v1/feedback", "POST", "feedback", scope="feedback"),  # labels for captured answers
    # Open Inference Protocol v2
    Route("/v2", "GET", "v2_server", scope="model:read"),
    Route("/v2/health/live", "GET", "v2_live", probe=True, open=True),
    Route("/v2/health/ready", "GET", "v2_ready", probe=True, open=True),
    Route("/v2/models/{name}", "GET", "v2_model", versioned=True, scope="model:read"),
    Route("/v2/models/{name}/ready", "GET", "v2_model_ready", versioned=True, scope="model:read"),
    Route(V2_INFER_ROUTE, "POST", "v2_infer", raw=True, versioned=True, bound=True, scope="predict"),
    # Operations (GET /metrics is the metrics port's, model_service/server/metrics_server.py)
    Route("/healthz", "GET", "healthz", probe=True, open=True),
    Route("/readyz", "GET", "readyz", probe=True, open=True),
    Route("/openapi.json", "GET", "openapi", open=True),  # the docs page fetches it without credentials
    Route("/docs", "GET", "docs", open=True),
    Route("/docs/static/{asset}", "GET", "docs_asset", open=True),  # swagger-ui, served by the service itself
)

PROBES = frozenset(route.path for route in ROUTES if route.probe)
OPEN = frozenset(route.path for route in ROUTES if route.open)
BOUND = tuple(route.path for route in ROUTES if route.bound)


class _Template:
    """A path template: literal text around `{...}` segments, each matching one non-empty segment (no `/`,
    as in Starlette). The literal prefix and suffix are compared first: most paths fail there, cheaply."""

    def __init__(self, template: str) -> None:
        first, last = template.index("{"), template.rindex("}") + 1
        self.prefix, self.suffix = template[:first], template[last:]
        segments = template[first:last].split("/")
        self.literals = [None if segment.startswith("{") else segment for segment in segments]
        """Per segment: its text, or None where a parameter stands."""
        self.names = tuple(segment[1:-1] for segment in segments if segment.startswith("{"))
        """The parameters' names, in template order."""

    def match(self, path: str) -> list[str] | None:
        """The parameters' values in template order, or None when the path does not fit."""
        prefix, suffix = self.prefix, self.suffix
        if not (path.startswith(prefix) and path.endswith(suffix)) or len(path) < len(prefix) + len(suffix):
            return None
        middle = path[len(prefix) : len(path) - len(suffix)]
        if self.literals == [None]:  # one parameter alone (/v2/models/{name}/infer): the hot path's form
            return [middle] if middle and "/" not in middle else None
        parts = middle.split("/")
        if len(parts) != len(self.literals):
            return None
        values = []
        for literal, part in zip(self.literals, parts, strict=True):
            if literal is None:
                if not part:
                    return None
                values.append(part)
            elif literal != part:
                return None
        return values


_EXACT = {path: route for route in ROUTES for path in route.paths if "{" not in path}
_TEMPLATED = [(_Template(path), route) for route in ROUTES for path in route.paths if "{" in path]
_RAW_EXACT = {path: route for path, route in _EXACT.items() if route.raw}
_RAW_TEMPLATED = [(template, route) for template, route in _TEMPLATED if route.raw]
# raw_route reads a raw template's values by position: the model name, then its version when versioned
# (tests/unit/service/test_service_routes.py holds the raw rows to that).


def route_of(path: str) -> Route | None:
    """The route a path belongs to, or None."""
    route = _EXACT.get(path)
    if route is not None:
        return route
    for template, route in _TEMPLATED:
        if template.match(path) is not None:
            return route
    return None


def route_label(path: str) -> str:
    """The route a path belongs to (its template), or `UNMATCHED`: the bounded `route` metric label."""
    route = route_of(path)
    return UNMATCHED if route is None else route.path


def raw_route(path: str) -> tuple[Route, str | None, str | None] | None:
    """(route, model name, model version) when the middleware serves the path itself; else None.

    `/v1/predict` names no model; `/v2/models/{name}[/versions/{version}]/infer` does."""
    route = _RAW_EXACT.get(path)
    if route is not None:
        return route, None, None
    for template, route in _RAW_TEMPLATED:
        values = template.match(path)
        if values is not None:
            return route, values[0], values[1] if len(values) > 1 else None
    return None
