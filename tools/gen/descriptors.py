"""Loads a FileDescriptorSet into a DescriptorPool and looks up the proto comments of its descriptors.

The set must be built with `--include_imports` (so that the pool resolves every type) and
`--include_source_info` (so that comments are available from SourceCodeInfo).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    EnumValueDescriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)

Commented = (
    Descriptor | EnumDescriptor | EnumValueDescriptor | FieldDescriptor | MethodDescriptor | ServiceDescriptor
)

# Field numbers of FileDescriptorProto / DescriptorProto / ... used in SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE = 2
_SERVICE_METHOD = 2


@dataclass(frozen=True)
class Contracts:
    """A loaded descriptor set: its pool, its files in set order and the comments of its elements."""

    pool: descriptor_pool.DescriptorPool
    files: tuple[FileDescriptor, ...]
    comments: dict[str, str]

    def comment(self, descriptor: Commented) -> str:
        """The leading comment of a descriptor, one leading space per line removed; "" if none."""
        return self.comments.get(_comment_key(descriptor), "")

    def packages(self, prefix: str = "finmesh.") -> list[str]:
        """Sorted names of the packages starting with `prefix`."""
        return sorted({file.package for file in self.files if file.package.startswith(prefix)})

    def package_files(self, package: str) -> list[FileDescriptor]:
        """The files of one package, sorted by name."""
        return sorted((file for file in self.files if file.package == package), key=lambda file: file.name)

    def services(self, prefix: str = "finmesh.") -> list[ServiceDescriptor]:
        """Every service of the packages starting with `prefix`, sorted by full name."""
        found = [
            service
            for file in self.files
            if file.package.startswith(prefix)
            for service in file.services_by_name.values()
        ]
        return sorted(found, key=lambda service: service.full_name)


def load(path: Path) -> Contracts:
    """Reads a serialized FileDescriptorSet and adds its files, in order, to a fresh pool."""
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    comments: dict[str, str] = {}
    for file_proto in descriptor_set.file:
        pool.Add(file_proto)
        comments.update(_file_comments(file_proto))
    files = tuple(pool.FindFileByName(file_proto.name) for file_proto in descriptor_set.file)
    return Contracts(pool=pool, files=files, comments=comments)


def _comment_key(descriptor: Commented) -> str:
    # Enum values are scoped next to their enum in protobuf; key them under the enum instead.
    if isinstance(descriptor, EnumValueDescriptor):
        return f"{descriptor.type.full_name}.{descriptor.name}"
    return descriptor.full_name


def _clean(comment: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in comment.split("\n")]
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def _file_comments(file_proto: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    """Maps the comment keys of a file's elements to their leading comments."""
    by_path = {
        tuple(location.path): _clean(location.leading_comments)
        for location in file_proto.source_code_info.location
        if location.leading_comments.strip()
    }
    names: dict[tuple[int, ...], str] = {}
    scope = f"{file_proto.package}." if file_proto.package else ""
    for index, message in enumerate(file_proto.message_type):
        _name_message(message, (_FILE_MESSAGE, index), scope + message.name, names)
    for index, enum in enumerate(file_proto.enum_type):
        _name_enum(enum, (_FILE_ENUM, index), scope + enum.name, names)
    for index, service in enumerate(file_proto.service):
        service_path = (_FILE_SERVICE, index)
        names[service_path] = scope + service.name
        for method_index, method in enumerate(service.method):
            names[(*service_path, _SERVICE_METHOD, method_index)] = f"{scope}{service.name}.{method.name}"
    return {name: by_path[path] for path, name in names.items() if path in by_path}


def _name_message(
    message: descriptor_pb2.DescriptorProto,
    path: tuple[int, ...],
    full_name: str,
    names: dict[tuple[int, ...], str],
) -> None:
    names[path] = full_name
    for index, field in enumerate(message.field):
        names[(*path, _MESSAGE_FIELD, index)] = f"{full_name}.{field.name}"
    for index, nested in enumerate(message.nested_type):
        _name_message(nested, (*path, _MESSAGE_NESTED, index), f"{full_name}.{nested.name}", names)
    for index, enum in enumerate(message.enum_type):
        _name_enum(enum, (*path, _MESSAGE_ENUM, index), f"{full_name}.{enum.name}", names)


def _name_enum(
    enum: descriptor_pb2.EnumDescriptorProto,
    path: tuple[int, ...],
    full_name: str,
    names: dict[tuple[int, ...], str],
) -> None:
    names[path] = full_name
    for index, value in enumerate(enum.value):
        names[(*path, _ENUM_VALUE, index)] = f"{full_name}.{value.name}"
