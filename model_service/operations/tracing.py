"""W3C trace context on every request, and OpenTelemetry spans when an OTLP endpoint is configured.

Propagation (always on, nothing to configure): a request with a valid `traceparent` keeps its trace id; the
service gives the request a span id of its own, answers with `traceparent: 00-<trace id>-<its span id>-<flags>`
and writes `trace_id` in the request's log line. A request without one, or with an invalid one, gets
neither (with spans exported it starts a new trace). Validity is W3C Trace Context Level 1's
(https://www.w3.org/TR/trace-context/, 3.2.2): lowercase hex fields of 2-32-16-2 digits, version `ff`
invalid, version `00` exactly 55 characters (a later version may append `-...`), and "If the trace-id value is
invalid (for example if it contains non-allowed characters or all zeros), vendors MUST ignore the
traceparent"; likewise an all-zero parent-id. And (3.3) "If the vendor failed to parse traceparent, it MUST
NOT attempt to parse tracestate": `tracestate` is passed on only with a valid `traceparent`.

Export (off by default): with OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) set and
the OpenTelemetry SDK installed (the `tracing` dependency group), each request is a `request` span (kind
SERVER, the caller's span as parent) with `validation` (the row parser) and `inference` (onnxruntime)
inside it, sent over OTLP/HTTP in batches by a background thread; the standard OTEL_* variables apply
(service name, headers, sampler). When export is off, a request without `traceparent` costs nothing here.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.trace import Span, Tracer

    from model_service.operations.logs import JsonLog

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
SCOPE_KEY = "model_service.trace"
"""Scope key of the request's `Trace` (absent when the request has none)."""
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16


def parse_traceparent(value: bytes) -> tuple[str, str, str] | None:
    """(trace id, parent id, flags) of a valid `traceparent`, else None (the header is then ignored)."""
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return None
    trace, parent = trace_id.decode(), parent_id.decode()
    if trace == _ZERO_TRACE_ID or parent == _ZERO_SPAN_ID:
        return None
    return trace, parent, flags.decode()


@dataclass(slots=True)
class Trace:
    """One request's place in a trace: the ids it answers with and, when exporting, its open span."""

    trace_id: str
    span_id: str
    flags: str
    span: Span | None = None
    _detach: Callable[[], None] | None = field(default=None, repr=False)
    route: str = "unmatched"
    """What the request log line says, for the span (set when the line is written)."""
    status: int = 0
    version: str = ""

    @property
    def header(self) -> bytes:
        """The response's `traceparent`: the caller's trace, this request's span."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}".encode()


class Tracing:
    """Starts and ends each request's `Trace`; `exporting` when spans go to an OTLP endpoint."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.tracer = tracer
        self.exporting = tracer is not None
        self._instrumented: set[int] = set()
        self._random = random.Random()

    @classmethod
    def from_environment(cls, log: JsonLog) -> Tracing:
        """Exporting when an OTLP endpoint is set and the SDK imports; otherwise propagation only."""
        endpoint = next((os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name)), None)
        if endpoint is None:
            return cls()
        try:
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 - optional dependency
            from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        except ImportError:
            log.event(
                "WARNING",
                "tracing_unavailable",
                message=f"{ENDPOINT_VARIABLES[1]} is set but the OpenTelemetry SDK is not installed "
                "(dependency group `tracing`); spans are not exported, traceparent is still propagated",
            )
            return cls()
        provider = TracerProvider(resource=Resource.create({"service.name": "model-service"}))
        provider.add_span_processor(span_processor())
        log.event("INFO", "tracing_on", endpoint=endpoint)
        return cls(provider.get_tracer("model_service"))

    def start(self, traceparent: bytes | None, tracestate: bytes | None, model: Any) -> Trace | None:
        """The request's trace: the caller's when its traceparent is valid, a new one when exporting."""
        parsed = parse_traceparent(traceparent) if traceparent is not None else None
        if self.tracer is None:
            if parsed is None:
                return None
            trace_id, _, flags = parsed
            return Trace(trace_id, self._span_id(), flags)
        if model is not None and id(model) not in self._instrumented:
            self.instrument(model)
        return self._start_span(parsed, tracestate)

    def _span_id(self) -> str:
        return f"{self._random.getrandbits(64) or 1:016x}"  # all zeros is not a valid span id

    def _start_span(self, parsed: tuple[str, str, str] | None, tracestate: bytes | None) -> Trace:
        from opentelemetry import context, trace  # noqa: PLC0415 - only when exporting
        from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
            TraceContextTextMapPropagator,
        )

        assert self.tracer is not None
        carrier = {}
        if parsed is not None:
            carrier["traceparent"] = "00-{}-{}-{}".format(*parsed)
            if tracestate is not None:
                carrier["tracestate"] = tracestate.decode("latin-1")
        parent = TraceContextTextMapPropagator().extract(carrier)
        span = self.tracer.start_span("request", context=parent, kind=trace.SpanKind.SERVER)
        token = context.attach(trace.set_span_in_context(span, parent))
        ids = span.get_span_context()
        return Trace(
            f"{ids.trace_id:032x}",
            f"{ids.span_id:016x}",
            f"{int(ids.trace_flags):02x}",
            span,
            lambda: context.detach(token),
        )

    def end(self, trace: Trace, method: str) -> None:
        """Close the request's span (when exporting) with what the request log line says."""
        span = trace.span
        if span is None:
            return
        span.update_name(f"{method} {trace.route}")
        span.set_attributes(
            {
                "http.request.method": method,
                "http.route": trace.route,
                "http.response.status_code": trace.status,
                "model.version": trace.version,
            }
        )
        if trace.status >= 500:
            from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

            span.set_status(Status(StatusCode.ERROR))
        span.end()
        if trace._detach is not None:
            trace._detach()

    def instrument(self, model: Any) -> None:
        """Run the model's row parser in `validation` spans and its onnxruntime session in `inference`
        spans (attributes replaced by wrappers: nothing changes when export is off)."""
        assert self.tracer is not None
        model.parser = Spanned(model.parser, "validation", self.tracer)
        model.onnx = Spanned(model.onnx, "inference", self.tracer)
        self._instrumented.add(id(model))


class Spanned:
    """`target` with each of its methods run inside a span named `name` (attributes pass through)."""

    def __init__(self, target: Any, name: str, tracer: Tracer) -> None:
        self._target = target
        self._name = name
        self._tracer = tracer

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._target, attribute)
        if not callable(value):
            return value

        def spanned(*args: Any, **kwargs: Any) -> Any:
            with self._tracer.start_as_current_span(self._name):
                return value(*args, **kwargs)

        return spanned


def span_processor() -> SpanProcessor:
    """Spans to the OTLP/HTTP endpoint of the OTEL_* variables, in batches from a background thread."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    return BatchSpanProcessor(OTLPSpanExporter())
