"""What the withdraw service publishes, through the outbox in the transaction of the change: one
event per state change of a withdrawal (carrying it whole, staff fields included: the bus is
internal) and per change of a whitelist entry."""

from __future__ import annotations

from finmesh.events.v1 import event_meta_pb2, withdraw_events_pb2
from finmesh.withdraw.v1 import withdraw_resources_pb2 as resources
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.outbox import add_event
from svc.withdraw.states import State

PRODUCER = "withdraw"

# The event of a transition into each state (RISK_REVIEW has none: its decision is the event).
EVENT_OF_TARGET: dict[State, type[Message]] = {
    State.HELD: withdraw_events_pb2.WithdrawalRequested,
    State.AWAITING_APPROVAL: withdraw_events_pb2.WithdrawalAwaitingApproval,
    State.APPROVED: withdraw_events_pb2.WithdrawalApproved,
    State.REJECTED: withdraw_events_pb2.WithdrawalRejected,
    State.CANCELLED: withdraw_events_pb2.WithdrawalCancelled,
    State.SIGNING: withdraw_events_pb2.WithdrawalSigning,
    State.BROADCAST: withdraw_events_pb2.WithdrawalBroadcast,
    State.CONFIRMED: withdraw_events_pb2.WithdrawalConfirmed,
    State.FAILED: withdraw_events_pb2.WithdrawalFailed,
}


def _meta(withdrawal: resources.Withdrawal) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type="withdrawal",
        aggregate_id=withdrawal.withdrawal_id,
        aggregate_version=withdrawal.version,
        correlation_id=withdrawal.withdrawal_id,
    )


def _address_meta(address: resources.WithdrawalAddress, version: int) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type="withdrawal_address", aggregate_id=address.address_id, aggregate_version=version
    )


async def publish_transition(
    session: AsyncSession, withdrawal: resources.Withdrawal, source: State, target: State
) -> None:
    """The events of `source -> target`: the risk decision's, then the target state's."""
    if source is State.RISK_REVIEW:
        assessed = withdraw_events_pb2.WithdrawalRiskAssessed(meta=_meta(withdrawal), withdrawal=withdrawal)
        await add_event(session, assessed, producer=PRODUCER)
    event_type = EVENT_OF_TARGET.get(target)
    if event_type is not None:
        await add_event(session, event_type(meta=_meta(withdrawal), withdrawal=withdrawal), producer=PRODUCER)


async def publish_decision(
    session: AsyncSession, withdrawal: resources.Withdrawal, approval: resources.WithdrawalApproval
) -> None:
    event = withdraw_events_pb2.WithdrawalDecisionRecorded(
        meta=_meta(withdrawal), withdrawal=withdrawal, approval=approval
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_replaced(
    session: AsyncSession, withdrawal: resources.Withdrawal, replaced: str, replacement: str
) -> None:
    event = withdraw_events_pb2.WithdrawalTransactionReplaced(
        meta=_meta(withdrawal),
        withdrawal=withdrawal,
        replaced_tx_hash=replaced,
        replacement_tx_hash=replacement,
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_address(
    session: AsyncSession, address: resources.WithdrawalAddress, version: int, kind: type[Message]
) -> None:
    """WithdrawalAddressAdded, WithdrawalAddressActivated or WithdrawalAddressRemoved."""
    assert kind in (
        withdraw_events_pb2.WithdrawalAddressAdded,
        withdraw_events_pb2.WithdrawalAddressActivated,
        withdraw_events_pb2.WithdrawalAddressRemoved,
    ), kind
    await add_event(session, kind(meta=_address_meta(address, version), address=address), producer=PRODUCER)
