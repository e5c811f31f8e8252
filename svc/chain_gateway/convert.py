"""Rows and domain values to the contract's messages."""

from __future__ import annotations

from typing import Any

from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as resources
from finmesh.common.v1 import money_pb2
from google.protobuf import duration_pb2, timestamp_pb2

from svc.chain_gateway import domain
from svc.chain_gateway.chain import ChainAdapter
from svc.chain_gateway.config import ChainStatus, GasModel, ProviderRole
from svc.chain_gateway.domain import Fees, Intent, Unsigned
from svc.chain_gateway.rpc import ProviderHandle, redact

GAS_MODELS = {GasModel.EIP1559: resources.GAS_MODEL_EIP1559, GasModel.LEGACY: resources.GAS_MODEL_LEGACY}
CHAIN_STATUSES = {
    ChainStatus.ENABLED: resources.CHAIN_STATUS_ENABLED,
    ChainStatus.READ_ONLY: resources.CHAIN_STATUS_READ_ONLY,
    ChainStatus.DISABLED: resources.CHAIN_STATUS_DISABLED,
}
ROLES = {
    ProviderRole.PRIMARY: resources.PROVIDER_ROLE_PRIMARY,
    ProviderRole.FALLBACK: resources.PROVIDER_ROLE_FALLBACK,
    ProviderRole.SELF_HOSTED: resources.PROVIDER_ROLE_SELF_HOSTED,
}


def timestamp(us: int | None) -> timestamp_pb2.Timestamp | None:
    if not us:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(us)
    return stamp


