"""gRPC status -> HTTP status and a JSON google.rpc.Status body, as grpc-gateway's runtime/errors.go.

The body is the google.rpc.Status of the call in its proto3 JSON form: `code`, `message` and
`details` (ErrorInfo, BadRequest, RetryInfo... each with its `@type`), taken from the
`grpc-status-details-bin` trailer when the service sent one. Errors the gateway raises itself
(bad JSON, unknown route, rate limits, open breakers) are kit DomainErrors rendered the same way,
with ErrorInfo domain `gateway.finmesh.io`.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from google.rpc import code_pb2, error_details_pb2, status_pb2

from gateway.codec import encode
from svc.kit import errors as kit_errors

GATEWAY = "gateway"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


class RouteNotFound(kit_errors.NotFound):
    """No annotated RPC is bound to the request's path."""


class MethodNotAllowed(kit_errors.Unimplemented):
    """The path is bound, but not to the request's HTTP method (405, UNIMPLEMENTED as grpc-gateway)."""

    http_status = 405


class PayloadTooLarge(kit_errors.DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "LIMIT_EXCEEDED"
    http_status = 413


class RateLimited(kit_errors.DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"


class Unavailable(kit_errors.DependencyUnavailable):
    """An upstream's breaker is open (reason DEPENDENCY_UNAVAILABLE)."""


class FeatureDisabled(kit_errors.DomainError):
    """A non-core route switched off while its upstream's breaker is open."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "FEATURE_DISABLED"


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def from_rpc_error(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status of a failed call: the service's own, or one from the code and message."""
    raw = dict(error.trailing_metadata() or ()).get(STATUS_DETAILS_KEY)
    if isinstance(raw, bytes):
        status = status_pb2.Status.FromString(raw)
        if status.code == error.code().value[0]:
            return status
    return status_pb2.Status(code=error.code().value[0], message=error.details() or error.code().name)


def from_domain_error(error: kit_errors.DomainError) -> status_pb2.Status:
    """A gateway error as the kit would report it from a service named `gateway`."""
    return kit_errors.to_status(error, service=GATEWAY)


def retry_info(status: status_pb2.Status, seconds: float) -> None:
    """Adds a google.rpc.RetryInfo detail (for 429 and 503 with Retry-After)."""
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromNanoseconds(int(seconds * 1e9))
    status.details.add().Pack(info)


def retry_after(status: status_pb2.Status) -> dict[str, str]:
    """A Retry-After header (whole seconds, at least 1) from the status's RetryInfo, if any."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            seconds = info.retry_delay.ToNanoseconds() / 1e9
            return {"retry-after": str(max(1, math.ceil(seconds)))}
    return {}


def internal() -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")


def body(status: status_pb2.Status, pool: DescriptorPool) -> bytes:
    """The JSON error body: the Status with every detail in its JSON form."""
    return encode(status, pool)
