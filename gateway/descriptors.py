"""The contracts as the gateway sees them: the descriptor set in gen/, loaded into a pool of its own.

The pool also holds google.rpc.Status and its detail types (and google.protobuf.Any), which the
descriptor set does not import, so that error details render through the same JSON mapping as
responses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FileDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from tools.gen.http_rules import HttpBinding, method_bindings

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTOR_SET = ROOT / "gen" / "descriptors" / "finmesh.binpb"
OPENAPI_DOCUMENT = ROOT / "gen" / "openapi" / "finmesh.openapi.json"
SERVICE_PREFIX = "finmesh."
# Files every error body may need, in dependency order, from the installed googleapis packages.
_ERROR_FILES = (
    duration_pb2.DESCRIPTOR,
    any_pb2.DESCRIPTOR,
    status_pb2.DESCRIPTOR,
    error_details_pb2.DESCRIPTOR,
)


@dataclass(frozen=True)
class Rpc:
    """One annotated unary RPC: its descriptors, message classes and HTTP bindings."""

    service: ServiceDescriptor
    method: MethodDescriptor
    request_type: type[Message]
    response_type: type[Message]
    bindings: tuple[HttpBinding, ...]

    @property
    def full_name(self) -> str:
        """`finmesh.ledger.v1.LedgerService.GetLedgerAccount`: the name route policies use."""
        return self.method.full_name

    @property
    def grpc_path(self) -> str:
        """`/finmesh.ledger.v1.LedgerService/GetLedgerAccount`: the HTTP/2 path of the gRPC call."""
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def read_only(self) -> bool:
        """Marked `idempotency_level = NO_SIDE_EFFECTS` in the contract."""
        return bool(
            self.method.GetOptions().idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
        )


class Contracts:
    """A loaded descriptor set: the pool, and every annotated RPC of the finmesh services."""

    def __init__(self, descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
        self.descriptor_set = descriptor_set
        self.pool = descriptor_pool.DescriptorPool()
        names = set()
        for file_proto in descriptor_set.file:
            self.pool.Add(file_proto)
            names.add(file_proto.name)
        for file in _ERROR_FILES:
            if file.name not in names:
                proto = descriptor_pb2.FileDescriptorProto()
                file.CopyToProto(proto)
                self.pool.Add(proto)
        self.files: tuple[FileDescriptor, ...] = tuple(
            self.pool.FindFileByName(file_proto.name) for file_proto in descriptor_set.file
        )
        self.status_type = self.message_class(self.pool.FindMessageTypeByName("google.rpc.Status"))

    @classmethod
    def load(cls, path: Path = DESCRIPTOR_SET) -> Contracts:
        """Reads a serialized FileDescriptorSet (built with --include_imports)."""
        return cls(descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()))

    def message_class(self, descriptor: Descriptor) -> type[Message]:
        cls: type[Message] = message_factory.GetMessageClass(descriptor)
        return cls

    def services(self) -> Iterator[ServiceDescriptor]:
        """Every service of the finmesh packages, sorted by full name."""
        found = [
            service
            for file in self.files
            if file.package.startswith(SERVICE_PREFIX)
            for service in file.services_by_name.values()
        ]
        yield from sorted(found, key=lambda service: service.full_name)

    def rpcs(self) -> Iterator[Rpc]:
        """Every unary RPC with a `google.api.http` annotation; streaming ones are not transcoded."""
        for service in self.services():
            for method in service.methods:
                bindings = method_bindings(method)
                if not bindings or method.client_streaming or method.server_streaming:
                    continue
                yield Rpc(
                    service=service,
                    method=method,
                    request_type=self.message_class(method.input_type),
                    response_type=self.message_class(method.output_type),
                    bindings=tuple(bindings),
                )

    def any_message(self, type_name: str) -> Any:
        """A fresh message of a full type name from the pool."""
        return self.message_class(self.pool.FindMessageTypeByName(type_name))()
