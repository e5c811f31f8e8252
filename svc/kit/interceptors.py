"""The kit's server interceptor: one ordered chain of steps around every RPC handler.

Order:
0. OpenTelemetry's server wrapper (opentelemetry-instrumentation-grpc) opens the span from the
   caller's trace context; it is applied inside this interceptor rather than as a second one;
1. measure and log the call (Prometheus metrics, JSON access log with the trace id);
2. map errors: DomainError -> status + ErrorInfo/BadRequest, anything else -> INTERNAL;
3. admit the call: caller identity from the mTLS certificate and its authorization against the
   catalog, the end user from a verified JWT, the caller's deadline, request validation;
4. the handler.
The steps are plain calls inside one coroutine rather than nested wrappers: every layer of
awaiting costs throughput on the hottest path of the platform.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from google.protobuf.message import Message

from svc.kit import errors, identity
from svc.kit.catalog import Catalog
from svc.kit.context import CallContext, current_call
from svc.kit.telemetry import RpcMetrics
from svc.kit.validation import validate

log = logging.getLogger("finmesh.rpc")

# grpc's stubs make handlers generic over request and response types; the chain serves them all.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

STATUS_DETAILS_KEY = "grpc-status-details-bin"
# Infrastructure RPCs: any holder of a certificate from the mesh CA may call them, and they
# stay outside the chain (probes must answer while draining; health Watch is long-lived).
OPEN_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


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
        # grpc.aio asks interceptors for a handler on every call; wrapping once per method keeps
        # the per-call cost to a dictionary look-up.
        self._wrapped: dict[str, Handler] = {}
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        # opentelemetry-instrumentation-grpc ships no annotations for its factories.
        self._tracing: grpc.aio.ServerInterceptor = aio_server_interceptor()  # type: ignore[no-untyped-call]

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_METHOD_PREFIXES):
            return handler
        ours = self._wrap(method, handler)

        async def resolved(_details: grpc.HandlerCallDetails) -> Handler:
            return ours

        # The span opens outside the chain, so that refusals and errors are traced too.
        # OpenTelemetry's wrapper reads only the method name from the call details, which is
        # what makes caching its wrapped handler per method sound.
        traced = await self._tracing.intercept_service(resolved, handler_call_details)
        self._wrapped[method] = traced or ours
        return traced or ours

    def _wrap(self, method: str, handler: Handler) -> Handler:
        if handler.request_streaming:
            # No finmesh contract streams requests; refusing keeps such an RPC from ever
            # bypassing identity, authorization and validation.
            return grpc.stream_unary_rpc_method_handler(self._refuse_streaming_requests(method))
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                # grpc's stubs type handlers as synchronous; under grpc.aio they are async generators.
                self._wrap_stream(method, cast("Callable[..., AsyncIterator[Any]]", handler.unary_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_unary(
        self, method: str, behavior: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def handle(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = CallContext(method=method)
            token = current_call.set(call)
            started = time.perf_counter()
            try:
                self._admit(call, request, context)
                return await behavior(request, context)
            except grpc.aio.AbortError:
                call.status_code = context.code().name if context.code() else "UNKNOWN"
                raise
            except Exception as error:
                await self._abort(call, context, error)
            finally:
                self._observe(call, time.perf_counter() - started)
                current_call.reset(token)

        return handle

    def _wrap_stream(self, method: str, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
        async def handle(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            call = CallContext(method=method)
            token = current_call.set(call)
            started = time.perf_counter()
            try:
                self._admit(call, request, context)
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                call.status_code = context.code().name if context.code() else "UNKNOWN"
                raise
            except Exception as error:
                await self._abort(call, context, error)
            finally:
                self._observe(call, time.perf_counter() - started)
                current_call.reset(token)

        return handle

    def _refuse_streaming_requests(self, method: str) -> Callable[..., Awaitable[Any]]:
        async def refuse(_requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = CallContext(method=method)
            await self._abort(
                call, context, errors.Unimplemented("request streaming is not served by the kit")
            )

        return refuse

    def _observe(self, call: CallContext, seconds: float) -> None:
        self._metrics.observe(call.method, call.status_code, seconds)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "rpc",
                extra={
                    "fields": {
                        "method": call.method,
                        "code": call.status_code,
                        "caller": call.caller,
                        "user": call.user.subject if call.user else "",
                        "duration_ms": round(seconds * 1000, 3),
                    }
                },
            )

    async def _abort(self, call: CallContext, context: Any, error: Exception) -> None:
        if isinstance(error, NotImplementedError):
            # The generated base servicer's answer for an RPC the service does not implement yet.
            error = errors.Unimplemented(f"{call.method} is not implemented by {self._service}")
        if isinstance(error, errors.DomainError):
            status = errors.to_status(error, service=self._service)
            call.status_code = error.code.name
        else:
            log.error("unhandled error in %s", call.method, exc_info=error)
            status = errors.internal_status()
            call.status_code = "INTERNAL"
        await context.abort(
            grpc.StatusCode[call.status_code],
            status.message,
            trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
        )

    def _admit(self, call: CallContext, request: Message, context: Any) -> None:
        """Identity, authorization, end user, deadline and validation; raises DomainError to refuse."""
        call.caller = identity.peer_service(context.auth_context() or {})
        if self._require_peer_identity:
            if not call.caller:
                raise errors.Unauthenticated("no service identity in the peer certificate")
            if self._allowed is not None and call.caller not in self._allowed:
                raise errors.PermissionDenied(
                    f"service {call.caller!r} may not call {self._service!r}",
                    metadata={"caller": call.caller, "service": self._service},
                )
        token = identity.bearer_token(context.invocation_metadata())
        if token:
            call.user = self._verifier.verify(token)
        remaining = context.time_remaining()
        if remaining is not None:
            call.deadline = time.monotonic() + remaining
        validate(request)
