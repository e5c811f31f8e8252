"""Translation between the wallet domain and the contract's messages (responses and events alike)."""

from __future__ import annotations

from finmesh.common.v1 import money_pb2
from finmesh.wallet.v1 import wallet_resources_pb2 as resources
from google.protobuf import timestamp_pb2

from svc.wallet.domain import HistoryEntry, InternalTransfer, Wallet


def timestamp(time_us: int) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp from microseconds since the epoch."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(time_us)
    return stamp


def wallet_message(wallet: Wallet) -> resources.Wallet:
    """The contract's Wallet with its deposit address."""
    return resources.Wallet(
        wallet_id=wallet.wallet_id,
        user_id=wallet.user_id,
        chain=wallet.chain,
        deposit_address=resources.DepositAddress(
            address=wallet.address,
            derivation_path=wallet.derivation_path,
            address_index=wallet.address_index,
            custody_wallet_id=wallet.custody_wallet_id,
            xpub_fingerprint=wallet.xpub_fingerprint,
        ),
        state=int(wallet.state),  # type: ignore[arg-type]
        create_time=timestamp(wallet.create_time_us),
        update_time=timestamp(wallet.update_time_us),
    )


def transfer_message(transfer: InternalTransfer) -> resources.InternalTransfer:
    """The contract's InternalTransfer."""
    message = resources.InternalTransfer(
        transfer_id=transfer.transfer_id,
        from_user_id=transfer.from_user_id,
        to_user_id=transfer.to_user_id,
        from_display=transfer.from_display,
        to_display=transfer.to_display,
        amount=money_pb2.Money(asset=transfer.asset, amount=str(transfer.amount)),
        memo=transfer.memo,
        state=int(transfer.state),  # type: ignore[arg-type]
        ledger_entry_id=transfer.ledger_entry_id,
        reversal_entry_id=transfer.reversal_entry_id,
        create_time=timestamp(transfer.create_time_us),
    )
    if transfer.reverse_time_us is not None:
        message.reverse_time.CopyFrom(timestamp(transfer.reverse_time_us))
    return message


def history_message(entry: HistoryEntry) -> resources.WalletTransaction:
    """The contract's WalletTransaction."""
    message = resources.WalletTransaction(
        entry_id=entry.entry_id,
        user_id=entry.user_id,
        kind=int(entry.kind),  # type: ignore[arg-type]
        status=int(entry.status),  # type: ignore[arg-type]
        source_state=entry.source_state,
        source_id=entry.source_id,
        chain=entry.chain,
        amount=money_pb2.Money(asset=entry.asset, amount=str(entry.amount)),
        address=entry.address,
        counterparty_display=entry.counterparty_display,
        tx_hash=entry.tx_hash,
        confirmations=entry.confirmations,
        required_confirmations=entry.required_confirmations,
        memo=entry.memo,
        create_time=timestamp(entry.create_time_us),
        update_time=timestamp(entry.update_time_us),
    )
    if entry.fee is not None:
        message.fee.CopyFrom(money_pb2.Money(asset=entry.fee_asset, amount=str(entry.fee)))
    if entry.complete_time_us is not None:
        message.complete_time.CopyFrom(timestamp(entry.complete_time_us))
    return message
