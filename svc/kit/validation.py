"""Request validation from the contracts' protovalidate field rules, at the server boundary.

The rules are the `buf.validate` annotations in proto/. protovalidate's Python runtime
evaluates them through a pure-Python CEL interpreter, which costs milliseconds per request;
so the kit compiles the standard rules the contracts use (lengths, patterns, ranges, enums,
required, repeated bounds, nested messages) into plain Python checks once per message type,
and hands any message type carrying a rule outside that set (custom CEL, formats such as
email or URI) to protovalidate itself. tests/kit/test_validation.py checks that both agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

import protovalidate
from buf.validate import validate_pb2 as rules_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from svc.kit.errors import FieldViolation, InvalidArgument

_protovalidate = protovalidate.Validator()

UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
NUMERIC_KINDS = (
    "int32",
    "int64",
    "uint32",
    "uint64",
    "sint32",
    "sint64",
    "fixed32",
    "fixed64",
    "sfixed32",
    "sfixed64",
)
SUPPORTED_RULES: dict[str, frozenset[str]] = {
    "string": frozenset(
        {
            "const",
            "len",
            "min_len",
            "max_len",
            "min_bytes",
            "max_bytes",
            "pattern",
            "prefix",
            "suffix",
            "contains",
            "in",
            "not_in",
            "uuid",
            "example",
        }
    ),
    "bytes": frozenset({"min_len", "max_len", "len", "example"}),
    "enum": frozenset({"const", "defined_only", "in", "not_in", "example"}),
    "repeated": frozenset({"min_items", "max_items", "items"}),
    "bool": frozenset({"const", "example"}),
    "timestamp": frozenset({"example"}),
    "duration": frozenset({"example"}),
    **{
        kind: frozenset({"const", "lt", "lte", "gt", "gte", "in", "not_in", "example"})
        for kind in NUMERIC_KINDS
    },
}

Check = Callable[[Message], Iterator[FieldViolation]]


class Unsupported(Exception):
    """A rule the compiled validator does not implement: the message type goes to protovalidate."""


@dataclass(frozen=True)
class _Compiled:
    checks: tuple[Check, ...]


def _value_checks(
    path: str, rules: rules_pb2.FieldRules, field: FieldDescriptor
) -> list[Callable[[object], str]]:
    """Checks of one scalar value: each returns '' when fine, else the violation's description."""
    kind = rules.WhichOneof("type")
    if kind is None:
        return []
    typed = getattr(rules, kind)
    names = {descriptor.name for descriptor, _ in typed.ListFields()}
    if kind not in SUPPORTED_RULES or names - SUPPORTED_RULES[kind]:
        raise Unsupported(f"{path}: {kind} rules {sorted(names)}")
    checks: list[Callable[[object], str]] = []

    def add(condition: Callable[[object], bool], description: str) -> None:
        checks.append(lambda value: "" if condition(value) else description)

    if kind == "string":
        if typed.HasField("const"):
            add(lambda v, c=typed.const: v == c, f"must equal `{typed.const}`")
        if typed.HasField("len"):
            add(lambda v, n=typed.len: len(v) == n, f"must be {typed.len} characters")  # type: ignore[arg-type]
        if typed.HasField("min_len"):
            add(lambda v, n=typed.min_len: len(v) >= n, f"must be at least {typed.min_len} characters")  # type: ignore[arg-type]
        if typed.HasField("max_len"):
            add(lambda v, n=typed.max_len: len(v) <= n, f"must be at most {typed.max_len} characters")  # type: ignore[arg-type]
        if typed.HasField("min_bytes"):
            add(
                lambda v, n=typed.min_bytes: len(v.encode()) >= n, f"must be at least {typed.min_bytes} bytes"
            )  # type: ignore[attr-defined]
        if typed.HasField("max_bytes"):
            add(lambda v, n=typed.max_bytes: len(v.encode()) <= n, f"must be at most {typed.max_bytes} bytes")  # type: ignore[attr-defined]
        if typed.HasField("pattern"):
            regex = re.compile(typed.pattern)
            add(lambda v: regex.search(v) is not None, f"does not match regex pattern `{typed.pattern}`")  # type: ignore[arg-type]
        if typed.HasField("prefix"):
            add(lambda v, p=typed.prefix: v.startswith(p), f"does not have prefix `{typed.prefix}`")  # type: ignore[attr-defined]
        if typed.HasField("suffix"):
            add(lambda v, p=typed.suffix: v.endswith(p), f"does not have suffix `{typed.suffix}`")  # type: ignore[attr-defined]
        if typed.HasField("contains"):
            add(lambda v, p=typed.contains: p in v, f"does not contain substring `{typed.contains}`")  # type: ignore[operator]
        if typed.HasField("uuid") and typed.uuid:
            add(lambda v: UUID_PATTERN.match(v) is not None, "value must be a valid UUID")  # type: ignore[arg-type]
    elif kind == "bytes":
        if typed.HasField("min_len"):
            add(lambda v, n=typed.min_len: len(v) >= n, f"must be at least {typed.min_len} bytes")  # type: ignore[arg-type]
        if typed.HasField("max_len"):
            add(lambda v, n=typed.max_len: len(v) <= n, f"must be at most {typed.max_len} bytes")  # type: ignore[arg-type]
        if typed.HasField("len"):
            add(lambda v, n=typed.len: len(v) == n, f"must be {typed.len} bytes")  # type: ignore[arg-type]
    elif kind == "enum":
        if typed.HasField("const"):
            add(lambda v, c=typed.const: v == c, f"must equal {typed.const}")
        if typed.defined_only:
            defined = frozenset(value.number for value in field.enum_type.values)
            add(lambda v: v in defined, "value must be one of the defined enum values")
    elif kind == "bool":
        if typed.HasField("const"):
            add(lambda v, c=typed.const: v == c, f"must equal {str(typed.const).lower()}")
    elif kind in NUMERIC_KINDS:
        if typed.HasField("const"):
            add(lambda v, c=typed.const: v == c, f"must equal {typed.const}")
        if typed.HasField("gte"):
            add(lambda v, n=typed.gte: v >= n, f"must be greater than or equal to {typed.gte}")  # type: ignore[operator]
        if typed.HasField("gt"):
            add(lambda v, n=typed.gt: v > n, f"must be greater than {typed.gt}")  # type: ignore[operator]
        if typed.HasField("lte"):
            add(lambda v, n=typed.lte: v <= n, f"must be less than or equal to {typed.lte}")  # type: ignore[operator]
        if typed.HasField("lt"):
            add(lambda v, n=typed.lt: v < n, f"must be less than {typed.lt}")  # type: ignore[operator]
    if kind in ("string", "enum", *NUMERIC_KINDS):
        if len(typed.__getattribute__("in")):
            allowed = frozenset(typed.__getattribute__("in"))
            add(lambda v: v in allowed, f"must be in list {sorted(allowed)}")
        if len(typed.not_in):
            refused = frozenset(typed.not_in)
            add(lambda v: v not in refused, f"must not be in list {sorted(refused)}")
    return checks


