"""The deposit service's rules: the deposit state machine, the checks a transfer must pass to be
credited, the ids of every ledger entry a deposit makes, and the platform's ledger codes.

A deposit is identified by the (chain, tx hash, log index) of its first inclusion: its id is a
UUIDv5 of that key, and every ledger entry it makes carries an id derived from that id, so that a
repeated event, a retry after a crash or a second replica can never credit twice.

Ledger, per deposit (A = the custody account of the deposit address, `assets:custody:deposit:
<address>:<asset>`; U = the user's liability account from the account service):
- CONFIRMING: a PENDING entry debiting A and crediting U (U's pending incoming balance);
- CREDITED: that entry posted;
- REORGED: that entry voided; a re-inclusion holds again with a new PENDING entry;
- FROZEN: an AMOUNT freeze in the account service (reason DEPOSIT_REORG) of what U still holds;
- REVERSED: the freeze captured back into A, and what U no longer held debited to the
  platform's receivable from that user.
Pure: nothing here does I/O.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import IntEnum

import grpc

from svc.kit import errors

DEPOSIT_ID_NAMESPACE = uuid.UUID("0d8e7c9a-3b1f-5a64-8e2d-7f4c1b9a0e35")
SYSTEM_PRINCIPAL = "deposit"
ENTRY_PREFIX = "deposit."
PENDING_CATEGORY = "deposit.pending"
CREDIT_CATEGORY = "deposit.credit"
REVERSAL_CATEGORY = "deposit.reversal"
LOSS_CATEGORY = "deposit.reorg_loss"
NATIVE_LOG_INDEX = -1


class State(IntEnum):
    """State of a deposit (finmesh.deposit.v1.DepositState)."""

    PENDING = 1
    CONFIRMING = 2
    CREDITED = 3
    REORGED = 4
    FROZEN = 5
    BELOW_MINIMUM = 6
    UNKNOWN_TOKEN = 7
    REVERSED = 8


class Resolution(IntEnum):
    """How an operator resolves a FROZEN deposit (finmesh.deposit.v1.FrozenResolution)."""

    UNSPECIFIED = 0
    RELEASE = 1
    REVERSE = 2


class Kind(IntEnum):
    """Native coin or ERC-20 (finmesh.chain_gateway.v1.TransferKind)."""

    NATIVE = 1
    ERC20 = 2


TRANSITIONS = {
    (State.PENDING, State.CONFIRMING),
    (State.PENDING, State.BELOW_MINIMUM),
    (State.PENDING, State.UNKNOWN_TOKEN),
    (State.PENDING, State.REORGED),
    (State.CONFIRMING, State.CREDITED),
    (State.CONFIRMING, State.REORGED),
    (State.REORGED, State.CONFIRMING),
    (State.CREDITED, State.FROZEN),
    (State.FROZEN, State.CREDITED),
    (State.FROZEN, State.REVERSED),
}
TERMINAL = frozenset({State.BELOW_MINIMUM, State.UNKNOWN_TOKEN, State.REVERSED})


def transition(deposit: Deposit, target: State) -> State:
    """The one place that allows a deposit's state change; anything else is INVALID_STATE."""
    if (deposit.state, target) not in TRANSITIONS:
        raise errors.InvalidState(
            f"deposit is {deposit.state.name}, cannot become {target.name}",
            metadata={"deposit_id": deposit.deposit_id, "state": deposit.state.name},
        )
    return target


@dataclass(frozen=True)
class Inclusion:
    """Where a transfer sits on chain: one block of one branch."""

    block_number: int
    block_hash: str
    block_time_us: int
    log_index: int


