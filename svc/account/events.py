"""What the account service publishes (account and freeze events, through the outbox in the
transaction of the change) and what it consumes (the ledger's entry events, which keep the balance
cache fresh and become AccountBalanceChanged events).
"""

from __future__ import annotations

from collections.abc import Mapping

from finmesh.account.v1 import account_resources_pb2 as resources
from finmesh.events.v1 import account_events_pb2, event_meta_pb2, ledger_events_pb2
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.account import convert, domain, store
from svc.account.cache import BalanceCache
from svc.account.domain import Account, Freeze, Snapshot
from svc.account.ledger import LedgerGateway, snapshot_of
from svc.kit.bus import ReceivedMessage
from svc.kit.outbox import add_event

PRODUCER = "account"
CONSUMER = "account-balances"
LEDGER_ENTRIES_TOPIC = "finmesh.ledger.v1.entries"
LEDGER_ENTRY_EVENTS = (
    ledger_events_pb2.EntryPosted,
    ledger_events_pb2.PendingEntryVoided,
    ledger_events_pb2.PendingEntryExpired,
)


def _account_meta(account: resources.Account, version: int) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type="account", aggregate_id=account.account_id, aggregate_version=version
    )


def _freeze_meta(freeze: Freeze) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type="freeze", aggregate_id=freeze.freeze_id, aggregate_version=freeze.version
    )


async def publish_opened(session: AsyncSession, account: resources.Account, version: int) -> None:
    """AccountOpened."""
    event = account_events_pb2.AccountOpened(meta=_account_meta(account, version), account=account)
    await add_event(session, event, producer=PRODUCER)


async def publish_status_changed(
    session: AsyncSession, account: resources.Account, version: int, previous: domain.Status, freeze_id: str
) -> None:
    """AccountStatusChanged (ACTIVE <-> FROZEN, caused by a freeze)."""
    event = account_events_pb2.AccountStatusChanged(
        meta=_account_meta(account, version),
        account=account,
        previous_status=int(previous),  # type: ignore[arg-type]
        freeze_id=freeze_id,
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_closed(
    session: AsyncSession, account: resources.Account, version: int, reason: str
) -> None:
    """AccountClosed."""
    event = account_events_pb2.AccountClosed(
        meta=_account_meta(account, version), account=account, reason=reason
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_freeze_placed(session: AsyncSession, freeze: Freeze) -> None:
    """FreezePlaced."""
    event = account_events_pb2.FreezePlaced(meta=_freeze_meta(freeze), freeze=convert.freeze_message(freeze))
    await add_event(session, event, producer=PRODUCER)


async def publish_freeze_released(
    session: AsyncSession, freeze: Freeze, released: int, expired: bool
) -> None:
    """FreezeReleased (in full, or in part for an AMOUNT freeze)."""
    event = account_events_pb2.FreezeReleased(
        meta=_freeze_meta(freeze),
        freeze=convert.freeze_message(freeze),
        released_amount=str(released) if freeze.scope is domain.Scope.AMOUNT else "",
        expired=expired,
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_freeze_captured(session: AsyncSession, freeze: Freeze, destination_code: str) -> None:
    """FreezeCaptured."""
    event = account_events_pb2.FreezeCaptured(
        meta=_freeze_meta(freeze),
        freeze=convert.freeze_message(freeze),
        destination_ledger_account_code=destination_code,
    )
    await add_event(session, event, producer=PRODUCER)


class LedgerEntryHandler:
    """Handles EntryPosted, PendingEntryVoided and PendingEntryExpired for the EventConsumer.

    For every account the entry touched: the account's snapshot right after the entry goes to the
    cache (kept only if newer than what is cached), and AccountBalanceChanged to the outbox. An
    event carrying the balances of both ledger accounts of an account (U and F) gives the snapshot
    exactly; otherwise F (or U) may have changed at entries this consumer has not seen yet (events
    of other keys arrive in any order), so both are read from the ledger as of the entry's sequence.
    """

    def __init__(self, gateway: LedgerGateway, cache: BalanceCache, decimals: Mapping[str, int]) -> None:
        self.gateway = gateway
        self.cache = cache
        self.decimals = decimals

    async def __call__(self, session: AsyncSession, event: Message, message: ReceivedMessage) -> None:
        """Refreshes the cache and publishes balance changes for one ledger entry event."""
        assert isinstance(event, LEDGER_ENTRY_EVENTS), event.DESCRIPTOR.full_name
        entry = event.entry
        balances = {balance.account_id: balance for balance in event.balances}
        touched = await store.accounts_by_ledger_ids(session, list(balances))
        snapshots: dict[str, Snapshot] = {}
        unknown: list[Account] = []
        for account in touched:
            user = balances.get(account.ledger_account_id)
            frozen = balances.get(account.frozen_account_id)
            if user is not None and frozen is not None:
                snapshots[account.account_id] = snapshot_of(user, frozen)
            else:
                unknown.append(account)
        if unknown:
            read = await self.gateway.snapshots(unknown, as_of_sequence=entry.sequence)
            snapshots.update(
                (account.account_id, snapshot) for account, snapshot in zip(unknown, read, strict=True)
            )
        for account in touched:
            snapshot = snapshots[account.account_id]
            assert snapshot.sequence == entry.sequence, (snapshot, entry.sequence)
            await self.cache.put(account.account_id, snapshot)
            if account.ledger_account_id not in balances:
                continue  # only F changed (a capture moving funds on): the account's figures did not
            changed = account_events_pb2.AccountBalanceChanged(
                meta=event_meta_pb2.EventMeta(
                    aggregate_type="account",
                    aggregate_id=account.account_id,
                    aggregate_version=account.version,
                    causation_id=entry.entry_id,
                    correlation_id=entry.correlation_id,
                ),
                account_id=account.account_id,
                user_id=account.user_id,
                asset=account.asset,
                balance=convert.balance_message(domain.balances(account.status, snapshot)),
                entry_id=entry.entry_id,
                category=entry.category,
            )
            await add_event(session, changed, producer=PRODUCER)