def _field_rules(field: FieldDescriptor) -> rules_pb2.FieldRules | None:
    options = field.GetOptions()
    if options.HasExtension(rules_pb2.field):
        return options.Extensions[rules_pb2.field]
    return None


def _compile_field(field: FieldDescriptor) -> Check | None:
    rules = _field_rules(field)
    name = field.name
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    is_repeated = field.is_repeated
    is_map = is_message and field.message_type.GetOptions().map_entry
    if rules is not None and (rules.cel or rules.cel_expression):
        raise Unsupported(f"{name}: custom CEL")
    ignore = rules.ignore if rules is not None else rules_pb2.IGNORE_UNSPECIFIED
    if ignore == rules_pb2.IGNORE_ALWAYS:
        return None
    required = bool(rules and rules.required)
    has_presence = field.has_presence
    nested = _compiled(field.message_type) if is_message and not is_map else None
    if is_map:
        if rules is not None and rules.WhichOneof("type"):
            raise Unsupported(f"{name}: map rules")
        return None
    if is_repeated:
        item_checks: list[Callable[[object], str]] = []
        bounds: list[Callable[[object], str]] = []
        if rules is not None and rules.WhichOneof("type") == "repeated":
            repeated = rules.repeated
            if repeated.unique:
                raise Unsupported(f"{name}: repeated.unique")
            if repeated.HasField("min_items"):
                bounds.append(
                    lambda v, n=repeated.min_items: (
                        "" if len(v) >= n else f"must contain at least {n} item(s)"
                    )
                )  # type: ignore[arg-type]
            if repeated.HasField("max_items"):
                bounds.append(
                    lambda v, n=repeated.max_items: (
                        "" if len(v) <= n else f"must contain no more than {n} item(s)"
                    )
                )  # type: ignore[arg-type]
            if repeated.HasField("items"):
                if repeated.items.cel or repeated.items.required:
                    raise Unsupported(f"{name}: repeated.items cel/required")
                item_checks = _value_checks(name, repeated.items, field)
        elif rules is not None and rules.WhichOneof("type"):
            raise Unsupported(f"{name}: {rules.WhichOneof('type')} rules on a repeated field")
        if not (required or bounds or item_checks or (nested and nested.checks)):
            return None

        def check_repeated(message: Message) -> Iterator[FieldViolation]:
            values = getattr(message, name)
            if required and not len(values):
                yield FieldViolation(name, "value is required", "required")
                return
            for bound in bounds:
                if problem := bound(values):
                    yield FieldViolation(name, problem, "repeated")
            for index, value in enumerate(values):
                for value_check in item_checks:
                    if problem := value_check(value):
                        yield FieldViolation(f"{name}[{index}]", problem, "repeated.items")
                if nested is not None:
                    for violation in _run(nested, value):
                        yield FieldViolation(
                            f"{name}[{index}].{violation.field}", violation.description, violation.reason
                        )

        return check_repeated
    value_checks = [] if rules is None or is_message else _value_checks(name, rules, field)
    if rules is not None and is_message and rules.WhichOneof("type") not in (None, "timestamp", "duration"):
        raise Unsupported(f"{name}: {rules.WhichOneof('type')} rules")
    if not (required or value_checks or (nested and nested.checks)):
        return None
    skip_zero = ignore == rules_pb2.IGNORE_IF_ZERO_VALUE

    def check(message: Message) -> Iterator[FieldViolation]:
        if has_presence and not message.HasField(name):
            if required:
                yield FieldViolation(name, "value is required", "required")
            return
        value = getattr(message, name)
        if not has_presence and required and not value:
            yield FieldViolation(name, "value is required", "required")
            return
        if skip_zero and not has_presence and not value:
            return
        for value_check in value_checks:
            if problem := value_check(value):
                yield FieldViolation(name, problem, rules.WhichOneof("type") or "")  # type: ignore[union-attr]
        if nested is not None:
            for violation in _run(nested, value):
                yield FieldViolation(f"{name}.{violation.field}", violation.description, violation.reason)

    return check


