"""The kit's compiled validation agrees with protovalidate on which fields are violated.

svc/kit/validation.py compiles the standard protovalidate rules into plain Python checks and
hands any other message type to protovalidate. Here hypothesis fills messages of the probe and
every request message of the generated SDK with a mix of valid-looking and invalid values (empty,
long and boundary-length strings, strings matching a field's pattern with and without a trailing
newline, integers at the edges of declared ranges, undefined enum numbers, nested messages set and
unset, repeated fields of 0..N items), and the set of violated field paths must be the same from
the kit as from protovalidate's own Validator. tests/kit/shapes adds messages that use every rule
the kit compiles, and maps, recursion and ignore modes, beyond what the contracts use today.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import finmesh
import protovalidate
import pytest
from buf.validate import validate_pb2 as rules_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_tools import protoc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svc.kit import validation
from svc.kit.errors import FieldViolation

PROBE_PROTO = Path(__file__).parent / "probe" / "finmesh" / "kitprobe" / "v1" / "probe.proto"
SHAPES_PROTO = Path(__file__).parent / "shapes" / "kitvalidation_shapes.proto"
SDK_ROOT = Path(finmesh.__file__).parent
PROTO_DEPS = Path(__file__).resolve().parents[2] / ".build" / "proto-deps"  # buf/validate/validate.proto
PROBE_EXAMPLES = 30
SHAPES_EXAMPLES = 60
CONTRACT_EXAMPLES = 6
MAX_DEPTH = 2  # nested messages deeper than this stay unset
MAX_ITEMS = 4  # repeated fields without declared bounds get 0..MAX_ITEMS items

_validator = protovalidate.Validator()


def _settings(examples: int) -> settings:
    # No example database: the test would leave a .hypothesis directory in the repository.
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


Strategy = st.SearchStrategy[Any]

INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Strings that tend to break hand-written checks: whitespace, a trailing newline (Python's `$`
# matches before it, RE2's does not), non-ASCII digits and letters, multi-byte characters.
AWKWARD_STRINGS = ("", " ", "\n", "a\n", "\t", "٣", "ß", "é" * 5, "😀" * 3, "0", "-1", "0x", "me", "-")


def _message_names(proto: Path) -> tuple[str, ...]:
    return tuple(re.findall(r"^message (\w+)", proto.read_text(), flags=re.MULTILINE))


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """tests/kit/shapes/kitvalidation_shapes.proto, compiled and imported."""
    out = tmp_path_factory.mktemp("shapes_gen")
    args = [
        "protoc",
        f"-I{SHAPES_PROTO.parent}",
        f"-I{PROTO_DEPS}",
        f"-I{resources.files('grpc_tools') / '_proto'}",
        f"--python_out={out}",
        SHAPES_PROTO.name,
    ]
    assert protoc.main(args) == 0, f"{SHAPES_PROTO} does not compile"
    spec = importlib.util.spec_from_file_location(
        "kitvalidation_shapes_pb2", out / "kitvalidation_shapes_pb2.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _field_rules(field: FieldDescriptor) -> rules_pb2.FieldRules | None:
    options = field.GetOptions()
    return options.Extensions[rules_pb2.field] if options.HasExtension(rules_pb2.field) else None


def _typed_rules(rules: rules_pb2.FieldRules | None, kinds: tuple[str, ...]) -> Any:
    if rules is None or rules.WhichOneof("type") not in kinds:
        return None
    return getattr(rules, rules.WhichOneof("type"))


def _declared(typed: Any, names: tuple[str, ...]) -> list[Any]:
    """The values of the rules in `names` that `typed` sets, repeated rules flattened."""
    values: list[Any] = []
    if typed is None:
        return values
    for descriptor, value in typed.ListFields():
        if descriptor.name in names:
            values.extend(value if descriptor.is_repeated else [value])
    return values


def _strings(rules: rules_pb2.FieldRules | None) -> Strategy:
    typed = _typed_rules(rules, ("string",))
    options: list[Strategy] = [
        st.sampled_from(AWKWARD_STRINGS),
        st.text(st.characters(codec="utf-8"), max_size=24),
        st.integers(0, 300).map(lambda n: "x" * n),
    ]
    if typed is not None:
        lengths = {
            max(0, n + delta)
            for n in _declared(typed, ("len", "min_len", "max_len", "min_bytes", "max_bytes"))
            for delta in (-1, 0, 1)
        }
        if lengths:
            boundary = st.sampled_from(sorted(lengths))
            options += [boundary.map(lambda n: "a" * n), boundary.map(lambda n: "é" * n)]
        literals = _declared(typed, ("const", "prefix", "suffix", "contains", "in", "not_in", "example"))
        if literals:
            options.append(st.sampled_from(literals))
            options.append(st.sampled_from(literals).map(lambda s: s + "x"))
        if typed.uuid:
            uuids = st.uuids().map(str)
            options += [
                uuids,
                uuids.map(str.upper),
                uuids.map(lambda u: u + "\n"),
                uuids.map(lambda u: u[1:]),
            ]
        # Hypothesis generates from Python regexes: the kit's RE2-faithful rewrite of the pattern
        # (it only steers generation; protovalidate's RE2 stays the judge).
        python_pattern = validation._python_pattern(typed.pattern) if typed.HasField("pattern") else None
        if python_pattern is not None:
            matching = st.from_regex(re.compile(python_pattern, re.ASCII), fullmatch=True)
            # The pattern-matching branch weighs as much as all the others: most fields of a
            # generated message then hold plausible values, with one or two broken.
            options = [
                st.one_of(options),
                matching,
                matching.map(lambda s: s + "\n"),
                matching.map(lambda s: s + "x"),
                matching.map(lambda s: s[:-1]),
            ]
    return st.one_of(options)


def _bytes(rules: rules_pb2.FieldRules | None) -> Strategy:
    typed = _typed_rules(rules, ("bytes",))
    options: list[Strategy] = [st.binary(max_size=40)]
    lengths = {max(0, n + d) for n in _declared(typed, ("len", "min_len", "max_len")) for d in (-1, 0, 1)}
    if lengths:
        options.append(st.sampled_from(sorted(lengths)).map(lambda n: b"\x01" * n))
    return st.one_of(options)


def _integers(field: FieldDescriptor, rules: rules_pb2.FieldRules | None) -> Strategy:
    low, high = INT_RANGES[field.type]
    typed = _typed_rules(rules, (*validation.NUMERIC_KINDS, "enum"))
    edges = {low, high, 0, 1, -1}
    for bound in _declared(typed, ("const", "lt", "lte", "gt", "gte", "in", "not_in", "example")):
        edges.update((bound - 1, bound, bound + 1))
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None
        defined = sorted(value.number for value in enum.values)
        if enum.is_closed:
            return st.sampled_from(defined)
        edges.update((max(defined) + 1, 99))
        edges.update(defined)
        return st.one_of(
            st.sampled_from(defined), st.sampled_from(sorted(n for n in edges if low <= n <= high))
        )
    return st.one_of(st.sampled_from(sorted(n for n in edges if low <= n <= high)), st.integers(low, high))


def _scalar(field: FieldDescriptor, rules: rules_pb2.FieldRules | None) -> Strategy:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _strings(rules)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _bytes(rules)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    return _integers(field, rules)


# Whole microseconds only: protovalidate-python 1.2.0 compares timestamps and durations as
# datetime/timedelta, which drop nanoseconds, so it calls a 4 ns duration "not > 0s". The kit
# compares nanoseconds exactly (tests/ledger/test_rules.py checks that case on its own).
_NANOS_WHOLE_MICROSECONDS = st.integers(0, 999_999).map(lambda micros: micros * 1_000)


def _timestamps() -> Strategy:
    from google.protobuf.timestamp_pb2 import Timestamp

    return st.builds(Timestamp, seconds=st.integers(0, 4_102_444_800), nanos=_NANOS_WHOLE_MICROSECONDS)


def _durations() -> Strategy:
    from google.protobuf.duration_pb2 import Duration

    return st.builds(Duration, seconds=st.integers(0, 10**9), nanos=_NANOS_WHOLE_MICROSECONDS)


WELL_KNOWN: dict[str, Callable[[], Strategy]] = {
    "google.protobuf.Timestamp": _timestamps,
    "google.protobuf.Duration": _durations,
}


def _field_values(field: FieldDescriptor, depth: int) -> Strategy:
    """A strategy for one field's content; None leaves the field unset."""
    rules = _field_rules(field)
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        key, value = message_type.fields_by_name["key"], message_type.fields_by_name["value"]
        values = messages(value.message_type, depth + 1) if value.message_type else _scalar(value, None)
        return st.dictionaries(_scalar(key, None), values, max_size=3)
    if field.is_repeated:
        items_rules = rules.repeated.items if rules is not None and rules.HasField("repeated") else None
        bounds = _declared(_typed_rules(rules, ("repeated",)), ("min_items", "max_items"))
        size = max([MAX_ITEMS, *(n + 1 for n in bounds)])
        if message_type is None:
            return st.lists(_scalar(field, items_rules), max_size=size)
        if depth >= MAX_DEPTH:
            return st.just([])
        return st.lists(messages(message_type, depth + 1), max_size=size)
    if message_type is not None:
        if depth >= MAX_DEPTH:
            return st.none()
        return st.none() | messages(message_type, depth + 1)
    value = _scalar(field, rules)
    return st.none() | value if field.has_presence else value


