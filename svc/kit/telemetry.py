"""Observability: JSON logs carrying the trace id, OpenTelemetry tracing, Prometheus RPC metrics."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# Buckets in seconds, from 0.5 ms to 10 s: RPC latencies of in-mesh calls.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current trace and span ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        span_context = trace.get_current_span().get_span_context()
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str) -> None:
    """Routes every log record of the process to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def configure_tracing(service: str) -> None:
    """Installs a tracer provider naming the service, once per process."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    trace.set_tracer_provider(TracerProvider(resource=Resource.create({"service.name": service})))


class RpcMetrics:
    """Per-RPC request count by status code and latency histogram, in a registry of its own."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "finmesh_rpc_requests",
            "RPCs served, by method and gRPC status code",
            ["service", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "finmesh_rpc_duration_seconds",
            "RPC handling time, by method",
            ["service", "method"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        # Label look-ups take a lock and build a tuple each time; the children are few and fixed.
        children = self._children.get((method, code))
        if children is None:
            children = (
                self.requests.labels(self.service, method, code),
                self.latency.labels(self.service, method),
            )
            self._children[(method, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    def serve(self, host: str, port: int) -> None:
        """Exposes /metrics on host:port in a background thread."""
        start_http_server(port, addr=host, registry=self.registry)


class ServerSpans:
    """The server span of each RPC, continuing the caller's trace from the gRPC metadata.

    Follows OpenTelemetry's RPC conventions (span named after the full method, rpc.system,
    rpc.service, rpc.method, rpc.grpc.status_code), as opentelemetry-instrumentation-grpc
    does on the client side. The kit opens server spans itself: the instrumentation's server
    wrapper costs a seventh of a small RPC's throughput even when the trace is not sampled
    (docs/benchmarks.md), while a span that is not sampled here costs next to nothing.
    """

    def __init__(self) -> None:
        self._tracer = trace.get_tracer("finmesh.kit")
        self._attributes: dict[str, dict[str, str | int]] = {}

    def start(self, method: str, metadata: Any) -> tuple[Span, object]:
        """Opens and activates the span of `method`; `end` must be called with what this returns."""
        attributes = self._attributes.get(method)
        if attributes is None:
            service, _, name = method.lstrip("/").partition("/")
            attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
            self._attributes[method] = attributes
        parent = propagate.extract(dict(metadata or ()))
        span = self._tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    @staticmethod
    def end(span: Span, token: object, code: str) -> None:
        """Records the gRPC status on the span, ends it and restores the previous context."""
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
            if code != "OK":
                span.set_status(Status(StatusCode.ERROR, code))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]
