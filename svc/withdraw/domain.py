"""The withdraw service's records and rules: withdrawals, whitelist entries, approvers'
decisions, on-chain transactions, and the limit and fee arithmetic. Amounts are int base units."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field

from svc.kit import errors
from svc.withdraw.config import AssetPolicy, LevelLimits
from svc.withdraw.states import State

WITHDRAWAL_ID_NAMESPACE = uuid.UUID("0b6f3f1e-7c1d-4c55-9d8b-5e0f2b8c9a41")
ADDRESS_ID_NAMESPACE = uuid.UUID("5d2c1e7a-3f4b-4a6e-8c9d-1b2a3c4d5e6f")
APPROVAL_ID_NAMESPACE = uuid.UUID("8e1f0a2b-6c3d-4e5f-9a7b-2c1d0e3f4a5b")
ENTRY_PREFIX = "withdraw."
HOLD_CATEGORY = "withdrawal.hold"
GAS_CATEGORY = "withdrawal.gas"
ADDRESSES_PER_USER_MAX = 200
DAY_US = 24 * 3600 * 1_000_000
OUTCOME_MESSAGE_CHARS_MAX = 200
STAFF_ROLES = frozenset({"support", "operator", "approver", "admin", "auditor"})
APPROVER_ROLES = frozenset({"approver"})
# RejectWithdrawal: approvers while AWAITING_APPROVAL, operators (and approvers) to stop one earlier.
REJECTER_ROLES = frozenset({"approver", "operator", "admin"})
OPERATOR_ROLES = frozenset({"operator", "admin"})


class Outcome(enum.IntEnum):
    """finmesh.withdraw.v1.WithdrawalOutcomeReason."""

    NONE = 0
    RISK_DENIED = 1
    APPROVER_REJECTED = 2
    APPROVAL_EXPIRED = 3
    OPERATOR_REJECTED = 4
    USER_CANCELLED = 5
    HOLD_REFUSED = 6
    SIGNING_REFUSED = 7
    TRANSACTION_REVERTED = 8
    TRANSACTION_DROPPED = 9


class Hold(enum.IntEnum):
    """Where the ledger hold of a withdrawal stands."""

    NONE = 0
    PENDING = 1
    POSTED = 2
    VOIDED = 3


class Actor(enum.IntEnum):
    """finmesh.withdraw.v1.ActorType."""

    USER = 1
    STAFF = 2
    SYSTEM = 3


class AddressState(enum.IntEnum):
    COOLING_DOWN = 1
    ACTIVE = 2
    REMOVED = 3


class TxStatus(enum.IntEnum):
    """finmesh.chain_gateway.v1.TransactionStatus (UNSPECIFIED: signed, not broadcast yet)."""

    UNSPECIFIED = 0
    PENDING = 1
    MINED = 2
    CONFIRMED = 3
    FAILED = 4
    DROPPED = 5
    REPLACED = 6


@dataclass
class Withdrawal:
    withdrawal_id: str
    user_id: str
    request_id: str
    fingerprint: str
    chain: str
    asset: str
    amount: int
    fee: int
    destination: str
    address_id: str
    destination_label: str
    note: str
    state: State
    outcome: Outcome
    outcome_message: str
    risk_decision: int
    risk_reasons: str  # JSON list of [code, message]
    risk_time_us: int | None
    auto_approved: bool
    required_approvals: int
    user_ledger_account_id: str
    hold_entry_id: str
    hold: Hold
    source_wallet_id: str
    tx_hash: str
    confirmations: int
    required_confirmations: int
    network_fee_asset: str
    network_fee: int
    replacements: int
    create_time_us: int
    update_time_us: int
    approve_time_us: int | None
    broadcast_time_us: int | None
    complete_time_us: int | None
    approval_expire_time_us: int | None
    version: int

    @property
    def total(self) -> int:
        return self.amount + self.fee


@dataclass
class Address:
    address_id: str
    user_id: str
    chain: str
    address: str
    label: str
    state: AddressState
    usable_time_us: int
    used: bool
    create_time_us: int
    remove_time_us: int | None
    version: int

    def state_at(self, now_us: int) -> AddressState:
        """The state as of `now_us`: a cool-down ends by the clock, whether or not recorded yet."""
        if self.state is AddressState.COOLING_DOWN and now_us >= self.usable_time_us:
            return AddressState.ACTIVE
        return self.state


@dataclass(frozen=True)
class Decision:
    withdrawal_id: str
    approver_id: str
    decision: int  # 1 approve, 2 reject
    comment: str
    decide_time_us: int


@dataclass
class Transaction:
    """One transaction of a withdrawal: the original (seq 0) and each replacement. The approval
    is stored before custody is asked and the signed transaction before it is broadcast, so a
    restart sends exactly these bytes again."""

    withdrawal_id: str
    seq: int
    unsigned: bytes
    approval: bytes
    signed_transaction: str
    tx_hash: str
    nonce: int
    fee_per_gas: int
    status: TxStatus
    broadcast_time_us: int | None
    create_time_us: int


@dataclass(frozen=True)
class Transition:
    withdrawal_id: str
    seq: int
    from_state: State
    to_state: State
    actor_type: Actor
    actor_id: str
    note: str
    transition_time_us: int


@dataclass
class Limits:
    asset: str
    allowed: bool
    min_amount: int
    max_amount: int
    daily_limit: int
    used: int
    fee: int
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def remaining(self) -> int:
        return max(self.daily_limit - self.used, 0)


def withdrawal_id_for(user_id: str, request_id: str) -> str:
    """The id of a CreateWithdrawal (the same for every repeat of one user's request)."""
    return str(uuid.uuid5(WITHDRAWAL_ID_NAMESPACE, f"{user_id}/{request_id}"))


def address_id_for(user_id: str, request_id: str) -> str:
    return str(uuid.uuid5(ADDRESS_ID_NAMESPACE, f"{user_id}/{request_id}"))


def approval_id_for(withdrawal_id: str, seq: int) -> str:
    """One approval per transaction of a withdrawal (a replacement may need a fresh lifetime)."""
    return str(uuid.uuid5(APPROVAL_ID_NAMESPACE, f"{withdrawal_id}/{seq}"))


def hold_entry_id(withdrawal_id: str) -> str:
    return f"{ENTRY_PREFIX}{withdrawal_id}.hold"


def post_entry_id(withdrawal_id: str) -> str:
    return f"{ENTRY_PREFIX}{withdrawal_id}.post"


def void_entry_id(withdrawal_id: str) -> str:
    return f"{ENTRY_PREFIX}{withdrawal_id}.void"


def gas_entry_id(withdrawal_id: str) -> str:
    return f"{ENTRY_PREFIX}{withdrawal_id}.gas"


def step_id(withdrawal_id: str, step: str) -> str:
    """Request id of one call the execution makes for a withdrawal (stable across restarts)."""
    return f"{ENTRY_PREFIX}{withdrawal_id}.{step}"


def limits_for(asset: str, policy: AssetPolicy, level: int, used: int) -> Limits:
    """The limits of `asset` at KYC `level` with `used` already counted in the 24-hour window."""
    configured: LevelLimits | None = policy.limits.get(level)
    if configured is None or not configured.allowed:
        return Limits(asset, False, policy.min_amount, 0, 0, used, policy.fee)
    return Limits(
        asset, True, policy.min_amount, configured.max_amount, configured.daily_limit, used, policy.fee
    )


def check_limits(limits: Limits, amount: int) -> None:
    """LIMIT_EXCEEDED (or INVALID_ARGUMENT under the minimum) unless `amount` fits."""
    metadata = {"asset": limits.asset, "amount": str(amount)}
    if not limits.allowed:
        raise errors.LimitExceeded(
            f"withdrawals of {limits.asset} are not allowed at this KYC level", metadata=metadata
        )
    if amount < limits.min_amount:
        raise errors.InvalidArgument(
            [errors.FieldViolation("amount.amount", f"below the minimum of {limits.min_amount}", "range")]
        )
    if amount > limits.max_amount:
        raise errors.LimitExceeded(
            f"amount is above the per-withdrawal limit of {limits.max_amount}",
            metadata={**metadata, "limit": "max_amount", "max_amount": str(limits.max_amount)},
        )
    if limits.used + amount > limits.daily_limit:
        raise errors.LimitExceeded(
            f"amount is above the {limits.remaining} remaining of the 24-hour limit",
            metadata={**metadata, "limit": "daily_limit", "remaining_amount": str(limits.remaining)},
        )


class FeeAboveMaximum(errors.DomainError):
    """The current fee is above the `max_fee` the user accepted (FAILED_PRECONDITION, CONFLICT)."""

    reason = "CONFLICT"


class StepUpRequired(errors.DomainError):
    code = errors.PermissionDenied.code
    reason = "STEP_UP_REQUIRED"


class RiskRejected(errors.DomainError):
    reason = "RISK_REJECTED"


class AlreadyDecided(errors.DomainError):
    """An approver decides once per withdrawal (FAILED_PRECONDITION, reason ALREADY_EXISTS)."""

    reason = "ALREADY_EXISTS"