def _build(message_class: type[Message], contents: dict[str, Any]) -> Message:
    message = message_class()
    fields = message.DESCRIPTOR.fields_by_name
    for name, value in contents.items():
        if value is None:
            continue
        field = fields[name]
        target = getattr(message, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].MergeFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            if field.message_type is not None:
                for item in value:
                    target.add().MergeFrom(item)
            else:
                target.extend(value)
        elif field.message_type is not None:
            target.SetInParent()
            target.MergeFrom(value)
        else:
            setattr(message, name, value)
    return message


@cache
def messages(descriptor: Descriptor, depth: int = 0) -> Strategy:
    """Messages of `descriptor`'s type, each field drawn from _field_values."""
    if descriptor.full_name in WELL_KNOWN:
        return WELL_KNOWN[descriptor.full_name]()
    message_class = message_factory.GetMessageClass(descriptor)
    contents = {field.name: _field_values(field, depth) for field in descriptor.fields}
    return st.fixed_dictionaries(contents).map(lambda values: _build(message_class, values))


def _protovalidate_paths(message: Message) -> set[str]:
    paths = set()
    for violation in _validator.collect_violations(message):
        parts = []
        for element in violation.proto.field.elements:
            part = element.field_name
            subscript = element.WhichOneof("subscript")
            if subscript is not None:
                part += f"[{getattr(element, subscript)}]"
            parts.append(part)
        paths.add(".".join(parts) or violation.proto.rule_id)
    return paths


