"""Around every HTTP request: its request id, its server span, and one JSON access-log line.

The request id is the client's `X-Request-Id` when it is a valid idempotency-style key, else a
new one; it is returned in the response and forwarded to services as `x-request-id` metadata.
The span continues the client's W3C `traceparent`, and the edge puts it in the metadata of its
gRPC calls (gateway/app.py), so the access log's trace id is the one the services log.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("finmesh.gateway.access")

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


class EdgeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._tracer = trace.get_tracer("finmesh.gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        offered = headers.get(REQUEST_ID_HEADER, "")
        request_id = offered if _REQUEST_ID.match(offered) else f"gw-{uuid.uuid4().hex}"
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        parent = propagate.extract(headers)
        span = self._tracer.start_span(
            f"HTTP {scope['method']}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if span.is_recording():
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            log.info(
                "http",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "rpc": state.get("rpc", ""),
                        "user": state.get("user", ""),
                        "client_ip": state.get("client_ip", ""),
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    }
                },
            )
            span.end()
            otel_context.detach(token)
