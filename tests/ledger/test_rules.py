"""The ledger's CEL rules in Python (svc/ledger/rules.py) agree with protovalidate's CEL."""

from __future__ import annotations

import pytest
from finmesh.ledger.v1 import ledger_resources_pb2, ledger_service_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from hypothesis import given

import svc.ledger.rules  # noqa: F401 - registers the rules
from svc.kit import validation
from tests.kit.test_validation import _settings, assert_agree, messages

EXAMPLES = 60


def ledger_types() -> list[Descriptor]:
    """Every request of the ledger service, plus the resources that carry CEL rules."""
    service = ledger_service_pb2.DESCRIPTOR.services_by_name["LedgerService"]
    requests = {method.input_type.full_name: method.input_type for method in service.methods}
    for resource in (ledger_resources_pb2.JournalEntry, ledger_resources_pb2.Posting):
        requests[resource.DESCRIPTOR.full_name] = resource.DESCRIPTOR
    return [requests[name] for name in sorted(requests)]


@pytest.mark.parametrize("descriptor", ledger_types(), ids=lambda descriptor: descriptor.name)
def test_every_ledger_request_is_validated_without_the_cel_interpreter(descriptor: Descriptor) -> None:
    assert validation._is_compiled(descriptor), f"{descriptor.full_name} still needs protovalidate"


@pytest.mark.parametrize("descriptor", ledger_types(), ids=lambda descriptor: descriptor.name)
def test_python_rules_agree_with_protovalidate(descriptor: Descriptor) -> None:
    @_settings(EXAMPLES)
    @given(messages(descriptor))
    def agree(message: Message) -> None:
        assert_agree(message)

    agree()


def test_a_message_rule_violation_names_its_rule() -> None:
    entry = ledger_resources_pb2.JournalEntry(entry_id="deposit.0001.credit", kind=1, category="deposit")
    request = ledger_service_pb2.CreateJournalEntryRequest(request_id="request-0001", entry=entry)
    reasons = {violation.reason for violation in validation.violations(request)}
    assert "journal_entry.postings_for_kind" in reasons


def test_a_sub_microsecond_timeout_is_above_zero() -> None:
    # protovalidate-python rounds durations to microseconds and refuses this; CEL compares exactly.
    entry = ledger_resources_pb2.JournalEntry(entry_id="hold.0001.ns", kind=2, category="withdrawal.hold")
    entry.timeout.nanos = 4
    fields = {violation.field for violation in validation.violations(entry)}
    assert "timeout" not in fields
    entry.timeout.nanos = 0
    assert "timeout" in {violation.field for violation in validation.violations(entry)}
