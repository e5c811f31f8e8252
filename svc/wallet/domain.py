"""The wallet domain: wallets with their deposit addresses, internal transfers, and the entries of
the unified history, with their state machines. Pure: no I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import IntEnum

from svc.kit import errors

ME = "me"
WATCH_OWNER = "deposit"
TRANSFER_CATEGORY = "transfer.internal"
REVERSAL_CATEGORY = "transfer.internal_reversal"
# Ids derived from a request id are stable across retries (the ledger's entry id is its key).
_TRANSFER_NAMESPACE = uuid.UUID("5b0e6f0c-6c33-4d0e-9a43-3f6f2f0b7a11")


class WalletState(IntEnum):
    """finmesh.wallet.v1.WalletState."""

    ACTIVE = 1
    CLOSED = 2


class TransferState(IntEnum):
    """finmesh.wallet.v1.InternalTransferState."""

    COMPLETED = 1
    REVERSED = 2


class Kind(IntEnum):
    """finmesh.wallet.v1.WalletTransactionKind."""

    DEPOSIT = 1
    WITHDRAWAL = 2
    INTERNAL_TRANSFER_IN = 3
    INTERNAL_TRANSFER_OUT = 4


class Status(IntEnum):
    """finmesh.wallet.v1.WalletTransactionStatus."""

    PENDING = 1
    COMPLETED = 2
    NOT_CREDITED = 3
    ON_HOLD = 4
    REVERSED = 5
    REJECTED = 6
    CANCELLED = 7
    FAILED = 8


FINAL_STATUSES = frozenset(set(Status) - {Status.PENDING})

_TRANSFER_TRANSITIONS = {TransferState.COMPLETED: frozenset({TransferState.REVERSED})}


@dataclass(frozen=True, slots=True)
class Wallet:
    """A user's wallet on one chain and its deposit address."""

    wallet_id: str
    user_id: str
    chain: str
    address: str  # EIP-55
    address_lower: str
    derivation_path: str
    address_index: int
    custody_wallet_id: str
    xpub_fingerprint: str
    state: WalletState
    request_id: str  # the CreateWallet request that created it
    watched: bool  # registered with the chain gateway, and WalletCreated published
    version: int
    create_time_us: int
    update_time_us: int


@dataclass(frozen=True, slots=True)
class InternalTransfer:
    """A transfer of an asset between two users, posted in the ledger as one entry."""

    transfer_id: str
    request_id: str
    chain: str
    from_user_id: str
    to_user_id: str
    from_display: str
    to_display: str
    asset: str
    amount: int
    memo: str
    state: TransferState
    ledger_entry_id: str
    reversal_entry_id: str
    reversed_by: str
    reverse_reason: str
    approval_id: str
    version: int
    create_time_us: int
    reverse_time_us: int | None
    ledger_sequence: int  # of the entry that moved the funds
    reversal_sequence: int  # of the correcting entry; 0 unless REVERSED


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One entry of a user's unified history (the projection of the sources' events)."""

    entry_id: str  # `<kind>:<source_id>`
    user_id: str
    kind: Kind
    status: Status
    source_state: str
    source_id: str
    chain: str
    asset: str
    amount: int
    fee_asset: str
    fee: int | None
    address: str
    counterparty_display: str
    tx_hash: str
    confirmations: int
    required_confirmations: int
    memo: str
    create_time_us: int
    update_time_us: int
    complete_time_us: int | None
    # Version of the source aggregate this entry reflects; older events never overwrite it.
    source_version: int


def history_entry_id(kind: Kind, source_id: str) -> str:
    """The contract's `<kind>:<source_id>` id of a history entry."""
    return f"{kind.name.lower()}:{source_id}"


def transfer_id_for(user_id: str, request_id: str) -> str:
    """The transfer id of a sender's request: the same request always names the same transfer."""
    return str(uuid.uuid5(_TRANSFER_NAMESPACE, f"{user_id}/{request_id}"))


def transfer_entry_id(transfer_id: str) -> str:
    """The ledger entry posting a transfer."""
    return f"wallet.transfer.{transfer_id}"


def reversal_entry_id(transfer_id: str) -> str:
    """The ledger CORRECTION entry reversing a transfer."""
    return f"wallet.reversal.{transfer_id}"


def require_transition(transfer: InternalTransfer, target: TransferState) -> None:
    """INVALID_STATE unless `transfer` may move to `target`."""
    if target not in _TRANSFER_TRANSITIONS.get(transfer.state, frozenset()):
        raise errors.InvalidState(
            f"an internal transfer {transfer.state.name} cannot become {target.name}",
            metadata={"transfer_id": transfer.transfer_id, "state": transfer.state.name},
        )


def mask_email(email: str) -> str:
    """`john@example.com` -> `j***@example.com`."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str) -> str:
    """`+4915112345678` -> `+49*******5678`: the country prefix and the last four digits, shown only
    when at least four digits stay hidden (a short number shows its prefix alone)."""
    hidden = len(phone) - 7
    if hidden < 4:
        return phone[:3] + "*" * max(len(phone) - 3, 0)
    return phone[:3] + "*" * hidden + phone[-4:]


def display_of(email: str, phone: str) -> str:
    """A user as shown to another: masked email, else masked phone."""
    if email:
        return mask_email(email)
    return mask_phone(phone) if phone else ""
