"""Request validation from the contracts' protovalidate field rules, at the server boundary.

The rules are the `buf.validate` annotations in proto/. protovalidate's Python runtime
evaluates them through a pure-Python CEL interpreter, which costs milliseconds per request;
so the kit compiles the standard rules the contracts use (lengths, patterns, ranges, enums,
required, repeated bounds, nested messages) into plain Python checks once per message type,
and hands any message type carrying a rule outside that set (custom CEL, formats such as
email or URI) to protovalidate itself. Patterns keep RE2's meaning (see _python_pattern).
tests/kit/test_validation.py checks that both agree.
"""

from __future__ import annotations

import operator
import re
import threading
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TypeAlias

import protovalidate
import re2
from buf.validate import validate_pb2 as rules_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from svc.kit.errors import FieldViolation, InvalidArgument

if TYPE_CHECKING:
    from google._upb._message import Descriptor as UpbDescriptor

# Message.DESCRIPTOR is typed as either protobuf's Python Descriptor or upb's.
AnyDescriptor: TypeAlias = "Descriptor | UpbDescriptor"

# protovalidate's Validator is not annotated.
_protovalidate = protovalidate.Validator()  # type: ignore[no-untyped-call]

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
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
    # Fixed bounds only: rules relative to the clock (lt_now, gt_now, within) go to protovalidate.
    "timestamp": frozenset({"example", "const", "lt", "lte", "gt", "gte"}),
    "duration": frozenset({"example", "const", "lt", "lte", "gt", "gte"}),
    "field_mask": frozenset({"example", "const", "in", "not_in"}),
    **{
        kind: frozenset({"const", "lt", "lte", "gt", "gte", "in", "not_in", "example"})
        for kind in NUMERIC_KINDS
    },
}

Check = Callable[[Message], Iterator[FieldViolation]]
# A check of one field value (str, bytes, int or bool, by the field's kind): '' when the value
# passes, else the violation's description.
ValueCheck = Callable[[Any], str]
Test = Callable[[Any, Any], bool]


def _nested(prefix: str, field: str) -> str:
    # A message-level rule of a nested message names no field of its own: the path is the field
    # that holds the message, as protovalidate reports it.
    return f"{prefix}.{field}" if field else prefix


# CEL rules whose meaning a service has written in Python, by rule id. protovalidate stays the
# reference: each registration is checked against it by the service's tests.
_CEL_RULES: dict[str, Callable[[Any], bool]] = {}


def register_cel_rule(rule_id: str, holds: Callable[[Any], bool]) -> None:
    """Gives the compiled validator a Python form of the message-level CEL rule `rule_id`.

    `holds(message)` must return what the rule's CEL expression returns. Message types whose
    every CEL rule is registered are validated without protovalidate's CEL interpreter, which
    costs milliseconds per message; types with any other CEL rule still go to protovalidate.
    """
    if _CEL_RULES.get(rule_id, holds) is not holds:
        raise ValueError(f"CEL rule {rule_id!r} is already registered with another function")
    _CEL_RULES[rule_id] = holds
    _is_compiled.cache_clear()


def _cel_check(rule: rules_pb2.Rule, type_name: str) -> Check:
    holds = _CEL_RULES.get(rule.id)
    if holds is None:
        raise Unsupported(f"{type_name}: CEL rule {rule.id!r} has no registered Python form")
    description = rule.message or f"rule {rule.id} is not satisfied"

    def check(message: Message) -> Iterator[FieldViolation]:
        if not holds(message):
            yield FieldViolation("", description, rule.id)

    return check


class Unsupported(Exception):
    """A rule the compiled validator does not implement: the message type goes to protovalidate."""


@dataclass
class _Compiled:
    """The checks of one message type; `building` while its fields are being compiled, since a
    recursive type refers to itself before its checks are known."""

    checks: tuple[Check, ...] = ()
    building: bool = True


