"""The JSON codec: the proto3 JSON mapping (google.protobuf.json_format) in both directions.

Responses are written as grpc-gateway's default marshaler writes them: lowerCamelCase names,
fields at their default value included, 64-bit integers as strings, enums by name, well-known
types in their JSON form. Requests are read strictly: an unknown field, a value of the wrong type
or an enum name that does not exist is INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

from svc.kit.errors import FieldViolation, InvalidArgument

CONTENT_TYPE = "application/json"
_BOOLEANS = {"true": True, "false": False}
_LOCATION = re.compile(r" at [A-Za-z0-9_]+\.([A-Za-z0-9_.\[\]]+?)\.*$")


def encode(message: Message, pool: DescriptorPool) -> bytes:
    """The JSON body of a message."""
    document = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, descriptor_pool=pool
    )
    return dump(document)


def encode_field(message: Message, field_name: str, pool: DescriptorPool) -> bytes:
    """The JSON of one top-level field (a rule's `response_body`)."""
    field = message.DESCRIPTOR.fields_by_name[field_name]
    document = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, descriptor_pool=pool
    )
    return dump(document.get(field.json_name))


def dump(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def parse_json(raw: bytes) -> Any:
    """The parsed body; INVALID_ARGUMENT if it is not JSON."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidArgument([FieldViolation("body", f"not valid JSON: {error}")]) from None


def merge(document: Any, message: Message, pool: DescriptorPool, where: str) -> None:
    """Merges a JSON document into `message`; INVALID_ARGUMENT naming `where` if it does not fit."""
    if not isinstance(document, dict):
        raise InvalidArgument([FieldViolation(where, "must be a JSON object")])
    try:
        json_format.ParseDict(document, message, descriptor_pool=pool)
    except json_format.ParseError as error:
        # json_format ends its messages with "at Request.field.path"; name that field when it does.
        located = _LOCATION.search(str(error))
        field = located.group(1) if located else where
        raise InvalidArgument([FieldViolation(field, str(error))]) from None


def resolve(message: Descriptor, names: tuple[str, ...]) -> list[FieldDescriptor] | None:
    """The fields along a dotted path, each named by its proto or its JSON name; None if unknown."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for name in names:
        if current is None:
            return None
        field = current.fields_by_name.get(name) or _by_json_name(current).get(name)
        if field is None:
            return None
        fields.append(field)
        current = field.message_type
    return fields


def _by_json_name(message: Descriptor) -> Mapping[str, FieldDescriptor]:
    return {field.json_name: field for field in message.fields}


def text_value(field: FieldDescriptor, text: str, where: str) -> Any:
    """The JSON value of one textual value (a path variable, a query parameter) for `field`.

    Numbers, enums (name or number) and the string forms of well-known types are accepted by the
    JSON mapping as strings already; booleans are the one scalar it wants as JSON literals.
    """
    if field.type == FieldDescriptor.TYPE_BOOL:
        value = _BOOLEANS.get(text)
        if value is None:
            raise InvalidArgument([FieldViolation(where, f"expected true or false, got {text!r}")])
        return value
    return text


def nest(fields: list[FieldDescriptor], value: Any) -> dict[str, Any]:
    """`{a: {b: value}}` for the field path a.b, by proto names (which ParseDict accepts)."""
    document: Any = value
    for field in reversed(fields):
        document = {field.name: document}
    assert isinstance(document, dict)
    return document
