"""The unified history as a projection: internal transfers are written with the transfer itself
(in its transaction); deposits and withdrawals come from the deposit and withdraw services' events,
each of which carries the whole resource with its version, so an event older than what is
projected (the bus may redeliver or reorder across keys) never overwrites a newer state.
The consumer (svc/kit/consumer.py) drops redeliveries of an event it already handled."""

from __future__ import annotations

from finmesh.deposit.v1 import deposit_resources_pb2 as deposits
from finmesh.withdraw.v1 import withdraw_resources_pb2 as withdrawals
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.bus import ReceivedMessage
from svc.wallet import store
from svc.wallet.domain import (
    FINAL_STATUSES,
    HistoryEntry,
    InternalTransfer,
    Kind,
    Status,
    TransferState,
    history_entry_id,
)

CONSUMER = "wallet-history"
DEPOSITS_TOPIC = "finmesh.deposit.v1.deposits"
WITHDRAWALS_TOPIC = "finmesh.withdraw.v1.withdrawals"
TOPICS = (DEPOSITS_TOPIC, WITHDRAWALS_TOPIC)

DEPOSIT_STATUS = {
    deposits.DEPOSIT_STATE_PENDING: Status.PENDING,
    deposits.DEPOSIT_STATE_CONFIRMING: Status.PENDING,
    deposits.DEPOSIT_STATE_CREDITED: Status.COMPLETED,
    deposits.DEPOSIT_STATE_REORGED: Status.REVERSED,
    deposits.DEPOSIT_STATE_FROZEN: Status.ON_HOLD,
    deposits.DEPOSIT_STATE_BELOW_MINIMUM: Status.NOT_CREDITED,
    deposits.DEPOSIT_STATE_UNKNOWN_TOKEN: Status.NOT_CREDITED,
    deposits.DEPOSIT_STATE_REVERSED: Status.REVERSED,
}
WITHDRAWAL_STATUS = {
    withdrawals.WITHDRAWAL_STATE_REQUESTED: Status.PENDING,
    withdrawals.WITHDRAWAL_STATE_HELD: Status.PENDING,
    withdrawals.WITHDRAWAL_STATE_RISK_REVIEW: Status.PENDING,
    withdrawals.WITHDRAWAL_STATE_AWAITING_APPROVAL: Status.PENDING,
    withdrawals.WITHDRAWAL_STATE_APPROVED: Status.PENDING,
    withdrawals.WITHDRAWAL_STATE_SIGNING: Status.PENDING,
    withdrawals.WITHDRAWAL_STATE_BROADCAST: Status.PENDING,
    withdrawals.WITHDRAWAL_STATE_CONFIRMED: Status.COMPLETED,
    withdrawals.WITHDRAWAL_STATE_REJECTED: Status.REJECTED,
    withdrawals.WITHDRAWAL_STATE_CANCELLED: Status.CANCELLED,
    withdrawals.WITHDRAWAL_STATE_FAILED: Status.FAILED,
}
TRANSFER_STATUS = {TransferState.COMPLETED: Status.COMPLETED, TransferState.REVERSED: Status.REVERSED}


def _time_us(message: Message, name: str) -> int | None:
    return int(getattr(message, name).ToMicroseconds()) if message.HasField(name) else None


def deposit_entry(deposit: deposits.Deposit) -> HistoryEntry | None:
    """The depositor's entry for a deposit; None for a state this projection does not know."""
    status = DEPOSIT_STATUS.get(deposit.state)
    if status is None or not deposit.user_id:
        return None
    seen_us = _time_us(deposit, "seen_time") or 0
    update_us = _time_us(deposit, "update_time") or seen_us
    complete_us = _time_us(deposit, "credit_time") if status is Status.COMPLETED else None
    if status in FINAL_STATUSES and complete_us is None:
        complete_us = update_us
    amount = (
        int(deposit.amount.amount)
        if deposit.HasField("amount")
        else int(deposit.unknown_token.raw_amount or 0)
    )
    return HistoryEntry(
        entry_id=history_entry_id(Kind.DEPOSIT, deposit.deposit_id),
        user_id=deposit.user_id,
        kind=Kind.DEPOSIT,
        status=status,
        source_state=deposits.DepositState.Name(deposit.state),
        source_id=deposit.deposit_id,
        chain=deposit.chain,
        asset=deposit.amount.asset,
        amount=amount,
        fee_asset="",
        fee=None,
        address=deposit.from_address,
        counterparty_display="",
        tx_hash=deposit.tx_hash,
        confirmations=deposit.confirmations,
        required_confirmations=deposit.required_confirmations,
        memo="",
        create_time_us=seen_us,
        update_time_us=update_us,
        complete_time_us=complete_us,
        source_version=deposit.version,
    )