# Patterns are RE2 (protovalidate's engine), which differs from Python's re in places: `$` is the
# end of the text (Python's also matches before a final newline), \d \w \s \b are ASCII, and a few
# forms mean different things or are errors in one engine. _python_pattern rewrites the patterns
# whose meaning it is sure of; any other pattern runs through RE2 itself, correct but slower.
_RE2_SPACE = "\\t\\n\\f\\r "
_SAME_ESCAPES = frozenset("dDwWtnfrv")  # same meaning in RE2 and in Python's re.ASCII
_REPEAT = re.compile(r"\{\d+(,\d*)?\}")


def _python_pattern(pattern: str) -> str | None:
    """`pattern` rewritten for Python's re (with re.ASCII) to match as RE2 does; None when unsure."""
    out: list[str] = []
    in_class = False
    class_start = 0
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escaped = pattern[i + 1 : i + 2]
            if not escaped:
                return None
            if in_class and pattern[i + 2 : i + 3] == "-":
                return None  # a range from an escape
            if escaped.isascii() and not escaped.isalnum():
                out.append(char + escaped)  # escaped ASCII punctuation is itself in both
            elif escaped in _SAME_ESCAPES or (escaped in "bBA" and not in_class):
                out.append(char + escaped)
            elif escaped == "s":
                out.append(_RE2_SPACE if in_class else f"[{_RE2_SPACE}]")
            elif escaped == "S" and not in_class:
                out.append(f"[^{_RE2_SPACE}]")
            elif escaped == "z" and not in_class:
                out.append("\\Z")
            else:
                return None
            i += 2
            continue
        if in_class:
            if (
                char == "["
                or (char == "]" and i == class_start)
                or pattern[i : i + 2] in ("--", "&&", "~~", "||")
            ):
                return None  # POSIX classes, a leading ], set operations: engines disagree
            in_class = char != "]"
            out.append(char)
        elif char == "[":
            in_class = True
            class_start = i + 2 if pattern[i + 1 : i + 2] == "^" else i + 1
            out.append(pattern[i:class_start])
            i = class_start
            continue
        elif char == "$":
            out.append("\\Z")
        elif char == "(" and pattern[i + 1 : i + 2] == "?":
            if pattern[i + 2 : i + 3] != ":":
                return None  # flags and named groups
            out.append(char)
        elif char == "{":
            repeat = _REPEAT.match(pattern, i)
            if repeat is None or max(int(count) for count in re.findall(r"\d+", repeat.group())) > 1000:
                return None  # `{,n}`, stray braces, counts beyond RE2's limit
            out.append(repeat.group())
            i = repeat.end()
            if pattern[i : i + 1] == "+":
                return None  # possessive in Python, an error in RE2
            continue
        elif char in "*+?" and pattern[i + 1 : i + 2] == "+":
            return None
        else:
            out.append(char)
        i += 1
    return None if in_class else "".join(out)


def _searcher(pattern: str) -> Callable[[str], object]:
    """A search function that finds `pattern` in a string as RE2 does (None when it does not)."""
    python = _python_pattern(pattern)
    if python is not None:
        try:
            return re.compile(python, re.ASCII).search
        except re.error:
            pass
    try:
        search: Callable[[str], object] = re2.compile(pattern).search
    except re2.error as error:
        raise Unsupported(f"pattern {pattern!r}: {error}") from error
    return search


def _holds(test: Test, bound: Any, description: str) -> ValueCheck:
    def check(value: Any) -> str:
        return "" if test(value, bound) else description

    return check


def _length_holds(test: Test, bound: int, description: str) -> ValueCheck:
    def check(value: Sized) -> str:
        return "" if test(len(value), bound) else description

    return check


def _utf8_length_holds(test: Test, bound: int, description: str) -> ValueCheck:
    def check(value: str) -> str:
        return "" if test(len(value.encode()), bound) else description

    return check


def _matches(pattern: str, description: str) -> ValueCheck:
    search = _searcher(pattern)

    def check(value: str) -> str:
        return "" if search(value) is not None else description

    return check