@dataclass(frozen=True)
class Deposit:
    """A transfer to a deposit address and its way to credit (see the module doc)."""

    deposit_id: str
    user_id: str
    wallet_id: str
    chain: str
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    block_time_us: int
    kind: Kind
    from_address: str
    to_address: str
    # '' for an unknown token; then token_contract and amount are what the chain said.
    asset: str
    amount: int
    token_contract: str
    state: State
    # Whether the current inclusion is on the canonical chain (False after a reorganisation
    # removed it, until the transaction is seen again).
    included: bool
    # Whether the chain gateway reported the current inclusion at the chain's depth.
    chain_confirmed: bool
    required_confirmations: int
    minimum_amount: int | None
    # The user's account in the account service and its ledger account (U); empty unless accepted.
    account_id: str = ""
    ledger_account_id: str = ""
    pending_entry_id: str = ""
    credit_entry_id: str = ""
    reversal_entry_id: str = ""
    sweep_id: str = ""
    reorg_count: int = 0
    freeze_id: str = ""
    freeze_entry_id: str = ""
    freeze_time_us: int | None = None
    fork_block_number: int = 0
    frozen_amount: int = 0
    resolution: Resolution = Resolution.UNSPECIFIED
    resolved_by: str = ""
    approval_id: str = ""
    resolve_note: str = ""
    resolve_time_us: int | None = None
    seen_time_us: int = 0
    credit_time_us: int | None = None
    update_time_us: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        assert self.amount >= 0, self
        if self.state is State.UNKNOWN_TOKEN:
            assert self.asset == "", self
        elif self.state is not State.PENDING:
            assert self.asset != "", self
        assert self.frozen_amount <= self.amount, self
        if self.state in (State.CREDITED, State.FROZEN, State.REVERSED):
            assert self.credit_entry_id and self.credit_time_us is not None, self
        if self.state is State.CONFIRMING:
            assert self.pending_entry_id and not self.credit_entry_id and self.included, self

    @property
    def transfer_key(self) -> str:
        """`<chain>:<tx_hash>:<log_index>` of the current inclusion (the chain gateway's key)."""
        return f"{self.chain}:{self.tx_hash}:{self.log_index}"

    def is_inclusion(self, block_hash: str, log_index: int) -> bool:
        """Whether (block hash, log index) is this deposit's current inclusion."""
        return self.block_hash == block_hash and self.log_index == log_index


def deposit_id_for(chain: str, tx_hash: str, log_index: int) -> str:
    """The deposit id of a transfer key: the same for every delivery, replica and retry."""
    return str(uuid.uuid5(DEPOSIT_ID_NAMESPACE, f"{chain}:{tx_hash.lower()}:{log_index}"))


def pending_entry_id(deposit_id: str, reorg_count: int) -> str:
    """Ledger id of the PENDING entry of inclusion number `reorg_count` (0 for the first)."""
    return f"{ENTRY_PREFIX}{deposit_id}.pending.{reorg_count}"


def void_entry_id(deposit_id: str, reorg_count: int) -> str:
    """Ledger id of the VOID_PENDING entry withdrawing inclusion `reorg_count`'s pending entry."""
    return f"{ENTRY_PREFIX}{deposit_id}.void.{reorg_count}"


def credit_entry_id(deposit_id: str) -> str:
    """Ledger id of the one POST_PENDING entry that credits a deposit: at most one per deposit."""
    return f"{ENTRY_PREFIX}{deposit_id}.credit"


def remainder_entry_id(deposit_id: str) -> str:
    """Ledger id of a reversal's entry for what the user no longer held."""
    return f"{ENTRY_PREFIX}{deposit_id}.reversal"


def loss_entry_id(deposit_id: str, reorg_count: int) -> str:
    """Ledger id of the entry by which the platform absorbs a released, never re-included deposit."""
    return f"{ENTRY_PREFIX}{deposit_id}.loss.{reorg_count}"


def request_id_for(deposit_id: str, step: str) -> str:
    """Idempotency key of a call to a peer for one step of a deposit."""
    return f"deposit.{deposit_id}.{step}"


def custody_code(address: str, asset: str) -> str:
    """The platform's asset account mirroring what one deposit address holds of an asset."""
    return f"assets:custody:deposit:{address.lower()}:{asset}"


def loss_code(asset: str) -> str:
    """Where the platform absorbs deposits released after a reorganisation removed them for good."""
    return f"expenses:deposits:reorg_losses:{asset}"


def receivable_code(user_id: str, asset: str) -> str:
    """What a user owes the platform after a reversal exceeding what their account still held."""
    return f"assets:receivables:deposit_reorgs:{user_id}:{asset}"


@dataclass(frozen=True)
class Config:
    """Deposit settings of one asset; absent settings mean minimum 0, the chain's depth, threshold 0."""

    chain: str
    symbol: str
    minimum_amount: int = 0
    confirmation_depth: int = 0
    sweep_threshold: int = 0
    update_time_us: int = 0
    update_user_id: str = ""
    version: int = 0

    @property
    def asset(self) -> str:
        return f"{self.chain}:{self.symbol}"


