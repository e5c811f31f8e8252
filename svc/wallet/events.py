"""What the wallet service publishes (wallet and internal transfer events, through the outbox in the
transaction of the change)."""

from __future__ import annotations

from finmesh.events.v1 import event_meta_pb2, wallet_events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.outbox import add_event
from svc.wallet import convert
from svc.wallet.domain import InternalTransfer, Wallet

PRODUCER = "wallet"


def _wallet_meta(wallet: Wallet) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type="wallet", aggregate_id=wallet.wallet_id, aggregate_version=wallet.version
    )


def _transfer_meta(transfer: InternalTransfer) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type="internal_transfer",
        aggregate_id=transfer.transfer_id,
        aggregate_version=transfer.version,
        correlation_id=transfer.transfer_id,
    )


async def publish_wallet_created(session: AsyncSession, wallet: Wallet) -> None:
    """WalletCreated, once the address is on the chain gateway's watch list."""
    assert wallet.watched, wallet
    event = wallet_events_pb2.WalletCreated(meta=_wallet_meta(wallet), wallet=convert.wallet_message(wallet))
    await add_event(session, event, producer=PRODUCER)


async def publish_transfer_completed(session: AsyncSession, transfer: InternalTransfer) -> None:
    """InternalTransferCompleted."""
    event = wallet_events_pb2.InternalTransferCompleted(
        meta=_transfer_meta(transfer), transfer=convert.transfer_message(transfer)
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_transfer_reversed(session: AsyncSession, transfer: InternalTransfer) -> None:
    """InternalTransferReversed."""
    event = wallet_events_pb2.InternalTransferReversed(
        meta=_transfer_meta(transfer),
        transfer=convert.transfer_message(transfer),
        actor_id=transfer.reversed_by,
        reason=transfer.reverse_reason,
    )
    await add_event(session, event, producer=PRODUCER)
