"""Rules every finmesh contract follows (proto/README.md), checked on the generated descriptor set.

Each test collects every offender before failing, so that one run lists everything to fix.
Also checks the generated OpenAPI document and contracts page against the descriptor set.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from buf.validate import validate_pb2
from finmesh.events.v1 import event_meta_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, MethodDescriptor

from tools.gen import contracts_doc, descriptors, openapi
from tools.gen.descriptors import Contracts
from tools.gen.http_rules import method_bindings
from tools.gen.paths import CONTRACTS_DOC, DESCRIPTOR_SET, OPENAPI_OUT

SERVICE_PACKAGES = tuple(
    f"finmesh.{name}.v1"
    for name in (
        "user", "auth", "kyc", "notification", "chain_gateway", "custody", "wallet", "deposit", "withdraw",
        "interest_engine", "lending", "staking", "rwa", "settlement", "admin", "audit", "report",
        "risk_control", "ledger", "account", "reconciliation", "web_bff", "mobile_bff", "admin_bff",
    )
)  # fmt: skip
SHARED_PACKAGES = ("finmesh.common.v1", "finmesh.events.v1")
EVENT_META = "finmesh.events.v1.EventMeta"
TOPIC = re.compile(r"^finmesh\.[a-z][a-z0-9_]*\.v1\.[a-z][a-z0-9_.-]*$")


@pytest.fixture(scope="module")
def contracts() -> Contracts:
    """The generated descriptor set (`make gen`), loaded once for the module."""
    if not DESCRIPTOR_SET.exists():
        pytest.fail(f"{DESCRIPTOR_SET} is missing: run 'make gen'")
    return descriptors.load(DESCRIPTOR_SET)


def _methods(contracts: Contracts) -> Iterator[MethodDescriptor]:
    for service in contracts.services():
        yield from service.methods


def _messages(contracts: Contracts) -> Iterator[Descriptor]:
    """Every message of the finmesh packages, nested ones included (map entries excluded)."""
    pending = [
        message
        for file in contracts.files
        if file.package.startswith("finmesh.")
        for message in file.message_types_by_name.values()
    ]
    while pending:
        message = pending.pop(0)
        if not message.GetOptions().map_entry:
            yield message
        pending += message.nested_types


def _enums(contracts: Contracts) -> Iterator[EnumDescriptor]:
    for file in contracts.files:
        if file.package.startswith("finmesh."):
            yield from file.enum_types_by_name.values()
    for message in _messages(contracts):
        yield from message.enum_types


def _read_only(method: MethodDescriptor) -> bool:
    return method.GetOptions().idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


def _has_field(message: Descriptor, name: str, kind: int, number: int | None = None) -> bool:
    field = message.fields_by_name.get(name)
    return (
        field is not None
        and field.type == kind
        and not field.is_repeated
        and (number is None or field.number == number)
    )


def _report(offenders: list[str], rule: str) -> None:
    """Fails listing every offender, without a traceback full of descriptors."""
    if offenders:
        listing = "\n  ".join(sorted(offenders))
        pytest.fail(f"{len(offenders)} violation(s) of: {rule}\n  {listing}", pytrace=False)


def test_mutating_rpcs_take_a_validated_request_id(contracts: Contracts) -> None:
    offenders = []
    for method in _methods(contracts):
        if _read_only(method):
            continue
        request = method.input_type
        if not _has_field(request, "request_id", FieldDescriptor.TYPE_STRING, number=1):
            offenders.append(f"{method.full_name}: {request.name} has no `string request_id = 1`")
            continue
        rules = request.fields_by_name["request_id"].GetOptions().Extensions[validate_pb2.field]
        if not rules.string.min_len:
            offenders.append(
                f"{method.full_name}: {request.name}.request_id has no (buf.validate.field) min_len"
            )
    _report(offenders, "a mutating RPC (no NO_SIDE_EFFECTS) has `string request_id = 1` with a min_len rule")


def test_list_rpcs_paginate(contracts: Contracts) -> None:
    offenders = []
    expected = (
        ("input_type", "page_size", FieldDescriptor.TYPE_INT32),
        ("input_type", "page_token", FieldDescriptor.TYPE_STRING),
        ("output_type", "next_page_token", FieldDescriptor.TYPE_STRING),
    )
    for method in _methods(contracts):
        if not method.name.startswith("List"):
            continue
        for side, name, kind in expected:
            message: Descriptor = getattr(method, side)
            if not _has_field(message, name, kind):
                type_name = "int32" if kind == FieldDescriptor.TYPE_INT32 else "string"
                offenders.append(f"{method.full_name}: {message.name} lacks `{type_name} {name}`")
    _report(offenders, "a List RPC has page_size and page_token in, next_page_token out")


def test_no_floating_point_fields(contracts: Contracts) -> None:
    floating = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)
    offenders = [
        field.full_name
        for message in _messages(contracts)
        for field in message.fields
        if field.type in floating
    ]
    _report(offenders, "no float or double field in a finmesh message (money and rates are strings)")


def test_http_routes_are_unique_and_parse(contracts: Contracts) -> None:
    owners: dict[tuple[str, str], list[str]] = defaultdict(list)
    offenders = []
    for method in _methods(contracts):
        try:
            bindings = method_bindings(method)
        except ValueError as error:
            offenders.append(str(error))
            continue
        for binding in bindings:
            owners[(binding.method, binding.template.pattern)].append(
                f"{method.full_name} ({binding.template})"
            )
    offenders += [
        f"{verb} {pattern}: {', '.join(rpcs)}" for (verb, pattern), rpcs in owners.items() if len(rpcs) > 1
    ]
    _report(offenders, "every HTTP binding parses and each (method, path) is bound by one RPC only")


def test_enum_zero_values_are_unspecified(contracts: Contracts) -> None:
    offenders = [
        f"{enum.full_name}: zero value {enum.values_by_number[0].name}"
        for enum in _enums(contracts)
        if not enum.values_by_number[0].name.endswith("_UNSPECIFIED")
    ]
    _report(offenders, "an enum's zero value is <ENUM>_UNSPECIFIED")


def test_every_package_exists_with_one_service(contracts: Contracts) -> None:
    packages = set(contracts.packages())
    services: dict[str, list[str]] = defaultdict(list)
    for service in contracts.services():
        services[service.file.package].append(service.name)
    offenders = [
        f"{package}: missing" for package in (*SERVICE_PACKAGES, *SHARED_PACKAGES) if package not in packages
    ]
    offenders += [
        f"{package}: {len(services[package])} services {services[package]}"
        for package in SERVICE_PACKAGES
        if package in packages and len(services[package]) != 1
    ]
    offenders += [
        f"{package}: services {services[package]}" for package in SHARED_PACKAGES if services[package]
    ]
    unexpected = packages - set(SERVICE_PACKAGES) - set(SHARED_PACKAGES)
    offenders += [f"{package}: not a finmesh package" for package in sorted(unexpected)]
    _report(offenders, "the 24 service packages have one service each; common and events have none")


def test_events_carry_meta_and_topic(contracts: Contracts) -> None:
    offenders = []
    for file in contracts.package_files("finmesh.events.v1"):
        for message in file.message_types_by_name.values():
            if message.full_name == EVENT_META:
                continue
            meta = message.fields_by_number.get(1)
            meta_type = meta.message_type.full_name if meta is not None and meta.message_type else ""
            if meta is None or meta.name != "meta" or meta.is_repeated or meta_type != EVENT_META:
                offenders.append(f"{message.full_name}: field 1 is not `EventMeta meta = 1`")
            topic = message.GetOptions().Extensions[event_meta_pb2.topic]
            if not TOPIC.match(topic):
                offenders.append(f"{message.full_name}: topic {topic!r} is not finmesh.<service>.v1.<stream>")
    _report(offenders, "an event has `EventMeta meta = 1` and a (finmesh.events.v1.topic) option")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The generated OpenAPI document."""
    parsed: dict[str, Any] = json.loads(OPENAPI_OUT.read_text())
    return parsed


