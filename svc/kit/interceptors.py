"""The kit's server interceptor: one ordered chain of steps around every RPC handler.

Order, outermost first (OpenTelemetry's own interceptor runs before this one and opens the
span): metrics -> access log -> error mapping -> caller identity and authorization ->
deadline -> request validation -> handler. Each step is a small function; the order is the
list in `ServerChain.steps`, so reading it tells what happens to a call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from svc.kit import errors, identity
from svc.kit.catalog import Catalog
from svc.kit.context import CallContext, current_call
from svc.kit.telemetry import RpcMetrics
from svc.kit.validation import validate

log = logging.getLogger("finmesh.rpc")

STATUS_DETAILS_KEY = "grpc-status-details-bin"
# Infrastructure RPCs that any holder of a certificate from the mesh CA may call.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                        "/grpc.reflection.v1.ServerReflection/")

Next = Callable[[Message], Awaitable[Any]]
Step = Callable[[CallContext, Message, grpc.aio.ServicerContext[Any, Any], Next], Awaitable[Any]]


class ServerChain(grpc.aio.ServerInterceptor):
    """Wraps each unary handler in the kit's steps."""

    def __init__(
        self,
        *,
        service: str,
        catalog: Catalog | None,
        metrics: RpcMetrics,
        verifier: identity.TokenVerifier,
        require_peer_identity: bool,
    ) -> None:
        self._service = service
        self._catalog = catalog
        self._metrics = metrics
        self._verifier = verifier
        self._require_peer_identity = require_peer_identity
        self._allowed = catalog.allowed_callers(service) if catalog and service in catalog.services else None
        self.steps: tuple[Step, ...] = (
            self._measure,
            self._log_access,
            self._map_errors,
            self._authenticate,
            self._propagate_deadline,
            self._validate,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        # Health and reflection stay outside the chain: probes must answer while draining and
        # the health Watch stream is long-lived.
        if handler is None or handler.request_streaming or method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _run_chain(self, call: CallContext, context: grpc.aio.ServicerContext[Any, Any], last: Next) -> Next:
        chained = last
        for step in reversed(self.steps):
            chained = _bind(step, call, context, chained)
        return chained

    def _wrap_unary(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def handle(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = CallContext(method=method)
            token = current_call.set(call)
            try:
                return await self._run_chain(call, context, lambda req: behavior(req, context))(request)
            finally:
                current_call.reset(token)

        return handle

    def _wrap_stream(self, method: str, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
        # The chain admits the call (identity, deadline, validation) and measures its set-up; the
        # responses then stream outside it, with errors raised mid-stream mapped the same way.
        async def handle(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            call = CallContext(method=method)
            token = current_call.set(call)
            try:
                responses = await self._run_chain(call, context, lambda req: _ready(behavior(req, context)))(request)
                try:
                    async for response in responses:
                        yield response
                except errors.DomainError as error:
                    status = errors.to_status(error, service=self._service)
                    await context.abort(
                        error.code, status.message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),)
                    )
            finally:
                current_call.reset(token)

        return handle

    async def _measure(self, call: CallContext, request: Message, context: Any, proceed: Next) -> Any:
        started = time.perf_counter()
        try:
            return await proceed(request)
        finally:
            self._metrics.observe(call.method, call.status_code, time.perf_counter() - started)

    async def _log_access(self, call: CallContext, request: Message, context: Any, proceed: Next) -> Any:
        started = time.perf_counter()
        try:
            return await proceed(request)
        finally:
            log.info(
                "rpc",
                extra={
                    "fields": {
                        "method": call.method,
                        "code": call.status_code,
                        "caller": call.caller,
                        "user": call.user.subject if call.user else "",
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    }
                },
            )

    async def _map_errors(self, call: CallContext, request: Message, context: Any, proceed: Next) -> Any:
        try:
            return await proceed(request)
        except errors.DomainError as error:
            status = errors.to_status(error, service=self._service)
            call.status_code = error.code.name
        except grpc.aio.AbortError:
            call.status_code = context.code().name if context.code() else "UNKNOWN"
            raise
        except Exception:
            log.exception("unhandled error in %s", call.method)
            status = errors.internal_status()
            call.status_code = "INTERNAL"
        await context.abort(
            grpc.StatusCode[call.status_code],
            status.message,
            trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
        )

    async def _authenticate(self, call: CallContext, request: Message, context: Any, proceed: Next) -> Any:
        call.caller = identity.peer_service(identity.grpc_auth_context(context))
        if self._require_peer_identity and not call.caller:
            raise errors.Unauthenticated("no service identity in the peer certificate")
        if self._require_peer_identity and self._allowed is not None and call.caller not in self._allowed:
            raise errors.PermissionDenied(
                f"service {call.caller!r} may not call {self._service!r}",
                metadata={"caller": call.caller, "service": self._service},
            )
        token = identity.bearer_token(context.invocation_metadata())
        if token:
            call.user = self._verifier.verify(token)
        return await proceed(request)

    async def _propagate_deadline(self, call: CallContext, request: Message, context: Any, proceed: Next) -> Any:
        remaining = context.time_remaining()
        if remaining is not None:
            call.deadline = time.monotonic() + remaining
        return await proceed(request)

    async def _validate(self, call: CallContext, request: Message, context: Any, proceed: Next) -> Any:
        validate(request)
        return await proceed(request)


async def _ready(value: Any) -> Any:
    return value


def _bind(step: Step, call: CallContext, context: Any, proceed: Next) -> Next:
    async def bound(request: Message) -> Any:
        return await step(call, request, context, proceed)

    return bound
