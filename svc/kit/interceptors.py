"""The kit's server chain: one ordered chain of steps around every RPC handler.

Order:
0. open the server span from the caller's trace context (telemetry.ServerSpans);
1. measure and log the call (Prometheus metrics, JSON access log with the trace id);
2. map errors: DomainError -> status + ErrorInfo/BadRequest, anything else -> INTERNAL;
3. admit the call: caller identity from the mTLS certificate and its authorization against the
   catalog, the end user from a verified JWT, the caller's deadline, request validation;
4. the handler.
The steps are plain calls inside one coroutine rather than nested wrappers, and the chain is
applied to each method's handler once, when the service is registered: every layer of awaiting
and every per-call look-up costs throughput on the hottest path of the platform. Health and
reflection are registered beside the chain, so probes answer while draining and need no
certificate identity beyond the mesh CA.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
from google.protobuf.message import Message
from sqlalchemy.exc import OperationalError

from svc.kit import errors, identity
from svc.kit.catalog import Catalog
from svc.kit.context import CallContext, current_call
from svc.kit.telemetry import RpcMetrics, ServerSpans
from svc.kit.validation import validate

log = logging.getLogger("finmesh.rpc")

# grpc's stubs make handlers generic over request and response types; the chain serves them all.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

STATUS_DETAILS_KEY = "grpc-status-details-bin"


class ServerChain:
    """Wraps each handler of a service in the kit's steps, once, when the service is registered.

    grpc.aio's interceptor API runs every interceptor on every call to resolve the handler;
    wrapping the method handlers at registration gives the same chain for a fraction of the
    per-call cost, which is what keeps the kit near the bare server's throughput.
    """

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
        self._metrics = metrics
        self._verifier = verifier
        self._require_peer_identity = require_peer_identity
        self._allowed = catalog.allowed_callers(service) if catalog and service in catalog.services else None
        self._spans = ServerSpans()

    def use_verifier(self, verifier: identity.TokenVerifier) -> None:
        """Verifies end-user tokens with `verifier` from now on (see ServiceApp.use_token_verifier)."""
        self._verifier = verifier

    def wrap_service(self, service_name: str, handlers: dict[str, Handler]) -> dict[str, Handler]:
        """The handlers of one gRPC service, each wrapped in the chain."""
        return {name: self.wrap(f"/{service_name}/{name}", handler) for name, handler in handlers.items()}

    def wrap(self, method: str, handler: Handler) -> Handler:
        """One method's handler inside the kit's steps."""
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
            metadata = context.invocation_metadata()
            span, span_token = self._spans.start(method, metadata)
            try:
                self._admit(call, request, context, metadata)
                return await behavior(request, context)
            except grpc.aio.AbortError:
                call.status_code = context.code().name if context.code() else "UNKNOWN"
                raise
            except Exception as error:
                await self._abort(call, context, error)
            finally:
                self._observe(call, time.perf_counter() - started)
                self._spans.end(span, span_token, call.status_code)
                current_call.reset(token)

        return handle

    def _wrap_stream(self, method: str, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
        async def handle(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            call = CallContext(method=method)
            token = current_call.set(call)
            started = time.perf_counter()
            metadata = context.invocation_metadata()
            span, span_token = self._spans.start(method, metadata)
            try:
                self._admit(call, request, context, metadata)
                async for response in behavior(request, context):
                    yield response
            except grpc.aio.AbortError:
                call.status_code = context.code().name if context.code() else "UNKNOWN"
                raise
            except Exception as error:
                await self._abort(call, context, error)
            finally:
                self._observe(call, time.perf_counter() - started)
                self._spans.end(span, span_token, call.status_code)
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
        if _database_busy(error):
            # SQLite's write lock still held by others after the busy timeout: the transaction
            # rolled back whole, and a retry may succeed.
            error = errors.DependencyUnavailable(
                "the database is busy; nothing was applied, retry", metadata={"dependency": "database"}
            )
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

    def _admit(self, call: CallContext, request: Message, context: Any, metadata: Any) -> None:
        """Identity, authorization, end user, deadline and validation; raises DomainError to refuse."""
        call.caller = identity.peer_service(context.peer_identities())
        if self._require_peer_identity:
            if not call.caller:
                raise errors.Unauthenticated("no service identity in the peer certificate")
            if self._allowed is not None and call.caller not in self._allowed:
                raise errors.PermissionDenied(
                    f"service {call.caller!r} may not call {self._service!r}",
                    metadata={"caller": call.caller, "service": self._service},
                )
        token = identity.bearer_token(metadata)
        if token:
            call.user = self._verifier.verify(token)
        remaining = context.time_remaining()
        if remaining is not None:
            call.deadline = time.monotonic() + remaining
        validate(request)


def _database_busy(error: Exception) -> bool:
    return isinstance(error, OperationalError) and "database is locked" in str(error.orig)