def _run(compiled: _Compiled, message: Message) -> Iterator[FieldViolation]:
    for check in compiled.checks:
        yield from check(message)


@cache
def _compiled(descriptor: Descriptor) -> _Compiled:
    options = descriptor.GetOptions()
    if options.HasExtension(rules_pb2.message):
        message_rules = options.Extensions[rules_pb2.message]
        if message_rules.cel or message_rules.cel_expression or message_rules.oneof:
            raise Unsupported(f"{descriptor.full_name}: message rules")
    for oneof in descriptor.oneofs:
        if oneof.GetOptions().HasExtension(rules_pb2.oneof):
            raise Unsupported(f"{descriptor.full_name}.{oneof.name}: oneof rules")
    checks = [check for field in descriptor.fields if (check := _compile_field(field)) is not None]
    return _Compiled(tuple(checks))


@cache
def _is_compiled(descriptor: Descriptor) -> bool:
    try:
        _compiled(descriptor)
    except Unsupported:
        return False
    return True


def _protovalidate_violations(message: Message) -> list[FieldViolation]:
    violations = []
    for violation in _protovalidate.collect_violations(message):
        parts: list[str] = []
        for element in violation.proto.field.elements:
            part = element.field_name
            subscript = element.WhichOneof("subscript")
            if subscript is not None:
                part += f"[{getattr(element, subscript)}]"
            parts.append(part)
        violations.append(
            FieldViolation(
                ".".join(parts) or violation.proto.rule_id, violation.proto.message, violation.proto.rule_id
            )
        )
    return violations


def violations(message: Message) -> list[FieldViolation]:
    """Every violated field rule of `message` (empty when valid)."""
    if _is_compiled(message.DESCRIPTOR):
        return list(_run(_compiled(message.DESCRIPTOR), message))
    return _protovalidate_violations(message)


def validate(message: Message) -> None:
    """Raises InvalidArgument listing every violated field rule of `message`; returns if valid."""
    found = violations(message)
    if found:
        raise InvalidArgument(found)
