"""JSON Schemas (OpenAPI 3.1) of protobuf messages and enums, following the proto3 JSON mapping.

Messages and enums become components named by their full proto name; well-known types with a
JSON form of their own (Timestamp, Duration, FieldMask, wrappers, Struct, Any...) are inlined.

Schemas of request values are `validated`: they carry the contracts' protovalidate rules
(tools/gen/openapi_rules.py). Schemas of response values do not: services do not hold their
responses to the request rules, and the edge writes every field without presence at its default
(an empty string where a pattern wants characters). A message that both requests and responses
hold, and whose rules (or those of a message it holds) give it a different request schema, has
two components: `<full name>` for responses and `<full name>-Input` for requests, as pydantic
names the two modes of one model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.api import field_behavior_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from tools.gen import openapi_rules
from tools.gen.descriptors import Commented

Schema = dict[str, Any]

_INT32: Schema = {"type": "integer", "format": "int32"}
_UINT32: Schema = {"type": "integer", "format": "uint32", "minimum": 0}
_SCALARS: dict[int, Schema] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    # 64-bit integers are strings in proto3 JSON: JavaScript numbers lose precision past 2^53.
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
}

_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Timestamp": {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339 time in UTC, for example `2024-01-31T12:00:00Z`.",
    },
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "description": "Seconds with up to nine fractional digits and an `s` suffix, for example `1.5s`.",
    },
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated lowerCamelCase field paths, for example `displayName,address.city`.",
    },
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object", "properties": {}},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string", "description": "Type URL of the embedded message."}},
        "required": ["@type"],
        "additionalProperties": True,
        "description": "A message of any type: its JSON fields next to `@type`.",
    },
}
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)


def has_scalar_value(field: FieldDescriptor) -> bool:
    """Whether a value of the field is a JSON scalar (not a message, or Timestamp, Duration, wrappers...)."""
    name = field.message_type.full_name if field.message_type is not None else ""
    return not name or name in _WRAPPERS or _WELL_KNOWN.get(name, {}).get("type") == "string"


def is_well_known(message: Descriptor) -> bool:
    """Whether a message type has a JSON form of its own instead of an object of its fields."""
    return message.full_name in _WRAPPERS or message.full_name in _WELL_KNOWN


INPUT_SUFFIX = "-Input"


def held_messages(roots: list[Descriptor]) -> frozenset[str]:
    """Full names of the messages in `roots` and of every message their fields hold, transitively."""
    found: set[str] = set()
    pending = list(roots)
    while pending:
        message = pending.pop()
        if message.full_name in found:
            continue
        found.add(message.full_name)
        pending += [field.message_type for field in message.fields if field.message_type is not None]
    return frozenset(found)


def component_ref(name: str) -> Schema:
    """A `$ref` to the component schema `name`."""
    return {"$ref": f"#/components/schemas/{name}"}


class SchemaRegistry:
    """Builds schemas and collects the component of every message and enum they reference."""

    def __init__(self, comment: Callable[[Commented], str], outputs: frozenset[str] = frozenset()) -> None:
        """`outputs`: the full names of the messages that responses hold (see `held_messages`)."""
        self._comment = comment
        self._outputs = outputs
        self._validated: dict[str, bool] = {}
        self.components: dict[str, Schema] = {}

    def message(self, message: Descriptor, validated: bool = False) -> Schema:
        """The schema of a message used somewhere: a `$ref`, or the inline form of a well-known type."""
        if message.full_name in _WRAPPERS:
            value = dict(_SCALARS[message.fields_by_name["value"].type])
            return {**value, "type": [value["type"], "null"]}
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        validated = validated and openapi_rules.carries_rules(message)
        name = message.full_name
        if validated and name in self._outputs:
            name += INPUT_SUFFIX
        if name not in self.components:
            self._validated[name] = validated
            self.components[name] = {}  # reserved first: messages may refer to themselves
            self.components[name] = self.object_schema(message, validated=validated)
        elif self._validated[name] != validated:
            raise ValueError(f"{name}: requests and responses hold it, but it is not among the outputs")
        return component_ref(name)

    def enum(self, enum: EnumDescriptor) -> Schema:
        """A `$ref` to the component of an enum: a string of its value names."""
        if enum.full_name not in self.components:
            lines = [self._comment(enum), ""] if self._comment(enum) else []
            lines += [_describe_value(value.name, self._comment(value)) for value in enum.values]
            self.components[enum.full_name] = {
                "type": "string",
                "enum": [value.name for value in enum.values],
                "description": "\n".join(lines),
            }
        return component_ref(enum.full_name)

    def object_schema(
        self, message: Descriptor, exclude: frozenset[str] = frozenset(), validated: bool = False
    ) -> Schema:
        """The object schema of a message's fields (except those named in `exclude`), with its comment."""
        schema: Schema = {"type": "object", "properties": {}}
        required: list[str] = []
        oneof_notes = _oneof_notes(message)
        for field in message.fields:
            if field.name in exclude:
                continue
            property_schema = self.field(field, validated)
            note = oneof_notes.get(field.name)
            if note:
                property_schema["description"] = f"{property_schema.get('description', '')}\n\n{note}".strip()
            behaviors = set(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                property_schema["readOnly"] = True
            if field_behavior_pb2.INPUT_ONLY in behaviors:
                property_schema["writeOnly"] = True
            if field_behavior_pb2.REQUIRED in behaviors or (validated and openapi_rules.json_required(field)):
                required.append(field.json_name)
            schema["properties"][field.json_name] = property_schema
        if required:
            schema["required"] = required
        if self._comment(message):
            schema["description"] = self._comment(message)
        if validated:
            openapi_rules.constrain_message(schema, message, exclude)
        return schema

    def field(self, field: FieldDescriptor, validated: bool = False) -> Schema:
        """The schema of a field's JSON value, with the field's comment as description; `validated`
        adds the field's protovalidate rules (for request values)."""
        validated = validated and not openapi_rules.rules_ignored(field)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            values = self._value(field.message_type.fields_by_name["value"], validated)
            schema: Schema = {"type": "object", "additionalProperties": values}
        elif field.is_repeated:
            schema = {"type": "array", "items": self._value(field, validated)}
        else:
            schema = self._value(field, validated)
        if self._comment(field):
            schema["description"] = self._comment(field)
        if field.GetOptions().deprecated:
            schema["deprecated"] = True
        if validated:
            nullable = field.message_type is not None and field.message_type.full_name in _WRAPPERS
            openapi_rules.constrain(schema, field, nullable=nullable and not field.is_repeated)
        return schema

    def _value(self, field: FieldDescriptor, validated: bool) -> Schema:
        """The schema of one value of the field, ignoring repetition."""
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        if field.message_type is not None:
            return self.message(field.message_type, validated)
        return dict(_SCALARS[field.type])


def _describe_value(name: str, comment: str) -> str:
    flat = " ".join(comment.split())
    return f"- `{name}`: {flat}" if flat else f"- `{name}`"


def _oneof_notes(message: Descriptor) -> dict[str, str]:
    """For each member of a real (not proto3 `optional`) oneof, a note naming its alternatives."""
    proto = descriptor_pb2.DescriptorProto()
    message.CopyToProto(proto)
    optional = {field.name for field in proto.field if field.proto3_optional}
    notes: dict[str, str] = {}
    for oneof in message.oneofs:
        members = [field for field in oneof.fields if field.name not in optional]
        names = ", ".join(f"`{field.json_name}`" for field in members)
        for field in members:
            notes[field.name] = f"Part of oneof `{oneof.name}`: at most one of {names} is set."
    return notes
