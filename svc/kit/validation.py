"""Request validation from the contracts' protovalidate field rules, at the server boundary."""

from __future__ import annotations

from google.protobuf.message import Message

import protovalidate

from svc.kit.errors import FieldViolation, InvalidArgument

_validator = protovalidate.Validator()


def _field_path(violation: protovalidate.Violation) -> str:
    parts: list[str] = []
    for element in violation.proto.field.elements:
        name = element.field_name
        subscript = element.WhichOneof("subscript")
        if subscript is not None:
            name += f"[{getattr(element, subscript)}]"
        parts.append(name)
    return ".".join(parts)


def validate(message: Message) -> None:
    """Raises InvalidArgument listing every violated field rule of `message`; returns if valid."""
    violations = _validator.collect_violations(message)
    if violations:
        raise InvalidArgument(
            [
                FieldViolation(
                    field=_field_path(violation) or violation.proto.rule_id,
                    description=violation.proto.message,
                    reason=violation.proto.rule_id,
                )
                for violation in violations
            ]
        )
