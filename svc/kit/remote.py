"""A peer service's refusal as this service's typed error, so it reaches our caller unchanged.

A service that calls another and cannot handle a refusal itself passes it on: the same gRPC
status, ErrorInfo reason and metadata, and for bad input the same field violations (prefixed
with nothing: the fields are the peer's, named in the message). An unreachable or failing peer
becomes UNAVAILABLE with reason DEPENDENCY_UNAVAILABLE; nothing of its internals is passed on.
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from svc.kit import errors

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_UNAVAILABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.DATA_LOSS,
    }
)


def status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a peer sent with its error (empty when it sent none)."""
    raw = dict(error.trailing_metadata() or ()).get(STATUS_DETAILS_KEY)
    return status_pb2.Status.FromString(raw) if isinstance(raw, bytes) else status_pb2.Status()


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a peer's error (empty when it sent none)."""
    info = error_details_pb2.ErrorInfo()
    for detail in status_of(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    return info


def translate(error: grpc.aio.AioRpcError, peer: str) -> errors.DomainError:
    """The error to raise for a peer's refusal: its status, reason and metadata, kept."""
    message = f"{peer}: {error.details()}"
    if error.code() in _UNAVAILABLE:
        return errors.DependencyUnavailable(message, metadata={"service": peer})
    info = error_info(error)
    if error.code() is grpc.StatusCode.INVALID_ARGUMENT:
        request = error_details_pb2.BadRequest()
        for detail in status_of(error).details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                detail.Unpack(request)
        violations = [
            errors.FieldViolation(violation.field, violation.description, violation.reason)
            for violation in request.field_violations
        ]
        refused = errors.InvalidArgument(violations, message)
        refused.metadata.update(info.metadata)
        return refused
    passed = errors.DomainError(message, metadata=dict(info.metadata))
    passed.code = error.code()
    passed.reason = info.reason or error.code().name
    return passed
