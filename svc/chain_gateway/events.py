"""What the chain gateway publishes, through the outbox in the transaction of the change: inbound
transfers and reorganisations (the follower), outbound transactions (broadcast and tracker),
provider health and nonce gaps."""

from __future__ import annotations

from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as resources
from finmesh.events.v1 import chain_events_pb2, event_meta_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.outbox import add_event

PRODUCER = "chain-gateway"


def _meta(aggregate_type: str, aggregate_id: str) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(aggregate_type=aggregate_type, aggregate_id=aggregate_id)


async def transfer_seen(session: AsyncSession, transfer: resources.Transfer) -> None:
    event = chain_events_pb2.ChainTransferSeen(
        meta=_meta("transfer", transfer.transfer_id), transfer=transfer
    )
    await add_event(session, event, producer=PRODUCER)


async def transfer_confirmed(session: AsyncSession, transfer: resources.Transfer) -> None:
    event = chain_events_pb2.ChainTransferConfirmed(
        meta=_meta("transfer", transfer.transfer_id), transfer=transfer
    )
    await add_event(session, event, producer=PRODUCER)


async def transfer_reorged(session: AsyncSession, transfer: resources.Transfer, was_confirmed: bool) -> None:
    event = chain_events_pb2.ChainTransferReorged(
        meta=_meta("transfer", transfer.transfer_id), transfer=transfer, was_confirmed=was_confirmed
    )
    await add_event(session, event, producer=PRODUCER)


async def reorg_detected(
    session: AsyncSession,
    chain: str,
    ancestor_number: int,
    ancestor_hash: str,
    orphaned: list[str],
    beyond_depth: bool,
) -> None:
    event = chain_events_pb2.ChainReorgDetected(
        meta=_meta("chain", chain),
        chain=chain,
        common_ancestor_number=ancestor_number,
        common_ancestor_hash=ancestor_hash,
        depth=len(orphaned),
        orphaned_block_hashes=orphaned,
        beyond_confirmation_depth=beyond_depth,
    )
    await add_event(session, event, producer=PRODUCER)


def _transaction_meta(transaction: resources.Transaction) -> event_meta_pb2.EventMeta:
    return _meta("transaction", f"{transaction.chain}:{transaction.tx_hash}")


async def transaction_broadcast(session: AsyncSession, transaction: resources.Transaction) -> None:
    event = chain_events_pb2.ChainTransactionBroadcast(
        meta=_transaction_meta(transaction), transaction=transaction
    )
    await add_event(session, event, producer=PRODUCER)


async def transaction_confirmed(session: AsyncSession, transaction: resources.Transaction) -> None:
    event = chain_events_pb2.ChainTransactionConfirmed(
        meta=_transaction_meta(transaction), transaction=transaction
    )
    await add_event(session, event, producer=PRODUCER)


async def transaction_failed(session: AsyncSession, transaction: resources.Transaction) -> None:
    event = chain_events_pb2.ChainTransactionFailed(
        meta=_transaction_meta(transaction), transaction=transaction
    )
    await add_event(session, event, producer=PRODUCER)


async def transaction_dropped(session: AsyncSession, transaction: resources.Transaction) -> None:
    event = chain_events_pb2.ChainTransactionDropped(
        meta=_transaction_meta(transaction), transaction=transaction
    )
    await add_event(session, event, producer=PRODUCER)


async def transaction_replaced(session: AsyncSession, transaction: resources.Transaction) -> None:
    event = chain_events_pb2.ChainTransactionReplaced(
        meta=_transaction_meta(transaction), transaction=transaction
    )
    await add_event(session, event, producer=PRODUCER)


async def provider_health_changed(
    session: AsyncSession, provider: resources.Provider, previous: resources.ProviderHealth.ValueType
) -> None:
    event = chain_events_pb2.ChainProviderHealthChanged(
        meta=_meta("provider", f"{provider.chain}:{provider.name}"),
        provider=provider,
        previous_health=previous,
    )
    await add_event(session, event, producer=PRODUCER)


async def nonce_gap_detected(session: AsyncSession, state: resources.NonceState, gaps: list[int]) -> None:
    event = chain_events_pb2.ChainNonceGapDetected(
        meta=_meta("sender", f"{state.chain}:{state.address}"), nonce_state=state, gap_nonces=gaps
    )
    await add_event(session, event, producer=PRODUCER)
