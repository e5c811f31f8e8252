"""Domain errors and their one mapping to gRPC status with google.rpc error details.

Services raise these; the kit's error interceptor turns them into a google.rpc.Status with an
ErrorInfo (reason, domain, metadata) or a BadRequest (field violations). Any other exception
becomes INTERNAL with no detail leaked to the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN_SUFFIX = ".finmesh.io"
# The status travels in trailers, which grpc caps at 16 KiB: a batch with thousands of bad
# entries would otherwise turn INVALID_ARGUMENT into the client's RESOURCE_EXHAUSTED.
FIELD_VIOLATIONS_MAX = 25
MESSAGE_FIELDS_MAX = 5


@dataclass(frozen=True)
class FieldViolation:
    """One field that failed validation: a dotted path and what is wrong with it."""

    field: str
    description: str
    reason: str = ""


class DomainError(Exception):
    """Base of every error a service reports to its callers on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION
    reason: str = "FAILED_PRECONDITION"

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})


class InvalidArgument(DomainError):
    """The request is malformed; lists the violated fields (the first FIELD_VIOLATIONS_MAX)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[FieldViolation], message: str = "") -> None:
        fields = ", ".join(violation.field for violation in violations[:MESSAGE_FIELDS_MAX])
        if len(violations) > MESSAGE_FIELDS_MAX:
            fields += f" and {len(violations) - MESSAGE_FIELDS_MAX} more"
        super().__init__(
            message or f"invalid request: {fields}",
            metadata={"violations": str(len(violations))} if len(violations) > FIELD_VIOLATIONS_MAX else None,
        )
        self.violations = tuple(violations[:FIELD_VIOLATIONS_MAX])


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class IdempotencyKeyReused(DomainError):
    """The request_id was used before with a different request."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "IDEMPOTENCY_KEY_REUSED"


class InvalidState(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "INVALID_STATE"


class InsufficientFunds(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "INSUFFICIENT_FUNDS"


class LimitExceeded(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "LIMIT_EXCEEDED"


class Frozen(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FROZEN"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class Conflict(DomainError):
    """A concurrent change won; the caller may retry with fresh state."""

    code = grpc.StatusCode.ABORTED
    reason = "CONFLICT"


class Unimplemented(DomainError):
    """The RPC is part of the contract but this deployment does not implement it yet."""

    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


class DependencyUnavailable(DomainError):
    """Nothing was applied because a dependency did not answer; the status carries a RetryInfo
    (the edge turns it into Retry-After)."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "DEPENDENCY_UNAVAILABLE"
    retry_after_s = 1.0


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(error: DomainError, *, service: str) -> status_pb2.Status:
    """The google.rpc.Status for a domain error, with ErrorInfo and, for bad input, BadRequest."""
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=f"{service}{ERROR_DOMAIN_SUFFIX}", metadata=error.metadata
            )
        )
    ]
    if isinstance(error, InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=violation.field, description=violation.description, reason=violation.reason
                        )
                        for violation in error.violations
                    ]
                )
            )
        )
    if isinstance(error, DependencyUnavailable):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        details.append(_pack(retry))
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)


def internal_status() -> status_pb2.Status:
    """What callers see for an unexpected failure: nothing of the internals."""
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