def _is_in(allowed: frozenset[Any], description: str) -> ValueCheck:
    def check(value: Any) -> str:
        return "" if value in allowed else description

    return check


def _not_in(refused: frozenset[Any], description: str) -> ValueCheck:
    def check(value: Any) -> str:
        return "" if value not in refused else description

    return check


def _has_prefix(value: str, prefix: str) -> bool:
    return value.startswith(prefix)


def _has_suffix(value: str, suffix: str) -> bool:
    return value.endswith(suffix)


def _value_checks(path: str, rules: rules_pb2.FieldRules, field: FieldDescriptor) -> list[ValueCheck]:
    """Checks of one scalar value, from the rules of its kind."""
    kind = rules.WhichOneof("type")
    if kind is None:
        return []
    typed: Any = getattr(rules, kind)
    names = {descriptor.name for descriptor, _ in typed.ListFields()}
    if kind not in SUPPORTED_RULES or names - SUPPORTED_RULES[kind]:
        raise Unsupported(f"{path}: {kind} rules {sorted(names)}")
    checks: list[ValueCheck] = []
    if kind == "string":
        if typed.HasField("const"):
            checks.append(_holds(operator.eq, typed.const, f"must equal `{typed.const}`"))
        if typed.HasField("len"):
            checks.append(_length_holds(operator.eq, typed.len, f"must be {typed.len} characters"))
        if typed.HasField("min_len"):
            checks.append(
                _length_holds(operator.ge, typed.min_len, f"must be at least {typed.min_len} characters")
            )
        if typed.HasField("max_len"):
            checks.append(
                _length_holds(operator.le, typed.max_len, f"must be at most {typed.max_len} characters")
            )
        if typed.HasField("min_bytes"):
            checks.append(
                _utf8_length_holds(operator.ge, typed.min_bytes, f"must be at least {typed.min_bytes} bytes")
            )
        if typed.HasField("max_bytes"):
            checks.append(
                _utf8_length_holds(operator.le, typed.max_bytes, f"must be at most {typed.max_bytes} bytes")
            )
        if typed.HasField("pattern"):
            checks.append(_matches(typed.pattern, f"does not match regex pattern `{typed.pattern}`"))
        if typed.HasField("prefix"):
            checks.append(_holds(_has_prefix, typed.prefix, f"does not have prefix `{typed.prefix}`"))
        if typed.HasField("suffix"):
            checks.append(_holds(_has_suffix, typed.suffix, f"does not have suffix `{typed.suffix}`"))
        if typed.HasField("contains"):
            checks.append(
                _holds(operator.contains, typed.contains, f"does not contain substring `{typed.contains}`")
            )
        if typed.HasField("uuid") and typed.uuid:
            checks.append(_matches(UUID_PATTERN, "value must be a valid UUID"))
    elif kind == "bytes":
        if typed.HasField("min_len"):
            checks.append(
                _length_holds(operator.ge, typed.min_len, f"must be at least {typed.min_len} bytes")
            )
        if typed.HasField("max_len"):
            checks.append(_length_holds(operator.le, typed.max_len, f"must be at most {typed.max_len} bytes"))
        if typed.HasField("len"):
            checks.append(_length_holds(operator.eq, typed.len, f"must be {typed.len} bytes"))
    elif kind == "enum":
        if typed.HasField("const"):
            checks.append(_holds(operator.eq, typed.const, f"must equal {typed.const}"))
        if typed.defined_only:
            enum = field.enum_type
            assert enum is not None, f"{path}: enum rules on a field that is not an enum"
            defined = frozenset(value.number for value in enum.values)
            checks.append(_is_in(defined, "value must be one of the defined enum values"))
    elif kind == "bool":
        if typed.HasField("const"):
            checks.append(_holds(operator.eq, typed.const, f"must equal {str(typed.const).lower()}"))
    elif kind in NUMERIC_KINDS:
        lower = [typed.gt] if typed.HasField("gt") else [typed.gte] if typed.HasField("gte") else []
        upper = [typed.lt] if typed.HasField("lt") else [typed.lte] if typed.HasField("lte") else []
        if lower and upper and upper[0] < lower[0]:
            raise Unsupported(f"{path}: {kind} range reversed (the value must lie outside it)")
        if typed.HasField("const"):
            checks.append(_holds(operator.eq, typed.const, f"must equal {typed.const}"))
        if typed.HasField("gte"):
            checks.append(_holds(operator.ge, typed.gte, f"must be greater than or equal to {typed.gte}"))
        if typed.HasField("gt"):
            checks.append(_holds(operator.gt, typed.gt, f"must be greater than {typed.gt}"))
        if typed.HasField("lte"):
            checks.append(_holds(operator.le, typed.lte, f"must be less than or equal to {typed.lte}"))
        if typed.HasField("lt"):
            checks.append(_holds(operator.lt, typed.lt, f"must be less than {typed.lt}"))
    elif kind in ("duration", "timestamp"):
        checks.extend(_time_bound_checks(path, kind, typed))
    elif kind == "field_mask":
        checks.extend(_field_mask_checks(typed))
    if kind in ("string", "enum", *NUMERIC_KINDS):
        allowed = frozenset(getattr(typed, "in"))
        if allowed:
            checks.append(_is_in(allowed, f"must be in list {sorted(allowed)}"))
        refused = frozenset(typed.not_in)
        if refused:
            checks.append(_not_in(refused, f"must not be in list {sorted(refused)}"))
    return checks


