"""Translation between the account domain and the contract's messages (responses and events alike)."""

from __future__ import annotations

from finmesh.account.v1 import account_resources_pb2 as resources
from google.protobuf import timestamp_pb2

from svc.account.domain import Account, Balances, Freeze, Scope


def timestamp(time_us: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp from microseconds since the epoch."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(time_us)
    return stamp


def balance_message(figures: Balances) -> resources.AccountBalance:
    """The contract's AccountBalance."""
    return resources.AccountBalance(
        total=str(figures.total),
        available=str(figures.available),
        held=str(figures.held),
        frozen=str(figures.frozen),
        pending_incoming=str(figures.pending_incoming),
        as_of_sequence=figures.sequence,
        as_of_time=timestamp(figures.time_us),
    )


def account_message(account: Account, figures: Balances, decimals: int) -> resources.Account:
    """The contract's Account with its balances."""
    message = resources.Account(
        account_id=account.account_id,
        user_id=account.user_id,
        asset=account.asset,
        decimals=decimals,
        kind=int(account.kind),  # type: ignore[arg-type]
        status=int(account.status),  # type: ignore[arg-type]
        balance=balance_message(figures),
        ledger_account_id=account.ledger_account_id,
        ledger_account_code=account.ledger_account_code,
        active_freeze_count=account.active_freezes,
        create_time=timestamp(account.create_time_us),
        update_time=timestamp(account.update_time_us),
    )
    if account.close_time_us is not None:
        message.close_time.CopyFrom(timestamp(account.close_time_us))
    return message


def freeze_message(freeze: Freeze) -> resources.Freeze:
    """The contract's Freeze."""
    amounts = freeze.scope is Scope.AMOUNT
    message = resources.Freeze(
        freeze_id=freeze.freeze_id,
        account_id=freeze.account_id,
        user_id=freeze.user_id,
        asset=freeze.asset,
        scope=int(freeze.scope),  # type: ignore[arg-type]
        amount=str(freeze.amount) if amounts else "",
        original_amount=str(freeze.original_amount) if amounts else "",
        reason=freeze.reason,  # type: ignore[arg-type]
        reason_detail=freeze.reason_detail,
        case_reference=freeze.case_reference,
        state=int(freeze.state),  # type: ignore[arg-type]
        ledger_pending_entry_id=freeze.hold_entry_id,
        placed_by=freeze.placed_by,
        action_request_id=freeze.action_request_id,
        create_time=timestamp(freeze.create_time_us),
        ended_by=freeze.ended_by,
        end_note=freeze.end_note,
        capture_entry_id=freeze.capture_entry_id,
    )
    if freeze.expire_time_us is not None:
        message.expire_time.CopyFrom(timestamp(freeze.expire_time_us))
    if freeze.end_time_us is not None:
        message.end_time.CopyFrom(timestamp(freeze.end_time_us))
    return message