def required_confirmations(config: Config | None, chain_depth: int) -> int:
    """The asset's depth when set (never below the chain's), else the chain's."""
    assert chain_depth >= 1, chain_depth
    if config is None or config.confirmation_depth == 0:
        return chain_depth
    return max(config.confirmation_depth, chain_depth)


def check_depth(depth: int, chain_depth: int) -> None:
    """An asset's depth is 0 (the chain's) or at least the chain's."""
    if depth and depth < chain_depth:
        raise errors.InvalidArgument(
            [
                errors.FieldViolation(
                    "config.confirmation_depth", f"0 or at least the chain's depth of {chain_depth}", "range"
                )
            ]
        )


def acceptance(asset: str, amount: int, config: Config | None) -> State:
    """Where a newly seen transfer goes: UNKNOWN_TOKEN, BELOW_MINIMUM or CONFIRMING."""
    if not asset:
        return State.UNKNOWN_TOKEN
    minimum = config.minimum_amount if config is not None else 0
    if amount == 0 or amount < minimum:
        return State.BELOW_MINIMUM
    return State.CONFIRMING


def confirmations(block_number: int, last_block_number: int, included: bool) -> int:
    """Confirmations of a block given the follower's newest block (the block itself is the first)."""
    if not included or last_block_number < block_number:
        return 0
    return last_block_number - block_number + 1


def same_transfer(
    deposit: Deposit, tx_hash: str, to_address: str, asset: str, token: str, amount: int
) -> bool:
    """Whether a transfer seen on a new branch is this deposit's transfer included again: same
    transaction, recipient, asset (or token contract) and amount."""
    return (
        deposit.tx_hash == tx_hash
        and deposit.to_address == to_address
        and deposit.asset == asset
        and deposit.token_contract == token
        and deposit.amount == amount
    )


# Sweeps (finmesh.deposit.v1.Sweep): a batch moving what deposit addresses hold of one asset to
# the hot wallet. Ledger, per item, once its transactions are final, in one linked batch:
# - the amount swept: the address's custody account credited, the hot wallet's debited;
# - a gas top-up (ERC-20): its value from the hot wallet to the address's native custody account,
#   and its fee from the hot wallet to the gas expense;
# - the sweep's fee from the address's native custody account to the gas expense.
# Every id derives from (sweep, address, purpose), so a retry cannot post twice.

SWEEP_ITEMS_MAX = 500
SWEEP_CATEGORY = "deposit.sweep"
SWEEP_GAS_CATEGORY = "deposit.sweep.gas"
APPROVAL_ID_NAMESPACE = uuid.UUID("6f1d3a52-9c4e-5b7a-8d20-3e9b1c7a4f61")
SWEEP_REFERENCE_PREFIX = "sweep:"


class SweepState(IntEnum):
    """finmesh.deposit.v1.SweepState."""

    CREATED = 1
    RUNNING = 2
    COMPLETED = 3
    PARTIALLY_COMPLETED = 4
    FAILED = 5


class ItemState(IntEnum):
    """finmesh.deposit.v1.SweepItemState."""

    PENDING = 1
    FUNDING_GAS = 2
    READY = 3
    BROADCAST = 4
    CONFIRMED = 5
    FAILED = 6
    SKIPPED = 7


class Trigger(IntEnum):
    """finmesh.deposit.v1.SweepTrigger."""

    SCHEDULED = 1
    MANUAL = 2


class TxPurpose(IntEnum):
    """What a sweep's transaction does for its item."""

    TOP_UP = 1
    SWEEP = 2


class TxStatus(IntEnum):
    """finmesh.chain_gateway.v1.TransactionStatus (UNSPECIFIED: not broadcast yet)."""

    UNSPECIFIED = 0
    PENDING = 1
    MINED = 2
    CONFIRMED = 3
    FAILED = 4
    DROPPED = 5
    REPLACED = 6


