"""What the custody service publishes, through the outbox in the transaction of the change: every
signature request (granted or refused), wallet creation and state changes, movements and their
decisions."""

from __future__ import annotations

from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.events.v1 import custody_events_pb2, event_meta_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.outbox import add_event

PRODUCER = "custody"


def _meta(
    aggregate_type: str, aggregate_id: str, version: int, correlation_id: str = ""
) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        correlation_id=correlation_id,
    )


async def publish_signature(session: AsyncSession, record: resources.SignatureRecord) -> None:
    """CustodySignatureGranted, or CustodySignatureRefused (refused or backend error)."""
    # Keyed by wallet: one wallet's signatures reach consumers in the order they were made.
    meta = _meta("custody_wallet", record.wallet_id, 0, record.reference or record.movement_id)
    meta.causation_id = record.record_id
    event_type = (
        custody_events_pb2.CustodySignatureGranted
        if record.outcome == resources.SIGNATURE_OUTCOME_GRANTED
        else custody_events_pb2.CustodySignatureRefused
    )
    await add_event(session, event_type(meta=meta, record=record), producer=PRODUCER)


async def publish_wallet_created(
    session: AsyncSession, wallet: resources.CustodyWallet, version: int, actor_id: str
) -> None:
    event = custody_events_pb2.CustodyWalletCreated(
        meta=_meta("custody_wallet", wallet.wallet_id, version), wallet=wallet, actor_id=actor_id
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_wallet_state_changed(
    session: AsyncSession,
    wallet: resources.CustodyWallet,
    version: int,
    previous: int,
    actor_id: str,
    reason: str,
) -> None:
    event = custody_events_pb2.CustodyWalletStateChanged(
        meta=_meta("custody_wallet", wallet.wallet_id, version),
        wallet=wallet,
        previous_state=previous,  # type: ignore[arg-type]
        actor_id=actor_id,
        reason=reason,
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_movement_requested(session: AsyncSession, movement: resources.Movement) -> None:
    event = custody_events_pb2.CustodyMovementRequested(
        meta=_meta("custody_movement", movement.movement_id, movement.version), movement=movement
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_decision(
    session: AsyncSession, movement: resources.Movement, approval: resources.MovementApproval
) -> None:
    event = custody_events_pb2.CustodyMovementDecisionRecorded(
        meta=_meta("custody_movement", movement.movement_id, movement.version),
        movement=movement,
        approval=approval,
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_movement_state_changed(
    session: AsyncSession, movement: resources.Movement, previous: int
) -> None:
    event = custody_events_pb2.CustodyMovementStateChanged(
        meta=_meta("custody_movement", movement.movement_id, movement.version),
        movement=movement,
        previous_state=previous,  # type: ignore[arg-type]
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_policy_changed(
    session: AsyncSession, policy: resources.HotWalletPolicy, *, created: bool
) -> None:
    event = custody_events_pb2.HotWalletPolicyChanged(
        meta=_meta("custody_hot_wallet_policy", policy.policy_id, policy.version),
        policy=policy,
        created=created,
    )
    await add_event(session, event, producer=PRODUCER)