def _required_timestamp(us: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(us)
    return stamp


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def asset_message(asset: domain.Asset, chain: str) -> money_pb2.Asset:
    return money_pb2.Asset(
        id=asset.asset_id,
        symbol=asset.symbol,
        chain=chain,
        decimals=asset.decimals,
        contract_address=asset.contract,
    )


def chain_message(adapter: ChainAdapter, last_block_number: int) -> resources.Chain:
    config = adapter.config
    return resources.Chain(
        chain=adapter.key,
        display_name=config.display_name,
        chain_id=config.chain_id,
        gas_model=GAS_MODELS[config.gas_model],
        confirmation_depth=config.confirmation_depth,
        block_time=duration_pb2.Duration(
            seconds=config.block_time_ms // 1000, nanos=(config.block_time_ms % 1000) * 1_000_000
        ),
        native_asset=asset_message(adapter.native, adapter.key),
        tokens=[asset_message(asset, adapter.key) for asset in adapter.assets[1:]],
        status=CHAIN_STATUSES[config.status],
        development=config.development,
        fee_cap_per_gas=str(config.fee_cap_per_gas),
        gas_limit_margin_bps=config.gas_limit_margin_bps,
        last_block_number=last_block_number,
        explorer_tx_url_template=config.explorer_tx_url_template,
    )


def provider_message(chain: str, handle: ProviderHandle, now_ms: float) -> resources.Provider:
    latency_ms = handle.latency_ms()
    message = resources.Provider(
        name=handle.name,
        chain=chain,
        role=ROLES[handle.config.role],
        priority=handle.config.priority,
        redacted_endpoint=redact(handle.config.endpoint),
        health=int(handle.health),  # type: ignore[arg-type]
        circuit_state=int(handle.circuit.state(now_ms)),  # type: ignore[arg-type]
        in_rotation=handle.in_rotation(now_ms),
        head_block_number=handle.head_block_number,
        lag_blocks=handle.lag_blocks,
        latency=duration_pb2.Duration(
            nanos=int(latency_ms * 1_000_000) % 1_000_000_000, seconds=int(latency_ms // 1000)
        ),
        consecutive_failures=handle.consecutive_failures,
        last_error=handle.last_error,
    )
    for field, value in (
        ("check_time", handle.check_time_us),
        ("health_change_time", handle.health_change_time_us),
    ):
        stamp = timestamp(value)
        if stamp is not None:
            getattr(message, field).CopyFrom(stamp)
    return message


def money(asset: str, amount: int) -> money_pb2.Money:
    return money_pb2.Money(asset=asset, amount=str(amount))


def fee_message(fees: Fees, native_asset: str) -> resources.FeeEstimate:
    message = resources.FeeEstimate(
        gas_model=GAS_MODELS[fees.gas_model],
        estimated_gas=fees.estimated_gas,
        gas_limit=fees.gas_limit,
        base_fee_per_gas=_text(fees.base_fee_per_gas),
        max_priority_fee_per_gas=_text(fees.max_priority_fee_per_gas),
        max_fee_per_gas=_text(fees.max_fee_per_gas),
        gas_price=_text(fees.gas_price),
        max_network_fee=money(native_asset, fees.max_network_fee()),
        expected_network_fee=money(native_asset, fees.expected_network_fee()),
        capped=fees.capped,
        block_number=fees.block_number,
    )
    stamp = timestamp(fees.estimate_time_us)
    assert stamp is not None
    message.estimate_time.CopyFrom(stamp)
    return message


def intent_message(intent: Intent) -> resources.TransferIntent:
    return resources.TransferIntent(
        kind=int(intent.kind),  # type: ignore[arg-type]
        recipient=intent.recipient,
        amount=money(intent.asset, intent.amount),
    )


def unsigned_message(chain: str, unsigned: Unsigned, reservation_id: str) -> resources.UnsignedTransaction:
    return resources.UnsignedTransaction(
        chain=chain,
        chain_id=unsigned.chain_id,
        type=int(unsigned.type),  # type: ignore[arg-type]
        from_address=unsigned.from_address,
        to_address=unsigned.to_address,
        value=str(unsigned.value),
        data="0x" + unsigned.data.hex(),
        nonce=unsigned.nonce,
        gas_limit=unsigned.gas_limit,
        gas_price=_text(unsigned.gas_price),
        max_fee_per_gas=_text(unsigned.max_fee_per_gas),
        max_priority_fee_per_gas=_text(unsigned.max_priority_fee_per_gas),
        signing_hash=unsigned.signing_hash(),
        intent=intent_message(unsigned.intent),
        nonce_reservation_id=reservation_id,
    )


def reservation_message(row: Any) -> resources.NonceReservation:
    message = resources.NonceReservation(
        reservation_id=row.reservation_id,
        chain=row.chain,
        address=row.address,
        nonce=row.nonce,
        state=row.state,
        reference=row.reference,
    )
    message.create_time.CopyFrom(_required_timestamp(row.create_time_us))
    message.expire_time.CopyFrom(_required_timestamp(row.expire_time_us))
    return message


def transaction_message(row: Any, required_confirmations: int, native_asset: str) -> resources.Transaction:
    message = resources.Transaction(
        tx_hash=row.tx_hash,
        chain=row.chain,
        from_address=row.from_address,
        to_address=row.to_address,
        nonce=row.nonce,
        intent=intent_message(Intent.from_json(row.intent)),
        type=row.type,
        gas_limit=row.gas_limit,
        gas_price=_text(row.gas_price),
        max_fee_per_gas=_text(row.max_fee_per_gas),
        max_priority_fee_per_gas=_text(row.max_priority_fee_per_gas),
        status=row.status,
        confirmations=row.confirmations,
        required_confirmations=required_confirmations,
        block_number=row.block_number,
        block_hash=row.block_hash,
        gas_used=row.gas_used,
        effective_gas_price=_text(row.effective_gas_price),
        replaces_tx_hash=row.replaces_tx_hash,
        replaced_by_tx_hash=row.replaced_by_tx_hash,
        reference=row.reference,
        failure_message=row.failure_message,
    )
    if row.block_number and row.effective_gas_price is not None:
        message.network_fee.CopyFrom(money(native_asset, row.gas_used * row.effective_gas_price))
    for field in ("broadcast_time", "last_broadcast_time", "block_time", "final_time"):
        stamp = timestamp(getattr(row, field + "_us"))
        if stamp is not None:
            getattr(message, field).CopyFrom(stamp)
    return message


def transfer_message(row: Any, confirmations: int) -> resources.Transfer:
    message = resources.Transfer(
        transfer_id=row.transfer_id,
        chain=row.chain,
        tx_hash=row.tx_hash,
        log_index=row.log_index,
        block_number=row.block_number,
        block_hash=row.block_hash,
        kind=row.kind,
        from_address=row.from_address,
        to_address=row.to_address,
        token_contract=row.token_contract,
        asset=row.asset,
        amount=str(row.amount),
        status=row.status,
        confirmations=confirmations if row.status != domain.TransferStatus.REORGED else 0,
    )
    for field in ("block_time", "seen_time", "confirm_time", "reorg_time"):
        stamp = timestamp(getattr(row, field + "_us"))
        if stamp is not None:
            getattr(message, field).CopyFrom(stamp)
    return message


def block_message(row: Any) -> resources.Block:
    message = resources.Block(
        chain=row.chain,
        number=row.number,
        hash=row.hash,
        parent_hash=row.parent_hash,
        status=row.status,
        transfer_count=row.transfer_count,
    )
    for field in ("block_time", "process_time", "orphan_time"):
        stamp = timestamp(getattr(row, field + "_us"))
        if stamp is not None:
            getattr(message, field).CopyFrom(stamp)
    return message


def watched_message(row: Any) -> resources.WatchedAddress:
    message = resources.WatchedAddress(
        chain=row.chain,
        address=row.address,
        owner=row.owner,
        reference=row.reference,
        start_block=row.start_block,
    )
    message.create_time.CopyFrom(_required_timestamp(row.create_time_us))
    return message
