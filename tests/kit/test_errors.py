"""Domain errors map to statuses that fit in gRPC trailers, whatever the number of violations."""

from __future__ import annotations

from svc.kit import errors
from svc.kit.errors import FieldViolation, InvalidArgument

# grpc refuses trailers above 16 KiB; the client would see RESOURCE_EXHAUSTED instead.
TRAILER_BYTES_MAX = 16 * 1024


def test_thousands_of_violations_fit_in_the_trailers() -> None:
    violations = [
        FieldViolation(f"entries[{index}].entry_id", "does not match regex pattern `^[A-Za-z0-9._-]{8,120}$`")
        for index in range(5_000)
    ]
    error = InvalidArgument(violations)
    status = errors.to_status(error, service="ledger")
    assert len(status.SerializeToString()) + len(status.message) < TRAILER_BYTES_MAX
    assert len(error.violations) == errors.FIELD_VIOLATIONS_MAX
    assert error.metadata == {"violations": "5000"}
    assert error.message.endswith("and 4995 more")
    assert error.message.startswith("invalid request: entries[0].entry_id, entries[1].entry_id")


def test_a_few_violations_are_all_reported() -> None:
    error = InvalidArgument(
        [FieldViolation("amount", "must be positive"), FieldViolation("asset", "unknown")]
    )
    assert error.message == "invalid request: amount, asset"
    assert error.metadata == {}
    assert [violation.field for violation in error.violations] == ["amount", "asset"]