def withdrawal_entry(withdrawal: withdrawals.Withdrawal) -> HistoryEntry | None:
    """The requester's entry for a withdrawal; None for a state this projection does not know."""
    status = WITHDRAWAL_STATUS.get(withdrawal.state)
    if status is None or not withdrawal.user_id:
        return None
    create_us = _time_us(withdrawal, "create_time") or 0
    update_us = _time_us(withdrawal, "update_time") or create_us
    complete_us = _time_us(withdrawal, "complete_time")
    if status in FINAL_STATUSES and complete_us is None:
        complete_us = update_us
    has_fee = withdrawal.HasField("fee") and bool(withdrawal.fee.asset)
    return HistoryEntry(
        entry_id=history_entry_id(Kind.WITHDRAWAL, withdrawal.withdrawal_id),
        user_id=withdrawal.user_id,
        kind=Kind.WITHDRAWAL,
        status=status,
        source_state=withdrawals.WithdrawalState.Name(withdrawal.state),
        source_id=withdrawal.withdrawal_id,
        chain=withdrawal.chain,
        asset=withdrawal.amount.asset,
        amount=int(withdrawal.amount.amount or 0),
        fee_asset=withdrawal.fee.asset if has_fee else "",
        fee=int(withdrawal.fee.amount or 0) if has_fee else None,
        address=withdrawal.destination.address,
        counterparty_display="",
        tx_hash=withdrawal.tx_hash,
        confirmations=withdrawal.confirmations if status is Status.PENDING else 0,
        required_confirmations=withdrawal.required_confirmations,
        memo="",
        create_time_us=create_us,
        update_time_us=update_us,
        complete_time_us=complete_us if status in FINAL_STATUSES else None,
        source_version=withdrawal.version,
    )


def transfer_entries(transfer: InternalTransfer) -> tuple[HistoryEntry, HistoryEntry]:
    """The sender's (OUT) and the recipient's (IN) entries for an internal transfer."""
    status = TRANSFER_STATUS[transfer.state]
    update_us = transfer.reverse_time_us or transfer.create_time_us

    def entry(kind: Kind, user_id: str, counterparty: str) -> HistoryEntry:
        return HistoryEntry(
            entry_id=history_entry_id(kind, transfer.transfer_id),
            user_id=user_id,
            kind=kind,
            status=status,
            source_state=f"INTERNAL_TRANSFER_STATE_{transfer.state.name}",
            source_id=transfer.transfer_id,
            chain=transfer.chain,
            asset=transfer.asset,
            amount=transfer.amount,
            fee_asset="",
            fee=None,
            address="",
            counterparty_display=counterparty,
            tx_hash="",
            confirmations=0,
            required_confirmations=0,
            memo=transfer.memo,
            create_time_us=transfer.create_time_us,
            update_time_us=update_us,
            complete_time_us=update_us,
            source_version=transfer.version,
        )

    return (
        entry(Kind.INTERNAL_TRANSFER_OUT, transfer.from_user_id, transfer.to_display),
        entry(Kind.INTERNAL_TRANSFER_IN, transfer.to_user_id, transfer.from_display),
    )


async def project(session: AsyncSession, entry: HistoryEntry) -> bool:
    """Writes an entry unless the projection already holds the same or a newer version of its source."""
    existing = await store.history_entry(session, entry.entry_id, entry.user_id)
    if existing is not None and existing.source_version >= entry.source_version:
        return False
    await store.put_history_entry(session, entry, exists=existing is not None)
    return True


async def handle(session: AsyncSession, event: Message, message: ReceivedMessage) -> None:
    """The EventConsumer handler of the deposit and withdraw topics."""
    fields = event.DESCRIPTOR.fields_by_name
    entry: HistoryEntry | None = None
    if "deposit" in fields and event.HasField("deposit"):
        entry = deposit_entry(getattr(event, "deposit"))  # noqa: B009 (a field of some event types)
    elif "withdrawal" in fields and event.HasField("withdrawal"):
        entry = withdrawal_entry(getattr(event, "withdrawal"))  # noqa: B009
    if entry is not None:
        await project(session, entry)
