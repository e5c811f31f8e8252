"""Translation between the contract's messages and the ledger's domain objects.

Shared by the servicer (responses) and events.py (event payloads), so that an entry or a
balance looks the same on the wire whichever way it leaves the ledger.
"""

from __future__ import annotations

import hashlib

from finmesh.common.v1 import money_pb2
from finmesh.ledger.v1 import ledger_resources_pb2 as resources
from google.protobuf import timestamp_pb2

from svc.ledger import domain
from svc.ledger.domain import Balance, Entry, EntryDraft, Kind, PostingDraft, Side
from svc.ledger.store import AccountRecord, Snapshot


def timestamp(time_us: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp from microseconds since the epoch."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(time_us)
    return stamp


def fingerprint(entry: resources.JournalEntry) -> str:
    """SHA-256 of an entry's client content (output fields and `linked` aside): equal for a retry."""
    content = resources.JournalEntry()
    content.CopyFrom(entry)
    for name in (
        "linked",
        "sequence",
        "post_time",
        "pending_status",
        "expire_time",
        "resolved_by_entry_id",
        "resolve_time",
        "corrected_by_entry_ids",
        "created_by",
    ):
        content.ClearField(name)
    return hashlib.sha256(content.SerializeToString(deterministic=True)).hexdigest()


def draft(entry: resources.JournalEntry, *, created_by: str, linked: bool) -> EntryDraft:
    """The domain draft of a submitted entry (the kit has validated its field rules)."""
    timeout_ms = None
    if entry.HasField("timeout"):
        timeout_ms = entry.timeout.ToMilliseconds()
    return EntryDraft(
        entry_id=entry.entry_id,
        kind=Kind(entry.kind),
        postings=tuple(
            PostingDraft(
                posting.account_id,
                posting.account_code,
                Side(posting.side),
                posting.asset,
                int(posting.amount),
                posting.memo,
            )
            for posting in entry.postings
        ),
        fingerprint=fingerprint(entry),
        pending_entry_id=entry.pending_entry_id,
        corrects_entry_id=entry.corrects_entry_id,
        timeout_ms=timeout_ms,
        category=entry.category,
        description=entry.description,
        correlation_id=entry.correlation_id,
        chain_transfer=entry.chain_transfer.SerializeToString() if entry.HasField("chain_transfer") else b"",
        metadata=tuple(sorted(entry.metadata.items())),
        linked=linked,
        created_by=created_by,
    )


def entry_message(entry: Entry, corrected_by: tuple[str, ...] = ()) -> resources.JournalEntry:
    """The contract's JournalEntry for a committed entry."""
    message = resources.JournalEntry(
        entry_id=entry.entry_id,
        kind=int(entry.kind),  # type: ignore[arg-type]
        postings=[
            resources.Posting(
                account_id=posting.account_id,
                account_code=posting.account_code,
                side=int(posting.side),  # type: ignore[arg-type]
                asset=posting.asset,
                amount=str(posting.amount),
                memo=posting.memo,
            )
            for posting in entry.postings
        ],
        pending_entry_id=entry.pending_entry_id,
        corrects_entry_id=entry.corrects_entry_id,
        category=entry.category,
        description=entry.description,
        correlation_id=entry.correlation_id,
        metadata=dict(entry.metadata),
        sequence=entry.sequence,
        post_time=timestamp(entry.post_time_us),
        pending_status=int(entry.pending_status),  # type: ignore[arg-type]
        resolved_by_entry_id=entry.resolved_by_entry_id,
        corrected_by_entry_ids=list(corrected_by),
        created_by=entry.created_by,
    )
    if entry.timeout_ms is not None:
        message.timeout.FromMilliseconds(entry.timeout_ms)
    if entry.chain_transfer:
        message.chain_transfer.ParseFromString(entry.chain_transfer)
    if entry.expire_time_us is not None:
        message.expire_time.CopyFrom(timestamp(entry.expire_time_us))
    if entry.resolve_time_us is not None:
        message.resolve_time.CopyFrom(timestamp(entry.resolve_time_us))
    return message


def balance_message(account: domain.Account, balance: Balance, at: Snapshot) -> resources.LedgerBalance:
    """The contract's LedgerBalance of an account at a point of history."""
    figures = domain.view(account.type, balance)
    return resources.LedgerBalance(
        account_id=account.account_id,
        account_code=account.code,
        asset=account.asset,
        debits_posted=str(balance.debits_posted),
        credits_posted=str(balance.credits_posted),
        debits_pending=str(balance.debits_pending),
        credits_pending=str(balance.credits_pending),
        balance=str(figures.balance),
        available=str(figures.available),
        pending_incoming=str(figures.pending_incoming),
        as_of_sequence=at.sequence,
        as_of_time=timestamp(at.time_us),
    )


def balances_after(outcome: domain.Outcome) -> list[resources.LedgerBalance]:
    """Balances right after an applied entry, of every account it touched."""
    assert outcome.entry is not None
    at = Snapshot(outcome.entry.sequence, outcome.entry.post_time_us)
    return [balance_message(after.account, after.account.balance, at) for after in outcome.balances]


def account_message(record: AccountRecord) -> resources.LedgerAccount:
    """The contract's LedgerAccount."""
    account = record.account
    message = resources.LedgerAccount(
        account_id=account.account_id,
        code=account.code,
        type=int(account.type),  # type: ignore[arg-type]
        asset=account.asset,
        constraint=int(account.constraint),  # type: ignore[arg-type]
        display_name=record.display_name,
        description=record.description,
        owner_user_id=record.owner_user_id,
        debits_blocked=account.debits_blocked,
        credits_blocked=account.credits_blocked,
        status=int(account.status),  # type: ignore[arg-type]
        labels=record.labels,
        create_time=timestamp(record.create_time_us),
        update_time=timestamp(record.update_time_us),
        created_by=record.created_by,
    )
    if record.chain:
        message.chain_address.CopyFrom(
            money_pb2.ChainAddress(chain=record.chain, address=record.chain_address)
        )
    if record.close_time_us is not None:
        message.close_time.CopyFrom(timestamp(record.close_time_us))
    return message