def _openapi_path(template: str) -> str:
    """`/v1/{name=users/*}:x` as OpenAPI writes it: `/v1/{name}:x`."""
    return re.sub(r"\{([^}=]+)(=[^}]*)?\}", r"{\1}", template)


def test_openapi_has_every_http_rpc(contracts: Contracts, document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    missing = []
    for service in contracts.services():
        for method in service.methods:
            for index, binding in enumerate(method_bindings(method)):
                operation_id = f"{service.name}_{method.name}" + (str(index + 1) if index else "")
                path = _openapi_path(str(binding.template))
                operation = document["paths"].get(path, {}).get(binding.method.lower())
                if operation is None or operation["operationId"] != operation_id:
                    missing.append(f"{binding.method} {path} ({operation_id})")
    _report(missing, "the OpenAPI document has an operation for every HTTP binding")


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolves(document: dict[str, Any], ref: str) -> bool:
    if not ref.startswith("#/"):
        return False
    node: object = document
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def test_openapi_refs_resolve(document: dict[str, Any]) -> None:
    unresolved = sorted({ref for ref in _refs(document) if not _resolves(document, ref)})
    _report(unresolved, "every $ref of the OpenAPI document points into the document")


def test_generated_docs_are_fresh(contracts: Contracts) -> None:
    assert OPENAPI_OUT.read_text() == openapi.render(contracts), (
        "the OpenAPI document is stale: run 'make gen'"
    )
    assert CONTRACTS_DOC.read_text() == contracts_doc.render(contracts), (
        "docs/contracts.md is stale: run 'make gen'"
    )
