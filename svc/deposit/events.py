"""What the deposit service publishes (deposit, sweep and config events, through the outbox in the
transaction of the change) and what it consumes (the chain gateway's transfer events and the wallet
service's wallet events)."""

from __future__ import annotations

from typing import Any

from finmesh.events.v1 import chain_events_pb2, deposit_events_pb2, event_meta_pb2, wallet_events_pb2
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.deposit import convert, store
from svc.deposit.domain import Config, Deposit, Sweep, SweepItem
from svc.kit.bus import ReceivedMessage
from svc.kit.outbox import add_event

PRODUCER = "deposit"
TRANSFERS_CONSUMER = "deposit-transfers"
WALLETS_CONSUMER = "deposit-wallets"
TRANSFERS_TOPIC = "finmesh.chain_gateway.v1.transfers"
WALLETS_TOPIC = "finmesh.wallet.v1.wallets"


def _deposit_meta(deposit: Deposit) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type="deposit",
        aggregate_id=deposit.deposit_id,
        aggregate_version=deposit.version,
        correlation_id=deposit.transfer_key,
    )


async def publish_deposit(
    session: AsyncSession, event_type: type[Message], deposit: Deposit, **fields: Any
) -> None:
    """One of the deposit events, carrying the deposit after the change."""
    event = event_type(meta=_deposit_meta(deposit), deposit=convert.deposit_message(deposit), **fields)
    await add_event(session, event, producer=PRODUCER)


async def publish_config_changed(session: AsyncSession, config: Config) -> None:
    """DepositConfigChanged."""
    event = deposit_events_pb2.DepositConfigChanged(
        meta=event_meta_pb2.EventMeta(
            aggregate_type="deposit_config", aggregate_id=config.asset, aggregate_version=config.version
        ),
        config=convert.config_message(config),
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_sweep(
    session: AsyncSession, event_type: type[Message], sweep: Sweep, items: list[SweepItem]
) -> None:
    """DepositSweepCreated or DepositSweepFinished, carrying the sweep with its items."""
    event = event_type(
        meta=event_meta_pb2.EventMeta(
            aggregate_type="deposit_sweep",
            aggregate_id=sweep.sweep_id,
            aggregate_version=sweep.version,
            correlation_id=sweep.sweep_id,
        ),
        sweep=convert.sweep_message(sweep, items),
    )
    await add_event(session, event, producer=PRODUCER)


class WalletHandler:
    """Records each new wallet's deposit address and owner (WalletCreated)."""

    async def __call__(self, session: AsyncSession, event: Message, message: ReceivedMessage) -> None:
        if not isinstance(event, wallet_events_pb2.WalletCreated):
            return  # WalletClosed: a closed wallet's address still receives; deposits are still its user's
        wallet = event.wallet
        address = wallet.deposit_address.address.lower()
        if not address:
            return
        await store.add_address(
            session, wallet.chain, address, wallet.user_id, wallet.wallet_id,
            wallet.deposit_address.derivation_path, wallet.create_time.ToMicroseconds(),
        )  # fmt: skip


TRANSFER_EVENTS = (
    chain_events_pb2.ChainTransferSeen,
    chain_events_pb2.ChainTransferConfirmed,
    chain_events_pb2.ChainTransferReorged,
)
