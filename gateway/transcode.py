"""HTTP request -> request message: the body, then the query parameters, then the path variables.

`body: "*"` fills the message from the JSON body (no query parameters then), `body: "field"`
fills that one field, and every field left over can be set by a query parameter. Path variables
are applied last, so a path value always wins over a body that repeats it.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

from gateway import codec, query
from gateway.router import Match
from svc.kit.errors import FieldViolation, InvalidArgument


def request_message(
    match: Match, parameters: Sequence[tuple[str, str]], body: bytes, pool: DescriptorPool
) -> Message:
    """The request of the matched RPC; InvalidArgument naming every field that does not fit."""
    route = match.route
    message = route.rpc.request_type()
    descriptor = route.rpc.method.input_type
    bound = set(match.variables)
    body_field = route.binding.body
    if body_field == "*":
        if parameters:
            raise InvalidArgument(
                [FieldViolation(name, "this route takes its fields in the body") for name, _ in parameters]
            )
        if body.strip():
            codec.merge(codec.parse_json(body), message, pool, "body")
    else:
        if body_field:
            field = descriptor.fields_by_name[body_field]
            if body.strip():
                codec.merge({field.name: codec.parse_json(body)}, message, pool, "body")
            bound.add((body_field,))
        elif body.strip():
            raise InvalidArgument([FieldViolation("body", "this route takes no body")])
        if parameters:
            codec.merge(query.document(descriptor, parameters, frozenset(bound)), message, pool, "query")
    for path, text in match.variables.items():
        fields = codec.resolve(descriptor, path)
        name = ".".join(path)
        if fields is None:
            raise ValueError(f"{route.rpc.full_name}: path variable {name} names no field")
        codec.merge(codec.nest(fields, codec.text_value(fields[-1], text, name)), message, pool, name)
    return message
