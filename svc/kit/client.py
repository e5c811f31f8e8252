"""Outgoing calls to other services: mTLS channels and the client side of the interceptor chain.

The client chain carries what the server chain learned: the caller's remaining deadline (so a
downstream call never outlives the RPC that made it), the end user's token, and the trace
context (OpenTelemetry's client interceptor).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from svc.kit.context import call as current_call
from svc.kit.context import current_call as current_call_variable
from svc.kit.identity import USER_TOKEN_METADATA
from svc.kit.mtls import LocalCA

# A downstream call must leave its caller time to answer: it gets what remains, minus this.
DEADLINE_MARGIN_S = 0.005


class DeadlineExpired(Exception):
    """The incoming RPC's deadline passed before an outgoing call could start."""


def _outgoing(client_call_details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    served = current_call()
    timeout = client_call_details.timeout
    metadata = grpc.aio.Metadata(*tuple(client_call_details.metadata or ()))
    if served is not None:
        remaining = served.time_remaining()
        if remaining is not None:
            remaining -= DEADLINE_MARGIN_S
            if remaining <= 0:
                raise DeadlineExpired(
                    f"deadline of {served.method} passed before calling {client_call_details.method!r}"
                )
            timeout = remaining if timeout is None else min(timeout, remaining)
        if served.user is not None and served.user.token and not metadata.get_all(USER_TOKEN_METADATA):
            metadata.add(USER_TOKEN_METADATA, f"Bearer {served.user.token}")
    return grpc.aio.ClientCallDetails(
        method=client_call_details.method,
        timeout=timeout,
        metadata=metadata,
        credentials=client_call_details.credentials,
        wait_for_ready=client_call_details.wait_for_ready,
    )


@contextmanager
def as_service() -> Iterator[None]:
    """Calls made inside act as this service itself, not for the end user being served: the
    user's token is not forwarded (the deadline still is). For look-ups a service makes for its
    own decisions, such as the auth service reading a user's status while serving that user."""
    served = current_call()
    token = current_call_variable.set(dataclasses.replace(served, user=None) if served is not None else None)
    try:
        yield
    finally:
        current_call_variable.reset(token)


class PropagatingUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_outgoing(client_call_details), request)


class PropagatingUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_outgoing(client_call_details), request)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    # opentelemetry-instrumentation-grpc ships no annotations for its factories.
    traced: list[grpc.aio.ClientInterceptor] = aio_client_interceptors()  # type: ignore[no-untyped-call]
    return [PropagatingUnaryUnary(), PropagatingUnaryStream(), *traced]


def channel(
    target: str,
    *,
    identity: str | None = None,
    ca: LocalCA | None = None,
    options: Sequence[tuple[str, Any]] = (),
    intercepted: bool = True,
) -> grpc.aio.Channel:
    """A channel to `target`; mutual TLS as `identity` when a CA is given, plaintext otherwise.

    `options` are extra grpc channel arguments (for example a shorter reconnect backoff).
    `intercepted=False` leaves out the interceptors that carry the served call's context and
    trace: for a caller that is not serving a gRPC call and sets that metadata itself (the edge).
    """
    interceptors = client_interceptors() if intercepted else []
    if ca is None or identity is None:
        return grpc.aio.insecure_channel(target, options=list(options), interceptors=interceptors)
    credentials = ca.credentials(identity)
    # Certificates name 127.0.0.1 and localhost; the override keeps the check strict for other hosts.
    secure_options = [("grpc.ssl_target_name_override", "localhost"), *options]
    return grpc.aio.secure_channel(
        target, credentials.channel(), options=secure_options, interceptors=interceptors
    )