# protovalidate-python 1.2.0 checks `enum.defined_only` in EnumRules.validate, which only runs
# for a singular field; repeated items go through validate_item, which skips it, so an undefined
# number in a repeated enum field with `items.enum.defined_only` passes protovalidate. The rule
# (and protovalidate's other runtimes) say it is a violation, and the kit reports it: those are
# the only kit violations left out of the comparison. test_protovalidate_still_misses_... fails
# once protovalidate is fixed, to drop this.
UNDEFINED_ENUM = "value must be one of the defined enum values"


def _protovalidate_misses(violation: FieldViolation) -> bool:
    return violation.reason == "repeated.items" and violation.description == UNDEFINED_ENUM


def _kit_paths(message: Message) -> set[str]:
    found: dict[str, list[FieldViolation]] = {}
    for violation in validation.violations(message):
        found.setdefault(violation.field, []).append(violation)
    return {path for path, items in found.items() if not all(map(_protovalidate_misses, items))}


def assert_agree(message: Message) -> None:
    assert _kit_paths(message) == _protovalidate_paths(message), f"{message.DESCRIPTOR.full_name}: {message}"


@pytest.mark.parametrize("name", _message_names(PROBE_PROTO))
def test_probe_messages_agree_with_protovalidate(probe: tuple[ModuleType, ModuleType], name: str) -> None:
    descriptor = getattr(probe[0], name).DESCRIPTOR
    assert validation._is_compiled(descriptor), f"{name} should take the compiled path"

    @_settings(PROBE_EXAMPLES)
    @given(messages(descriptor))
    def agree(message: Message) -> None:
        assert_agree(message)

    agree()


