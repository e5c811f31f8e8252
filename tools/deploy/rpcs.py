"""Read-only RPCs of each gRPC service: `option idempotency_level = NO_SIDE_EFFECTS` in the contracts."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2

_NO_SIDE_EFFECTS = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


def read_only_methods(descriptor_set: Path) -> dict[str, tuple[str, ...]]:
    """Maps each fully qualified service name to the names of its read-only methods, sorted."""
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(descriptor_set.read_bytes())
    found: dict[str, tuple[str, ...]] = {}
    for file in files.file:
        for service in file.service:
            name = f"{file.package}.{service.name}" if file.package else service.name
            found[name] = tuple(
                sorted(m.name for m in service.method if m.options.idempotency_level == _NO_SIDE_EFFECTS)
            )
    return found
