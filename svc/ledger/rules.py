"""The ledger contract's CEL rules in Python, for the kit's compiled request validation.

Each function returns exactly what the rule's CEL expression in proto/finmesh/ledger/v1
returns; tests/ledger/test_rules.py checks them against protovalidate on generated messages.
Without them every posting request would go through protovalidate's CEL interpreter, at
about ten milliseconds an entry.
"""

from __future__ import annotations

from typing import Any

from svc.kit.validation import register_cel_rule

# Enum numbers as the CEL expressions use them (finmesh.ledger.v1 EntryKind, AccountType,
# BalanceConstraint).
KIND_STANDARD, KIND_PENDING, KIND_POST_PENDING, KIND_VOID_PENDING, KIND_EXPIRE_PENDING, KIND_CORRECTION = (
    1,
    2,
    3,
    4,
    5,
    6,
)
CODE_ROOTS = {1: "assets:", 2: "liabilities:", 3: "equity:", 4: "revenue:", 5: "expenses:"}
TYPE_LIABILITY = 2
CONSTRAINT_DEBITS_MUST_NOT_EXCEED_CREDITS = 2


def _postings_for_kind(entry: Any) -> bool:
    count = len(entry.postings)
    if entry.kind in (KIND_STANDARD, KIND_PENDING, KIND_CORRECTION):
        return count >= 2
    if entry.kind == KIND_POST_PENDING:
        return count == 0 or count >= 2
    if entry.kind == KIND_VOID_PENDING:
        return count == 0
    return True


def _before(start: Any, end: Any) -> bool:
    return (start.seconds, start.nanos) < (end.seconds, end.nanos)


RULES: dict[str, Any] = {
    # Posting and JournalEntry (ledger_resources.proto).
    "posting.account_ref": lambda posting: bool(posting.account_id) or bool(posting.account_code),
    "journal_entry.postings_for_kind": _postings_for_kind,
    "journal_entry.pending_entry_id": lambda entry: (
        (entry.kind in (KIND_POST_PENDING, KIND_VOID_PENDING, KIND_EXPIRE_PENDING))
        == bool(entry.pending_entry_id)
    ),
    "journal_entry.corrects_entry_id": lambda entry: (
        (entry.kind == KIND_CORRECTION) == bool(entry.corrects_entry_id)
    ),
    "journal_entry.category": lambda entry: (
        entry.kind in (KIND_POST_PENDING, KIND_VOID_PENDING, KIND_EXPIRE_PENDING) or bool(entry.category)
    ),
    "journal_entry.timeout": lambda entry: not entry.HasField("timeout") or entry.kind == KIND_PENDING,
    # Requests (ledger_service.proto).
    "account.required_fields": lambda account: (
        bool(account.code) and account.type != 0 and bool(account.asset) and account.constraint != 0
    ),
    "account.code_root": lambda account: (
        account.type in CODE_ROOTS and account.code.startswith(CODE_ROOTS[account.type])
    ),
    "account.code_asset": lambda account: account.code.endswith(":" + account.asset),
    "account.user_liability_constraint": lambda account: (
        account.type != TYPE_LIABILITY
        or not account.owner_user_id
        or account.constraint == CONSTRAINT_DEBITS_MUST_NOT_EXCEED_CREDITS
    ),
    "account.account_id": lambda account: bool(account.account_id),
    "entry.entry_id": lambda entry: bool(entry.entry_id),
    "entries.entry_id": lambda request: all(entry.entry_id for entry in request.entries),
    "post_pending.postings": lambda request: len(request.postings) == 0 or len(request.postings) >= 2,
    "list_entries.time_range": lambda request: (
        not request.HasField("start_time")
        or not request.HasField("end_time")
        or _before(request.start_time, request.end_time)
    ),
    "list_account_entries.time_range": lambda request: (
        not request.HasField("start_time")
        or not request.HasField("end_time")
        or _before(request.start_time, request.end_time)
    ),
}

for _rule_id, _holds in RULES.items():
    register_cel_rule(_rule_id, _holds)
