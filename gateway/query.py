"""Query parameters: every request field not bound by the path or the body, by dotted name.

As in grpc-gateway's runtime/query.go, `a.b.c=v` sets the field path a.b.c (each part by its
proto name or its lowerCamelCase JSON name), a repeated field takes every value given for it,
enums are given by name or number, and Timestamp, Duration, FieldMask and the wrappers by their
JSON string form. A parameter that names no field, a field bound elsewhere, or a field that has
no single textual value is INVALID_ARGUMENT: a misspelled filter must never silently widen a query.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.codec import resolve, text_value
from svc.kit.errors import FieldViolation, InvalidArgument
from tools.gen.openapi_schemas import has_scalar_value

# Bounds a query string's cost: grpc-gateway has none, a URL limit bounds the rest.
QUERY_PARAMETERS_MAX = 256


def document(
    message: Descriptor, parameters: Iterable[tuple[str, str]], bound: frozenset[tuple[str, ...]]
) -> dict[str, Any]:
    """The JSON document (proto names) that the query parameters set on a `message` request."""
    result: dict[str, Any] = {}
    violations: list[FieldViolation] = []
    for count, (name, text) in enumerate(parameters):
        if count >= QUERY_PARAMETERS_MAX:
            raise InvalidArgument([FieldViolation("query", f"more than {QUERY_PARAMETERS_MAX} parameters")])
        fields = resolve(message, tuple(name.split("."))) if name else None
        problem = _problem(fields, bound)
        if problem:
            violations.append(FieldViolation(name, problem))
            continue
        assert fields is not None
        _set(result, fields, text_value(fields[-1], text, name))
    if violations:
        raise InvalidArgument(violations)
    return result


def _problem(fields: list[FieldDescriptor] | None, bound: frozenset[tuple[str, ...]]) -> str:
    if fields is None:
        return "no such request field"
    path = tuple(field.name for field in fields)
    if any(path[: length + 1] in bound for length in range(len(path))):
        return "bound by the path or the body; cannot be set as a query parameter"
    *parents, leaf = fields
    if any(parent.is_repeated or has_scalar_value(parent) for parent in parents):
        return "a repeated field or a scalar has no sub-fields"
    if not has_scalar_value(leaf):
        return "names a message; give its fields as dotted parameters"
    return ""


def _set(result: dict[str, Any], fields: list[FieldDescriptor], value: Any) -> None:
    node = result
    for field in fields[:-1]:
        node = node.setdefault(field.name, {})
    leaf = fields[-1]
    if leaf.is_repeated:
        node.setdefault(leaf.name, []).append(value)
    else:
        # The last value of a repeated parameter wins, as in grpc-gateway.
        node[leaf.name] = value