_TIME_COMPARISONS: dict[str, tuple[Test, str]] = {
    "const": (operator.eq, "must equal"),
    "gte": (operator.ge, "must be greater than or equal to"),
    "gt": (operator.gt, "must be greater than"),
    "lte": (operator.le, "must be less than or equal to"),
    "lt": (operator.lt, "must be less than"),
}


def _instant(value: Any) -> tuple[int, int]:
    """A Duration or Timestamp as a comparable (seconds, nanos) pair."""
    return (value.seconds, value.nanos)


def _time_bound_checks(path: str, kind: str, typed: Any) -> list[ValueCheck]:
    bounds = {name: _instant(getattr(typed, name)) for name in _TIME_COMPARISONS if typed.HasField(name)}
    lower = bounds.get("gt", bounds.get("gte"))
    upper = bounds.get("lt", bounds.get("lte"))
    if lower is not None and upper is not None and upper < lower:
        raise Unsupported(f"{path}: {kind} range reversed (the value must lie outside it)")
    checks = []
    for name, bound in bounds.items():
        compare, words = _TIME_COMPARISONS[name]
        shown = getattr(typed, name)
        checks.append(_holds(_compare_instants(compare), bound, f"{words} {shown.seconds}s {shown.nanos}ns"))
    return checks


def _covers(listed: frozenset[str], path: str) -> bool:
    """Whether `path` is one of `listed` or lies under one of them (`a.b` under `a`)."""
    return path in listed or any(path.startswith(prefix + ".") for prefix in listed)


def _field_mask_checks(typed: Any) -> list[ValueCheck]:
    checks: list[ValueCheck] = []
    if typed.HasField("const"):
        expected = list(typed.const.paths)
        checks.append(
            _holds(lambda mask, paths: list(mask.paths) == paths, expected, f"must equal paths {expected}")
        )
    allowed = frozenset(getattr(typed, "in"))
    if allowed:
        checks.append(
            _holds(
                lambda mask, listed: all(_covers(listed, path) for path in mask.paths),
                allowed,
                f"must only contain paths in {sorted(allowed)}",
            )
        )
    refused = frozenset(typed.not_in)
    if refused:
        checks.append(
            _holds(
                lambda mask, listed: not any(_covers(listed, path) for path in mask.paths),
                refused,
                f"must not contain any paths in {sorted(refused)}",
            )
        )
    return checks