SHAPES_FOR_PROTOVALIDATE = ("OutsideRange",)


@pytest.mark.parametrize(
    "name", [name for name in _message_names(SHAPES_PROTO) if name not in SHAPES_FOR_PROTOVALIDATE]
)
def test_every_compiled_rule_agrees_with_protovalidate(shapes: ModuleType, name: str) -> None:
    descriptor = getattr(shapes, name).DESCRIPTOR
    assert validation._is_compiled(descriptor), f"{name} should take the compiled path"

    @_settings(SHAPES_EXAMPLES)
    @given(messages(descriptor))
    def agree(message: Message) -> None:
        assert_agree(message)

    agree()


def contract_requests() -> list[Descriptor]:
    """Every request message (`*Request`) of every service in the generated SDK (gen/python)."""
    requests: dict[str, Descriptor] = {}
    # Only the SDK's own directory: the probe extends the `finmesh` package's path.
    for module in pkgutil.walk_packages([str(SDK_ROOT)], "finmesh."):
        if not module.name.endswith("_pb2"):
            continue
        for service in importlib.import_module(module.name).DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if method.input_type.name.endswith("Request"):
                    requests[method.input_type.full_name] = method.input_type
    return [requests[name] for name in sorted(requests)]


def test_contract_requests_agree_with_protovalidate() -> None:
    requests = contract_requests()
    compiled = [descriptor for descriptor in requests if validation._is_compiled(descriptor)]
    assert compiled, "no request message of the SDK takes the compiled path"
    for descriptor in compiled:

        @_settings(CONTRACT_EXAMPLES)
        @given(messages(descriptor))
        def agree(message: Message) -> None:
            assert_agree(message)

        agree()


def test_reversed_ranges_go_to_protovalidate(shapes: ModuleType) -> None:
    assert not validation._is_compiled(shapes.OutsideRange.DESCRIPTOR)
    assert [v.field for v in validation.violations(shapes.OutsideRange(outside=7))] == ["outside"]
    assert validation.violations(shapes.OutsideRange(outside=11)) == []


def test_protovalidate_still_misses_undefined_enum_items(shapes: ModuleType) -> None:
    message = shapes.Collections(tags=["ab"], needed=[1], defined_colours=[1, 3])
    assert {v.field for v in validation.violations(message)} == {"defined_colours[1]"}
    assert _protovalidate_paths(message) == set(), "protovalidate is fixed: drop _protovalidate_misses"


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("^[a-z]+$", "abc\n", False),  # `$` is the end of the text in RE2
        ("^[0-9]+$", "٣", False),  # \d-like classes and \d itself are ASCII in RE2
        (r"^\d+$", "٣", False),
        (r"^a\sb$", "a\x0bb", False),  # RE2's \s has no vertical tab
        (r"^a\sb$", "a\tb", True),
        ("^a{,2}$", "a{,2}", True),  # not a repetition in RE2
        ("[[:alpha:]]", "b", True),  # a POSIX class in RE2
    ],
)
def test_patterns_match_as_in_re2(pattern: str, text: str, matches: bool) -> None:
    search = validation._searcher(pattern)
    assert (search(text) is not None) is matches


def test_recursive_message_types_compile() -> None:
    # Value -> ListValue -> repeated Value: compiling must not recurse forever.
    from google.protobuf import struct_pb2

    value = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[struct_pb2.Value(string_value="x")]))
    assert validation._is_compiled(struct_pb2.ListValue.DESCRIPTOR)
    assert validation.violations(value) == []
    assert_agree(value)
