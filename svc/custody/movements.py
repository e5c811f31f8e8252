"""Opening a movement between two custody wallets: requested by an operator (CreateMovement) or by
an accepted rebalancing plan. Out of a cold wallet it waits for the quorum; out of a hot wallet it
is APPROVED at once."""

from __future__ import annotations

import time
import uuid

from finmesh.custody.v1 import custody_resources_pb2 as resources
from sqlalchemy.ext.asyncio import AsyncSession

from svc.custody import convert, domain, events, store
from svc.custody.domain import Movement, MovementState, Wallet, WalletState
from svc.kit import errors


async def open_movement(
    session: AsyncSession,
    source: Wallet,
    destination: Wallet,
    *,
    chain: str,
    asset: str,
    amount: int,
    requested_by: str,
    reason: str,
    plan_id: str,
    approval_window_s: int,
) -> resources.Movement:
    """Inserts the movement and its CustodyMovementRequested event; returns its message."""
    kind = domain.movement_kind(source, destination)
    for wallet in (source, destination):
        if chain not in wallet.chains:
            raise errors.InvalidArgument(
                [errors.FieldViolation("chain", f"wallet {wallet.name} does not serve {chain}")]
            )
    if source.state is not WalletState.ACTIVE:
        raise errors.InvalidState(
            f"wallet {source.name} is disabled", metadata={"wallet_id": source.wallet_id}
        )
    assert amount > 0, amount
    now_us = time.time_ns() // 1000
    movement = Movement(
        movement_id=str(uuid.uuid4()),
        kind=kind,
        source_wallet_id=source.wallet_id,
        destination_wallet_id=destination.wallet_id,
        chain=chain,
        from_address=source.address,
        to_address=destination.address,
        asset=asset,
        amount=amount,
        state=MovementState.APPROVED if source.required_approvals == 0 else MovementState.PENDING_APPROVAL,
        required_approvals=source.required_approvals,
        requested_by=requested_by,
        reason=reason,
        plan_id=plan_id,
        tx_hash="",
        nonce=None,
        outcome_message="",
        approval_expire_time_us=now_us + approval_window_s * 1_000_000,
        create_time_us=now_us,
        update_time_us=now_us,
        version=1,
    )
    await store.insert_movement(session, movement)
    message = convert.movement_message(movement, [])
    await events.publish_movement_requested(session, message)
    return message
