"""Domain values to contract messages."""

from __future__ import annotations

from finmesh.common.v1 import money_pb2
from finmesh.deposit.v1 import deposit_resources_pb2 as resources
from google.protobuf import timestamp_pb2

from svc.deposit import domain
from svc.deposit.domain import Config, Deposit, State, Sweep, SweepItem


def _stamp(time_us: int | None) -> timestamp_pb2.Timestamp | None:
    if time_us is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(time_us)
    return stamp


def deposit_message(deposit: Deposit, last_block_number: int | None = None) -> resources.Deposit:
    """The contract's Deposit; confirmations from the follower's newest block when known."""
    message = resources.Deposit(
        deposit_id=deposit.deposit_id,
        user_id=deposit.user_id,
        wallet_id=deposit.wallet_id,
        chain=deposit.chain,
        tx_hash=deposit.tx_hash,
        log_index=deposit.log_index,
        block_number=deposit.block_number,
        block_hash=deposit.block_hash,
        kind=int(deposit.kind),  # type: ignore[arg-type]
        from_address=deposit.from_address,
        to_address=deposit.to_address,
        state=int(deposit.state),  # type: ignore[arg-type]
        required_confirmations=deposit.required_confirmations,
        credit_entry_id=deposit.credit_entry_id,
        reversal_entry_id=deposit.reversal_entry_id,
        sweep_id=deposit.sweep_id,
        reorg_count=deposit.reorg_count,
        version=deposit.version,
    )
    if deposit.asset:
        message.amount.asset = deposit.asset
        message.amount.amount = str(deposit.amount)
    else:
        message.unknown_token.contract_address = deposit.token_contract
        message.unknown_token.raw_amount = str(deposit.amount)
    if deposit.state is State.BELOW_MINIMUM and deposit.minimum_amount is not None:
        message.minimum_amount = str(deposit.minimum_amount)
    if last_block_number is not None:
        message.confirmations = domain.confirmations(
            deposit.block_number, last_block_number, deposit.included
        )
    elif deposit.chain_confirmed and deposit.included:
        message.confirmations = deposit.required_confirmations
    for name, value in (
        ("block_time", deposit.block_time_us),
        ("seen_time", deposit.seen_time_us),
        ("credit_time", deposit.credit_time_us),
        ("update_time", deposit.update_time_us),
    ):
        stamp = _stamp(value)
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    if deposit.freeze_time_us is not None:
        freeze = message.freeze
        freeze.freeze_time.FromMicroseconds(deposit.freeze_time_us)
        freeze.fork_block_number = deposit.fork_block_number
        freeze.freeze_entry_id = deposit.freeze_entry_id
        freeze.resolution = int(deposit.resolution)  # type: ignore[assignment]
        freeze.resolved_by = deposit.resolved_by
        freeze.approval_id = deposit.approval_id
        freeze.note = deposit.resolve_note
        freeze.frozen_amount.asset = deposit.asset
        freeze.frozen_amount.amount = str(deposit.frozen_amount)
        resolved = _stamp(deposit.resolve_time_us)
        if resolved is not None:
            freeze.resolve_time.CopyFrom(resolved)
    return message


def config_message(config: Config) -> resources.DepositConfig:
    """The contract's DepositConfig."""
    message = resources.DepositConfig(
        chain=config.chain,
        symbol=config.symbol,
        asset=config.asset,
        minimum_amount=str(config.minimum_amount),
        confirmation_depth=config.confirmation_depth,
        sweep_threshold=str(config.sweep_threshold),
        update_user_id=config.update_user_id,
        version=config.version,
    )
    stamp = _stamp(config.update_time_us)
    if stamp is not None and config.update_time_us:
        message.update_time.CopyFrom(stamp)
    return message


def _money(asset: str, amount: int) -> money_pb2.Money:
    return money_pb2.Money(asset=asset, amount=str(amount))


def sweep_item_message(sweep: Sweep, item: SweepItem) -> resources.SweepItem:
    """The contract's SweepItem; top-up and fees in the chain's native asset."""
    message = resources.SweepItem(
        address=item.address,
        derivation_path=item.derivation_path,
        amount=_money(sweep.asset, item.amount),
        state=int(item.state),  # type: ignore[arg-type]
        gas_top_up_tx_hash=item.gas_top_up_tx_hash,
        sweep_tx_hash=item.sweep_tx_hash,
        network_fee=_money(sweep.native_asset, item.network_fee),
        message=item.message,
    )
    if item.gas_top_up:
        message.gas_top_up.CopyFrom(_money(sweep.native_asset, item.gas_top_up))
    return message


def sweep_message(sweep: Sweep, items: list[SweepItem] | None = None) -> resources.Sweep:
    """The contract's Sweep, with its items when given."""
    message = resources.Sweep(
        sweep_id=sweep.sweep_id,
        chain=sweep.chain,
        asset=sweep.asset,
        destination_wallet_id=sweep.destination_wallet_id,
        destination_address=sweep.destination_address,
        state=int(sweep.state),  # type: ignore[arg-type]
        trigger=int(sweep.trigger),  # type: ignore[arg-type]
        requested_by=sweep.requested_by,
        items=[sweep_item_message(sweep, item) for item in items or []],
        total_amount=_money(sweep.asset, sweep.total_amount),
        total_gas_top_up=_money(sweep.native_asset, sweep.total_gas_top_up),
        total_network_fee=_money(sweep.native_asset, sweep.total_network_fee),
        ledger_entry_ids=list(sweep.ledger_entry_ids),
    )
    message.create_time.FromMicroseconds(sweep.create_time_us)
    if sweep.complete_time_us is not None:
        message.complete_time.FromMicroseconds(sweep.complete_time_us)
    return message
