"""Request validation: the kit's compiled checks against protovalidate, on the same valid requests.

The requests are one per request message type of the SDK that the kit compiles (plus the
probe's Echo), each filled with values that satisfy its rules: the common case on the server,
where every check runs and none fails. Both validators must find every request valid. The
figure is the ratio of protovalidate's time to the kit's over the whole set (best of a few
rounds each, so that a busy machine shows less).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import finmesh
import protovalidate
from buf.validate import validate_pb2 as rules_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from bench.results import Figure
from svc.kit import validation
from tests.kit.probe import compile_probe

KIT_ROUNDS = 200
PROTOVALIDATE_ROUNDS = 2
REPEATS = 3
MAX_DEPTH = 3
INT_LIMITS = {
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
}
INT32_LIMITS = (-(2**31), 2**31 - 1)
_FIND = settings(database=None, max_examples=500)


def _rules(field: FieldDescriptor) -> rules_pb2.FieldRules | None:
    options = field.GetOptions()
    return options.Extensions[rules_pb2.field] if options.HasExtension(rules_pb2.field) else None


def _candidates(field: FieldDescriptor, rules: rules_pb2.FieldRules | None) -> st.SearchStrategy[Any]:
    kind = rules.WhichOneof("type") if rules is not None else None
    typed: Any = getattr(rules, kind) if rules is not None and kind is not None else None
    if typed is not None and "const" in typed.DESCRIPTOR.fields_by_name and typed.HasField("const"):
        return st.just(typed.const)
    if typed is not None and "in" in typed.DESCRIPTOR.fields_by_name and len(getattr(typed, "in")):
        return st.sampled_from(list(getattr(typed, "in")))
    if field.type == FieldDescriptor.TYPE_STRING:
        if kind == "string" and typed.uuid:
            return st.just(str(uuid.UUID(int=0x1234_5678_9ABC_4DEF_8123_456789ABCDEF)))
        if kind == "string" and typed.HasField("pattern"):
            python = validation._python_pattern(typed.pattern)
            if python is not None:
                return st.from_regex(re.compile(python, re.ASCII), fullmatch=True).filter(bool)
        return st.text("abcdefghijklmnop", min_size=1, max_size=64)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(min_size=1, max_size=64)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(0, 1)
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return st.sampled_from([value.number for value in field.enum_type.values])
    low, high = INT_LIMITS.get(field.type, INT32_LIMITS)
    if typed is not None and kind in validation.NUMERIC_KINDS:
        low = max(
            [
                low,
                *([typed.gte] if typed.HasField("gte") else []),
                *([typed.gt + 1] if typed.HasField("gt") else []),
            ]
        )
        high = min(
            [
                high,
                *([typed.lte] if typed.HasField("lte") else []),
                *([typed.lt - 1] if typed.HasField("lt") else []),
            ]
        )
    return st.integers(max(low, min(high, 1)), high)


def _valid_scalar(field: FieldDescriptor, rules: rules_pb2.FieldRules | None) -> Any:
    """A value of the field that passes the kit's checks for it; None when none was found."""
    key = (
        field.type,
        field.enum_type.full_name if field.enum_type else "",
        rules.SerializeToString() if rules else b"",
    )
    if key not in _found:
        checks = validation._value_checks(field.name, rules, field) if rules is not None else []
        try:
            _found[key] = find(
                _candidates(field, rules),
                lambda value: not any(check(value) for check in checks),
                settings=_FIND,
            )
        except NoSuchExample:
            _found[key] = None
    return _found[key]


_found: dict[tuple[int, str, bytes], Any] = {}


def _valid_message(descriptor: Descriptor, depth: int = 0) -> Message:
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        rules = _rules(field)
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            continue
        if message_type is not None:
            if depth >= MAX_DEPTH or message_type.full_name.startswith("google.protobuf."):
                continue
            value = _valid_message(message_type, depth + 1)
            target = getattr(message, field.name)
            if field.is_repeated:
                target.add().CopyFrom(value)
            else:
                target.SetInParent()
                target.MergeFrom(value)
            continue
        if field.is_repeated:
            items = rules.repeated.items if rules is not None and rules.HasField("repeated") else None
            item = _valid_scalar(field, items)
            if item is not None:
                getattr(message, field.name).append(item)
        elif field.containing_oneof is None or not message.WhichOneof(field.containing_oneof.name):
            value = _valid_scalar(field, rules)
            if value is not None:
                setattr(message, field.name, value)
    return message


def _contract_requests() -> list[Descriptor]:
    requests: dict[str, Descriptor] = {}
    for module in pkgutil.walk_packages([str(Path(finmesh.__file__).parent)], "finmesh."):
        if module.name.endswith("_pb2"):
            for service in importlib.import_module(module.name).DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    if method.input_type.name.endswith("Request"):
                        requests[method.input_type.full_name] = method.input_type
    return [requests[name] for name in sorted(requests)]


def _best(run: Callable[[], None]) -> float:
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings)


def run() -> list[Figure]:
    validator = protovalidate.Validator()  # type: ignore[no-untyped-call]
    with tempfile.TemporaryDirectory() as scratch:
        probe_messages, _ = compile_probe(Path(scratch))
    requests = [probe_messages.EchoRequest(text="ping", count=3)]
    skipped = []
    for descriptor in _contract_requests():
        if not validation._is_compiled(descriptor):
            continue
        message = _valid_message(descriptor)
        if validation.violations(message) or validator.collect_violations(message):
            skipped.append(descriptor.full_name)  # rules the simple filler cannot satisfy
            continue
        requests.append(message)

    def kit() -> None:
        for _ in range(KIT_ROUNDS):
            for message in requests:
                validation.validate(message)

    def reference() -> None:
        for _ in range(PROTOVALIDATE_ROUNDS):
            for message in requests:
                validator.validate(message)

    reference()  # protovalidate compiles each message type's CEL programs on first use
    kit_s = _best(kit) / (KIT_ROUNDS * len(requests))
    reference_s = _best(reference) / (PROTOVALIDATE_ROUNDS * len(requests))
    detail = {
        "messages": len(requests),
        "skipped": len(skipped),
        "kit_us": round(kit_s * 1e6, 2),
        "protovalidate_us": round(reference_s * 1e6, 1),
    }
    return [
        Figure("validation", "speedup_ratio", reference_s / kit_s, "ratio", ">=20", detail),
        Figure("validation", "kit_us_per_request", kit_s * 1e6, "us", "", {}),
    ]