class SweepRunning(errors.DomainError):
    """A sweep of the chain and asset has not finished: one runs at a time (the contract's
    FAILED_PRECONDITION with reason CONFLICT)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "CONFLICT"


SWEEP_TERMINAL = frozenset({SweepState.COMPLETED, SweepState.PARTIALLY_COMPLETED, SweepState.FAILED})
ITEM_TERMINAL = frozenset({ItemState.CONFIRMED, ItemState.FAILED, ItemState.SKIPPED})
ITEM_TRANSITIONS = {
    (ItemState.PENDING, ItemState.FUNDING_GAS),
    (ItemState.PENDING, ItemState.READY),
    (ItemState.PENDING, ItemState.SKIPPED),
    (ItemState.PENDING, ItemState.FAILED),
    (ItemState.FUNDING_GAS, ItemState.READY),
    (ItemState.FUNDING_GAS, ItemState.FAILED),
    (ItemState.READY, ItemState.BROADCAST),
    (ItemState.READY, ItemState.FAILED),
    (ItemState.BROADCAST, ItemState.CONFIRMED),
    (ItemState.BROADCAST, ItemState.FAILED),
}


@dataclass(frozen=True)
class Sweep:
    """A sweep batch (see above); amounts in base units, fees and top-ups in the native asset."""

    sweep_id: str
    chain: str
    asset: str
    native_asset: str
    destination_wallet_id: str
    destination_address: str
    state: SweepState
    trigger: Trigger
    requested_by: str
    create_time_us: int
    total_amount: int = 0
    total_gas_top_up: int = 0
    total_network_fee: int = 0
    ledger_entry_ids: tuple[str, ...] = ()
    complete_time_us: int | None = None
    version: int = 1

    @property
    def native(self) -> bool:
        return self.asset == self.native_asset


@dataclass(frozen=True)
class SweepItem:
    """One deposit address within a sweep."""

    sweep_id: str
    address: str
    position: int
    derivation_path: str
    amount: int
    state: ItemState
    gas_top_up_tx_hash: str = ""
    gas_top_up: int = 0
    sweep_tx_hash: str = ""
    network_fee: int = 0
    message: str = ""


@dataclass(frozen=True)
class SweepTransaction:
    """A transaction of an item, stored when built and again, signed, BEFORE it is broadcast."""

    sweep_id: str
    address: str
    purpose: TxPurpose
    chain: str
    unsigned: bytes
    approval: bytes
    reservation_id: str
    value: int
    signed_transaction: str = ""
    tx_hash: str = ""
    status: TxStatus = TxStatus.UNSPECIFIED
    network_fee: int = 0
    create_time_us: int = 0


def transition_item(item: SweepItem, target: ItemState) -> ItemState:
    """The one place that allows an item's state change; anything else is INVALID_STATE."""
    if (item.state, target) not in ITEM_TRANSITIONS:
        raise errors.InvalidState(
            f"sweep item is {item.state.name}, cannot become {target.name}",
            metadata={"sweep_id": item.sweep_id, "address": item.address, "state": item.state.name},
        )
    return target


def sweep_outcome(items: list[SweepItem]) -> SweepState:
    """COMPLETED when every item is CONFIRMED or SKIPPED, PARTIALLY_COMPLETED when some failed but
    some confirmed, FAILED when items failed and none confirmed."""
    assert all(item.state in ITEM_TERMINAL for item in items), items
    failed = any(item.state is ItemState.FAILED for item in items)
    if not failed:
        return SweepState.COMPLETED
    if any(item.state is ItemState.CONFIRMED for item in items):
        return SweepState.PARTIALLY_COMPLETED
    return SweepState.FAILED


def sweep_entry_id(sweep_id: str, address: str, purpose: str) -> str:
    """Ledger id of one of an item's entries (purpose: amount, top_up, top_up_fee, fee)."""
    return f"{ENTRY_PREFIX}sweep.{sweep_id}.{address.lower()}.{purpose}"


def sweep_step_id(sweep_id: str, address: str, step: str) -> str:
    """Idempotency key of a call to a peer for one step of an item."""
    return f"{ENTRY_PREFIX}sweep.{sweep_id}.{address.lower()}.{step}"


def sweep_approval_id(sweep_id: str, address: str, purpose: TxPurpose) -> str:
    """The approval id of an item's transaction: one per (sweep, address, purpose)."""
    return str(uuid.uuid5(APPROVAL_ID_NAMESPACE, f"{sweep_id}:{address.lower()}:{purpose.name}"))


def native_sweep_value(balance: int, gas_limit: int, max_fee_per_gas: int) -> int:
    """What a native sweep can send: the balance less the most its gas can cost."""
    return balance - gas_limit * max_fee_per_gas


def gas_top_up(native_balance: int, max_network_fee: int) -> int:
    """Native coin to send to an address so that it can pay a token sweep's gas: nothing when it
    holds enough; else twice the estimate less what it holds, so a rise of the base fee between
    the estimate and the sweep does not leave it short."""
    if native_balance >= max_network_fee:
        return 0
    return 2 * max_network_fee - native_balance
