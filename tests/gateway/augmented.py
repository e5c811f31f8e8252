"""A descriptor set like gen/'s with HTTP annotations added in the test, as `make gen` would add
them after a contract change: the gateway must serve them with no code change."""

from __future__ import annotations

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from gateway.descriptors import DESCRIPTOR_SET, Contracts

LEDGER_FILE = "finmesh/ledger/v1/ledger_service.proto"


def _annotate(method: descriptor_pb2.MethodDescriptorProto, rule: http_pb2.HttpRule) -> None:
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)


def augmented_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    ledger = next(file for file in descriptor_set.file if file.name == LEDGER_FILE)
    service = next(service for service in ledger.service if service.name == "LedgerService")
    methods = {method.name: method for method in service.method}
    # A field body with a nested path variable: the asset comes from the path, the rest from the body.
    _annotate(
        methods["CreateLedgerAccount"],
        http_pb2.HttpRule(post="/v1/test/assets/{account.asset}/ledger_accounts", body="account"),
    )
    # body "*" on an RPC that had no route.
    _annotate(methods["CreateJournalEntry"], http_pb2.HttpRule(post="/v1/test/journal_entries", body="*"))
    # An additional binding, and a `**` variable whose value keeps its ':' separators.
    lookup = methods["LookupLedgerAccount"].options.Extensions[annotations_pb2.http]
    lookup.additional_bindings.add(get="/v1/test/codes/{code=**}")
    get = methods["GetLedgerAccount"].options.Extensions[annotations_pb2.http]
    get.additional_bindings.add(get="/v1/test/ledger_accounts/{account_id}", response_body="account")
    # A new RPC the running ledger does not implement yet.
    sealed = service.method.add(
        name="SealLedgerAccount",
        input_type=".finmesh.ledger.v1.GetLedgerAccountRequest",
        output_type=".finmesh.ledger.v1.GetLedgerAccountResponse",
    )
    _annotate(sealed, http_pb2.HttpRule(post="/v1/test/ledger_accounts/{account_id}:seal", body="*"))
    return descriptor_set


def augmented_contracts() -> Contracts:
    return Contracts(augmented_descriptor_set())
