"""Translation between the custody domain and the contract's messages (responses and events)."""

from __future__ import annotations

from typing import Any

from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.common.v1 import money_pb2
from finmesh.custody.v1 import custody_resources_pb2 as resources
from google.protobuf import timestamp_pb2

from svc.custody.domain import Approval, Movement, Policy, Wallet
from svc.custody.ethereum import MalformedTransaction, TransactionType, Unsigned
from svc.custody.keys import CURVE

TYPED_FEE_FIELDS = ("max_fee_per_gas", "max_priority_fee_per_gas")


def timestamp(time_us: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(time_us)
    return stamp


def wallet_message(wallet: Wallet) -> resources.CustodyWallet:
    """The contract's CustodyWallet: the key's public part only."""
    return resources.CustodyWallet(
        wallet_id=wallet.wallet_id,
        name=wallet.name,
        kind=int(wallet.kind),  # type: ignore[arg-type]
        chain_family=int(wallet.chain_family),  # type: ignore[arg-type]
        chains=list(wallet.chains),
        address=wallet.address,
        key=resources.KeyInfo(
            key_id=wallet.key_id,
            backend=wallet.backend,  # type: ignore[arg-type]
            curve=CURVE,
            public_key="0x" + wallet.public_key.hex(),
            backend_reference=wallet.backend_reference,
            create_time=timestamp(wallet.create_time_us),
        ),
        state=int(wallet.state),  # type: ignore[arg-type]
        required_approvals=wallet.required_approvals,
        disable_reason=wallet.disable_reason,
        create_time=timestamp(wallet.create_time_us),
        update_time=timestamp(wallet.update_time_us),
    )


def movement_message(movement: Movement, approvals: list[Approval]) -> resources.Movement:
    message = _movement_message(movement, approvals)
    if movement.network_fee is not None:
        message.network_fee.CopyFrom(
            money_pb2.Money(asset=movement.network_fee_asset, amount=str(movement.network_fee))
        )
    return message


def _movement_message(movement: Movement, approvals: list[Approval]) -> resources.Movement:
    return resources.Movement(
        movement_id=movement.movement_id,
        kind=int(movement.kind),  # type: ignore[arg-type]
        source_wallet_id=movement.source_wallet_id,
        destination_wallet_id=movement.destination_wallet_id,
        chain=movement.chain,
        from_address=movement.from_address,
        to_address=movement.to_address,
        amount=money_pb2.Money(asset=movement.asset, amount=str(movement.amount)),
        state=int(movement.state),  # type: ignore[arg-type]
        required_approvals=movement.required_approvals,
        approvals=[approval_message(approval) for approval in approvals],
        requested_by=movement.requested_by,
        reason=movement.reason,
        plan_id=movement.plan_id,
        tx_hash=movement.tx_hash,
        outcome_message=movement.outcome_message,
        approval_expire_time=timestamp(movement.approval_expire_time_us),
        create_time=timestamp(movement.create_time_us),
        update_time=timestamp(movement.update_time_us),
        version=movement.version,
    )


def approval_message(approval: Approval) -> resources.MovementApproval:
    return resources.MovementApproval(
        approver_id=approval.approver_id,
        decision=int(approval.decision),  # type: ignore[arg-type]
        comment=approval.comment,
        decide_time=timestamp(approval.decide_time_us),
    )


def record_message(row: dict[str, Any]) -> resources.SignatureRecord:
    """The contract's SignatureRecord from a stored row."""
    values = dict(row)
    time_us = values.pop("request_time_us")
    asset, amount = values.pop("asset"), values.pop("amount")
    message = resources.SignatureRecord(**values)
    message.request_time.CopyFrom(timestamp(time_us))
    if asset:
        message.amount.CopyFrom(money_pb2.Money(asset=asset, amount=str(amount)))
    return message


def _wei(text: str, field: str) -> int:
    if not text:
        raise MalformedTransaction(f"{field} is required for this transaction type")
    return int(text)


def unsigned_of(message: chain_resources.UnsignedTransaction) -> Unsigned:
    """The transaction's fields (patterns were validated); MalformedTransaction for a wrong mix of fees."""
    kind = TransactionType(message.type)
    if kind is TransactionType.LEGACY:
        if any(getattr(message, field) for field in TYPED_FEE_FIELDS):
            raise MalformedTransaction("a legacy transaction has a gas price, not EIP-1559 fees")
        gas_price, max_fee, priority_fee = _wei(message.gas_price, "gas_price"), 0, 0
    else:
        if message.gas_price:
            raise MalformedTransaction("an EIP-1559 transaction has no gas price")
        gas_price = 0
        max_fee = _wei(message.max_fee_per_gas, "max_fee_per_gas")
        priority_fee = _wei(message.max_priority_fee_per_gas, "max_priority_fee_per_gas")
        if priority_fee > max_fee:
            raise MalformedTransaction("max_priority_fee_per_gas is above max_fee_per_gas")
    return Unsigned(
        chain_id=message.chain_id,
        type=kind,
        sender=message.from_address,
        to=message.to_address,
        value=int(message.value),
        data=bytes.fromhex(message.data[2:]),
        nonce=message.nonce,
        gas_limit=message.gas_limit,
        gas_price=gas_price,
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=priority_fee,
    )


def policy_message(policy: Policy) -> resources.HotWalletPolicy:
    return resources.HotWalletPolicy(
        policy_id=policy.policy_id,
        asset=policy.asset,
        hot_wallet_id=policy.hot_wallet_id,
        cold_wallet_id=policy.cold_wallet_id,
        floor=str(policy.floor),
        target=str(policy.target),
        ceiling=str(policy.ceiling),
        auto_sweep=policy.auto_sweep,
        enabled=policy.enabled,
        update_user_id=policy.update_user_id,
        create_time=timestamp(policy.create_time_us),
        update_time=timestamp(policy.update_time_us),
        version=policy.version,
    )
