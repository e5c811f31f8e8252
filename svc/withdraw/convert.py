"""Domain records -> the contract's messages. Staff-only fields are filled only when asked."""

from __future__ import annotations

import json

from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.common.v1 import money_pb2
from finmesh.withdraw.v1 import withdraw_resources_pb2 as resources
from google.protobuf import timestamp_pb2

from svc.withdraw.domain import Address, Decision, Transaction, Transition, TxStatus, Withdrawal


def timestamp(time_us: int | None) -> timestamp_pb2.Timestamp | None:
    if time_us is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(time_us)
    return stamp


def _money(asset: str, amount: int) -> money_pb2.Money:
    return money_pb2.Money(asset=asset, amount=str(amount))


def risk_message(withdrawal: Withdrawal) -> resources.RiskAssessment | None:
    if withdrawal.risk_time_us is None:
        return None
    return resources.RiskAssessment(
        decision=withdrawal.risk_decision,  # type: ignore[arg-type]
        source=resources.RISK_SOURCE_BUILT_IN_RULES,
        reasons=[
            resources.RiskReason(code=code, message=message)
            for code, message in json.loads(withdrawal.risk_reasons or "[]")
        ],
        assess_time=timestamp(withdrawal.risk_time_us),
    )


def approval_message(decision: Decision) -> resources.WithdrawalApproval:
    return resources.WithdrawalApproval(
        approver_id=decision.approver_id,
        decision=decision.decision,  # type: ignore[arg-type]
        comment=decision.comment,
        decide_time=timestamp(decision.decide_time_us),
    )


def transaction_message(transaction: Transaction) -> resources.WithdrawalTransaction:
    return resources.WithdrawalTransaction(
        tx_hash=transaction.tx_hash,
        nonce=transaction.nonce,
        fee_per_gas=str(transaction.fee_per_gas),
        status=int(transaction.status),  # type: ignore[arg-type]
        broadcast_time=timestamp(transaction.broadcast_time_us),
    )


def transition_message(transition: Transition) -> resources.StateTransition:
    return resources.StateTransition(
        from_state=int(transition.from_state),  # type: ignore[arg-type]
        to_state=int(transition.to_state),  # type: ignore[arg-type]
        actor_type=int(transition.actor_type),  # type: ignore[arg-type]
        actor_id=transition.actor_id,
        note=transition.note,
        transition_time=timestamp(transition.transition_time_us),
    )


def withdrawal_message(
    withdrawal: Withdrawal,
    *,
    transactions: list[Transaction],
    decisions: list[Decision] | None = None,
    history: list[Transition] | None = None,
    staff: bool,
) -> resources.Withdrawal:
    """The contract's Withdrawal; `staff` fills risk, approvals, hold, wallet, gas and history."""
    sent = [transaction for transaction in transactions if transaction.status is not TxStatus.UNSPECIFIED]
    message = resources.Withdrawal(
        withdrawal_id=withdrawal.withdrawal_id,
        user_id=withdrawal.user_id,
        request_id=withdrawal.request_id,
        chain=withdrawal.chain,
        amount=_money(withdrawal.asset, withdrawal.amount),
        fee=_money(withdrawal.asset, withdrawal.fee),
        total_debit=_money(withdrawal.asset, withdrawal.total),
        destination=money_pb2.ChainAddress(chain=withdrawal.chain, address=withdrawal.destination),
        destination_address_id=withdrawal.address_id,
        destination_label=withdrawal.destination_label,
        note=withdrawal.note,
        state=int(withdrawal.state),  # type: ignore[arg-type]
        outcome_reason=int(withdrawal.outcome),  # type: ignore[arg-type]
        outcome_message=withdrawal.outcome_message,
        auto_approved=withdrawal.auto_approved,
        required_approvals=withdrawal.required_approvals,
        tx_hash=withdrawal.tx_hash,
        transactions=[transaction_message(transaction) for transaction in sent],
        confirmations=withdrawal.confirmations,
        required_confirmations=withdrawal.required_confirmations,
        create_time=timestamp(withdrawal.create_time_us),
        update_time=timestamp(withdrawal.update_time_us),
        approve_time=timestamp(withdrawal.approve_time_us),
        broadcast_time=timestamp(withdrawal.broadcast_time_us),
        complete_time=timestamp(withdrawal.complete_time_us),
        approval_expire_time=timestamp(withdrawal.approval_expire_time_us),
        version=withdrawal.version,
    )
    if staff:
        risk = risk_message(withdrawal)
        if risk is not None:
            message.risk.CopyFrom(risk)
        message.approvals.extend(approval_message(decision) for decision in decisions or [])
        message.hold_id = withdrawal.hold_entry_id
        message.source_wallet_id = withdrawal.source_wallet_id
        if withdrawal.network_fee:
            message.network_fee.CopyFrom(_money(withdrawal.network_fee_asset, withdrawal.network_fee))
        message.history.extend(transition_message(transition) for transition in history or [])
    return message


def address_message(address: Address, now_us: int) -> resources.WithdrawalAddress:
    return resources.WithdrawalAddress(
        address_id=address.address_id,
        user_id=address.user_id,
        address=money_pb2.ChainAddress(chain=address.chain, address=address.address),
        label=address.label,
        state=int(address.state_at(now_us)),  # type: ignore[arg-type]
        usable_time=timestamp(address.usable_time_us),
        used=address.used,
        create_time=timestamp(address.create_time_us),
        remove_time=timestamp(address.remove_time_us),
    )


def unsigned_of(raw: bytes) -> chain_resources.UnsignedTransaction:
    return chain_resources.UnsignedTransaction.FromString(raw)