def _compare_instants(compare: Test) -> Test:
    def test(value: Any, bound: tuple[int, int]) -> bool:
        return bool(compare(_instant(value), bound))

    return test


def _field_rules(field: FieldDescriptor) -> rules_pb2.FieldRules | None:
    options = field.GetOptions()
    if options.HasExtension(rules_pb2.field):
        return options.Extensions[rules_pb2.field]
    return None


def _has_checks(nested: _Compiled | None) -> bool:
    return nested is not None and (nested.building or bool(nested.checks))


def _repeated_bounds(rules: rules_pb2.RepeatedRules) -> list[ValueCheck]:
    bounds: list[ValueCheck] = []
    if rules.HasField("min_items"):
        n = rules.min_items
        bounds.append(_length_holds(operator.ge, n, f"must contain at least {n} item(s)"))
    if rules.HasField("max_items"):
        n = rules.max_items
        bounds.append(_length_holds(operator.le, n, f"must contain no more than {n} item(s)"))
    return bounds


def _compile_repeated(
    field: FieldDescriptor, rules: rules_pb2.FieldRules | None, nested: _Compiled | None
) -> Check | None:
    name = field.name
    required = bool(rules and rules.required)
    skip_empty = rules is not None and rules.ignore == rules_pb2.IGNORE_IF_ZERO_VALUE
    item_checks: list[ValueCheck] = []
    bounds: list[ValueCheck] = []
    kind = rules.WhichOneof("type") if rules is not None else None
    if rules is not None and kind == "repeated":
        repeated = rules.repeated
        if repeated.unique:
            raise Unsupported(f"{name}: repeated.unique")
        bounds = _repeated_bounds(repeated)
        if repeated.HasField("items"):
            items = repeated.items
            if items.cel or items.cel_expression or items.required or items.ignore:
                raise Unsupported(f"{name}: repeated.items cel/required/ignore")
            item_checks = _value_checks(name, items, field)
    elif kind is not None:
        raise Unsupported(f"{name}: {kind} rules on a repeated field")
    if not (required or bounds or item_checks or _has_checks(nested)):
        return None

    def check_repeated(message: Message) -> Iterator[FieldViolation]:
        values = getattr(message, name)
        if not len(values):
            if required:
                yield FieldViolation(name, "value is required", "required")
                return
            if skip_empty:
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
                        _nested(f"{name}[{index}]", violation.field), violation.description, violation.reason
                    )

    return check_repeated


def _compile_single(
    field: FieldDescriptor, rules: rules_pb2.FieldRules | None, nested: _Compiled | None
) -> Check | None:
    name = field.name
    kind = rules.WhichOneof("type") if rules is not None else None
    if field.type == FieldDescriptor.TYPE_MESSAGE and kind not in (
        None,
        "timestamp",
        "duration",
        "field_mask",
    ):
        raise Unsupported(f"{name}: {kind} rules")
    value_checks = [] if rules is None else _value_checks(name, rules, field)
    required = bool(rules and rules.required)
    if not (required or value_checks or _has_checks(nested)):
        return None
    has_presence = field.has_presence
    zero = field.default_value
    skip_zero = rules is not None and rules.ignore == rules_pb2.IGNORE_IF_ZERO_VALUE
    reason = kind or ""

    def check(message: Message) -> Iterator[FieldViolation]:
        if has_presence and not message.HasField(name):
            if required:
                yield FieldViolation(name, "value is required", "required")
            return
        value = getattr(message, name)
        if not has_presence and value == zero:
            if required:
                yield FieldViolation(name, "value is required", "required")
                return
            if skip_zero:
                return
        for value_check in value_checks:
            if problem := value_check(value):
                yield FieldViolation(name, problem, reason)
        if nested is not None:
            for violation in _run(nested, value):
                yield FieldViolation(_nested(name, violation.field), violation.description, violation.reason)

    return check


