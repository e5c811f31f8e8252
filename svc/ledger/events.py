"""What the ledger publishes (finmesh.events.v1 ledger events), written to the outbox in the
transaction of the change. Entries of a two-phase transfer are keyed by the PENDING entry's id
so that one hold's whole life is ordered on one partition.
"""

from __future__ import annotations

from finmesh.events.v1 import event_meta_pb2, ledger_events_pb2
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.outbox import add_event, add_events
from svc.ledger import convert, domain
from svc.ledger.domain import Kind
from svc.ledger.store import AccountRecord

PRODUCER = "ledger"


def entry_event(outcome: domain.Outcome) -> Message:
    """The event of an applied entry: EntryPosted, PendingEntryVoided or PendingEntryExpired."""
    entry, resolved = outcome.entry, outcome.resolved
    assert entry is not None and outcome.code is domain.ResultCode.OK
    meta = event_meta_pb2.EventMeta(
        aggregate_type="journal_entry",
        aggregate_id=entry.pending_entry_id or entry.entry_id,
        aggregate_version=entry.sequence,
        correlation_id=entry.correlation_id,
    )
    message = convert.entry_message(entry)
    balances = convert.balances_after(outcome)
    if entry.kind in (Kind.VOID_PENDING, Kind.EXPIRE_PENDING):
        assert resolved is not None
        event_type = (
            ledger_events_pb2.PendingEntryVoided
            if entry.kind is Kind.VOID_PENDING
            else ledger_events_pb2.PendingEntryExpired
        )
        return event_type(
            meta=meta, entry=message, pending_entry=convert.entry_message(resolved), balances=balances
        )
    posted = ledger_events_pb2.EntryPosted(meta=meta, entry=message, balances=balances)
    if resolved is not None:
        posted.resolved_pending_entry.CopyFrom(convert.entry_message(resolved))
    return posted


async def publish_entries(session: AsyncSession, outcomes: list[domain.Outcome]) -> None:
    """Adds the event of every entry applied in this transaction to the outbox."""
    events = [entry_event(outcome) for outcome in outcomes if outcome.code is domain.ResultCode.OK]
    await add_events(session, events, producer=PRODUCER)


def _account_meta(record: AccountRecord) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(aggregate_type="ledger_account", aggregate_id=record.account.account_id)


async def publish_account_created(session: AsyncSession, record: AccountRecord) -> None:
    """LedgerAccountCreated."""
    event = ledger_events_pb2.LedgerAccountCreated(
        meta=_account_meta(record), account=convert.account_message(record)
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_account_updated(
    session: AsyncSession, record: AccountRecord, changed_fields: list[str], reason: str
) -> None:
    """LedgerAccountUpdated."""
    event = ledger_events_pb2.LedgerAccountUpdated(
        meta=_account_meta(record),
        account=convert.account_message(record),
        changed_fields=changed_fields,
        reason=reason,
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_account_closed(session: AsyncSession, record: AccountRecord, reason: str) -> None:
    """LedgerAccountClosed."""
    event = ledger_events_pb2.LedgerAccountClosed(
        meta=_account_meta(record), account=convert.account_message(record), reason=reason
    )
    await add_event(session, event, producer=PRODUCER)