def _map_entry_checks(
    name: str, entry_field: FieldDescriptor, rules: rules_pb2.FieldRules
) -> list[ValueCheck]:
    if rules.cel or rules.cel_expression or rules.required or rules.ignore:
        raise Unsupported(f"{name}: map {entry_field.name} cel/required/ignore")
    return _value_checks(f"{name}.{entry_field.name}", rules, entry_field)


def _compile_map_rules(
    name: str, entry_type: Descriptor, rules: rules_pb2.MapRules, values: Check | None
) -> Check | None:
    """Pair-count bounds and key and value rules of a map (paths `name[key]`, as protovalidate's)."""
    key_checks = (
        _map_entry_checks(name, entry_type.fields_by_name["key"], rules.keys)
        if rules.HasField("keys")
        else []
    )
    value_checks = (
        _map_entry_checks(name, entry_type.fields_by_name["value"], rules.values)
        if rules.HasField("values")
        else []
    )
    bounds: list[ValueCheck] = []
    if rules.HasField("min_pairs"):
        bounds.append(
            _length_holds(operator.ge, rules.min_pairs, f"map must be at least {rules.min_pairs} entries")
        )
    if rules.HasField("max_pairs"):
        bounds.append(
            _length_holds(operator.le, rules.max_pairs, f"map must be at most {rules.max_pairs} entries")
        )

    def check_map(message: Message) -> Iterator[FieldViolation]:
        pairs = getattr(message, name)
        for bound in bounds:
            if problem := bound(pairs):
                yield FieldViolation(name, problem, "map")
        for key, value in pairs.items():
            for key_check in key_checks:
                if problem := key_check(key):
                    yield FieldViolation(f"{name}[{key}]", problem, "map.keys")
            for value_check in value_checks:
                if problem := value_check(value):
                    yield FieldViolation(f"{name}[{key}]", problem, "map.values")
        if values is not None:
            yield from values(message)

    return check_map


def _compile_map_values(name: str, nested: _Compiled) -> Check | None:
    """The checks of a map's message values (maps with rules of their own go to protovalidate)."""
    if not _has_checks(nested):
        return None

    def check_map(message: Message) -> Iterator[FieldViolation]:
        for key, value in getattr(message, name).items():
            for violation in _run(nested, value):
                yield FieldViolation(
                    _nested(f"{name}[{key}]", violation.field), violation.description, violation.reason
                )

    return check_map


def _compile_field(field: FieldDescriptor) -> Check | None:
    rules = _field_rules(field)
    if rules is not None and rules.ignore == rules_pb2.IGNORE_ALWAYS:
        return None
    if rules is not None and rules.cel_expression:
        raise Unsupported(f"{field.name}: custom CEL")
    standard = _compile_standard_field(field, rules)
    if rules is None or not rules.cel:
        return standard
    return _with_field_cel(field, rules, standard)


def _with_field_cel(field: FieldDescriptor, rules: rules_pb2.FieldRules, standard: Check | None) -> Check:
    """The field's standard checks, then its registered CEL rules, evaluated on the field's value."""
    type_name = field.containing_type.full_name if field.containing_type else field.name
    cel_checks = [_cel_check(rule, f"{type_name}.{field.name}") for rule in rules.cel]
    name = field.name
    has_presence = field.has_presence
    skip_zero = rules.ignore == rules_pb2.IGNORE_IF_ZERO_VALUE

    def check(message: Message) -> Iterator[FieldViolation]:
        if standard is not None:
            yield from standard(message)
        if has_presence and not message.HasField(name):
            return
        value = getattr(message, name)
        if skip_zero and not has_presence and not value:
            return
        for cel_check in cel_checks:
            for violation in cel_check(value):
                yield FieldViolation(name, violation.description, violation.reason)

    return check


def _compile_standard_field(field: FieldDescriptor, rules: rules_pb2.FieldRules | None) -> Check | None:
    name = field.name
    message_type = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
    if message_type is not None and message_type.GetOptions().map_entry:
        if rules is not None and rules.required:
            raise Unsupported(f"{name}: required map")
        kind = rules.WhichOneof("type") if rules is not None else None
        if kind not in (None, "map"):
            raise Unsupported(f"{name}: {kind} rules on a map")
        value_type = message_type.fields_by_name["value"].message_type
        values = _compile_map_values(name, _compiled(value_type)) if value_type is not None else None
        if kind is None or rules is None:
            return values
        return _compile_map_rules(name, message_type, rules.map, values)
    nested = _compiled(message_type) if message_type is not None else None
    if field.is_repeated:
        return _compile_repeated(field, rules, nested)
    return _compile_single(field, rules, nested)


def _run(compiled: _Compiled, message: Message) -> Iterator[FieldViolation]:
    for check in compiled.checks:
        yield from check(message)


# Compiled message types. A compilation that starts from one type compiles the types of its
# message fields into _building first, and publishes them all only if none needs protovalidate;
# a field of a recursive type refers to the entry of its own type, still `building`.
_COMPILED: dict[AnyDescriptor, _Compiled] = {}
_building: dict[AnyDescriptor, _Compiled] = {}
_compiling = threading.RLock()


def _oneof_required(name: str) -> Check:
    """(buf.validate.oneof).required: one member of the oneof is set."""

    def check(message: Message) -> Iterator[FieldViolation]:
        if message.WhichOneof(name) is None:
            yield FieldViolation(name, "exactly one field is required in oneof", "required")

    return check


def _compile_message(descriptor: Descriptor) -> _Compiled:
    compiled = _building.get(descriptor)
    if compiled is not None:
        return compiled
    compiled = _building[descriptor] = _Compiled()
    options = descriptor.GetOptions()
    message_checks: list[Check] = []
    if options.HasExtension(rules_pb2.message):
        message_rules = options.Extensions[rules_pb2.message]
        if message_rules.cel_expression or message_rules.oneof:
            raise Unsupported(f"{descriptor.full_name}: message rules")
        message_checks = [_cel_check(rule, descriptor.full_name) for rule in message_rules.cel]
    oneof_checks = [
        _oneof_required(oneof.name)
        for oneof in descriptor.oneofs
        if oneof.GetOptions().HasExtension(rules_pb2.oneof)
        and oneof.GetOptions().Extensions[rules_pb2.oneof].required
    ]
    checks = [check for field in descriptor.fields if (check := _compile_field(field)) is not None]
    # protovalidate reports oneof rules before field rules, and field rules before the message's own.
    compiled.checks = tuple(oneof_checks + checks + message_checks)
    compiled.building = False
    return compiled


def _compiled(descriptor: Descriptor) -> _Compiled:
    """The checks of a message type; raises Unsupported when one of its rules needs protovalidate."""
    compiled = _COMPILED.get(descriptor)
    if compiled is not None:
        return compiled
    with _compiling:
        compiled = _COMPILED.get(descriptor)
        if compiled is not None:
            return compiled
        if _building:  # a message field's type, inside the compilation of another type
            return _compile_message(descriptor)
        try:
            compiled = _compile_message(descriptor)
            _COMPILED.update(_building)
        finally:
            _building.clear()
        return compiled


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
    compiled = _COMPILED.get(message.DESCRIPTOR)
    if compiled is None:
        if not _is_compiled(message.DESCRIPTOR):
            return _protovalidate_violations(message)
        compiled = _COMPILED[message.DESCRIPTOR]
    # A violated rule of the message itself names no field: report its rule id, as for protovalidate.
    return [
        violation
        if violation.field
        else FieldViolation(violation.reason, violation.description, violation.reason)
        for violation in _run(compiled, message)
    ]


def validate(message: Message) -> None:
    """Raises InvalidArgument listing every violated field rule of `message`; returns if valid."""
    found = violations(message)
    if found:
        raise InvalidArgument(found)
