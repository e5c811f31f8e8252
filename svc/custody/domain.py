"""Custody's rules: wallets and their states, movements and their M-of-N approval, and the signing
policy that decides whether a transaction may be signed. Pure: nothing here does I/O.

The signing policy re-derives everything it checks from the transaction's own fields (sender,
`to`, value, call data, nonce, fees, chain id), never from what the caller says the transaction
means, and compares it with the authorisation: an issuer-signed approval (HOT and DEPOSIT_ROOT
wallets) or an APPROVED movement (COLD wallets, and HOT wallets sweeping to cold).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from svc.custody.ethereum import Transfer, TransferKind, Unsigned
from svc.kit import errors

CUSTODY_PRINCIPAL = "custody"
COLD_APPROVALS_MIN = 2
COLD_APPROVALS_MAX = 16


class WalletKind(IntEnum):
    HOT = 1
    COLD = 2
    DEPOSIT_ROOT = 3


class ChainFamily(IntEnum):
    EVM = 1


class WalletState(IntEnum):
    ACTIVE = 1
    DISABLED = 2


WALLET_TRANSITIONS = {(WalletState.ACTIVE, WalletState.DISABLED), (WalletState.DISABLED, WalletState.ACTIVE)}


class Purpose(IntEnum):
    """ApprovalPurpose."""

    WITHDRAWAL = 1
    DEPOSIT_SWEEP = 2
    GAS_TOP_UP = 3


class MovementKind(IntEnum):
    HOT_TO_COLD = 1
    COLD_TO_HOT = 2
    COLD_TO_COLD = 3


class MovementState(IntEnum):
    PENDING_APPROVAL = 1
    APPROVED = 2
    SIGNING = 3
    BROADCAST = 4
    CONFIRMED = 5
    REJECTED = 6
    CANCELLED = 7
    EXPIRED = 8
    FAILED = 9


MOVEMENT_TRANSITIONS = {
    (MovementState.PENDING_APPROVAL, MovementState.APPROVED),
    (MovementState.PENDING_APPROVAL, MovementState.REJECTED),
    (MovementState.PENDING_APPROVAL, MovementState.CANCELLED),
    (MovementState.PENDING_APPROVAL, MovementState.EXPIRED),
    (MovementState.APPROVED, MovementState.SIGNING),
    (MovementState.APPROVED, MovementState.CANCELLED),
    (MovementState.APPROVED, MovementState.FAILED),
    (MovementState.SIGNING, MovementState.BROADCAST),
    (MovementState.SIGNING, MovementState.FAILED),
    (MovementState.BROADCAST, MovementState.CONFIRMED),
    (MovementState.BROADCAST, MovementState.FAILED),
}


class Decision(IntEnum):
    APPROVE = 1
    REJECT = 2


class Outcome(IntEnum):
    """SignatureOutcome."""

    GRANTED = 1
    REFUSED = 2
    BACKEND_ERROR = 3


class Refusal(IntEnum):
    """RefusalReason."""

    NO_AUTHORIZATION = 1
    APPROVAL_SIGNATURE_INVALID = 2
    APPROVAL_ISSUER_UNKNOWN = 3
    APPROVAL_EXPIRED = 4
    APPROVAL_MISMATCH = 5
    APPROVAL_REUSED = 6
    FEE_ABOVE_CAP = 7
    QUORUM_NOT_MET = 8
    WALLET_DISABLED = 9
    KIND_NOT_ALLOWED = 10
    DESTINATION_NOT_ALLOWED = 11
    MALFORMED_TRANSACTION = 12


class Refused(Exception):
    """The signing policy says no; recorded in the signature log, then PERMISSION_DENIED."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def signing_refused(reason: Refusal, message: str, record_id: str) -> errors.PermissionDenied:
    """The caller's error for a refusal: PERMISSION_DENIED with the reason and the audit record."""
    return errors.PermissionDenied(
        message, metadata={"refusal_reason": f"REFUSAL_REASON_{reason.name}", "record_id": record_id}
    )


@dataclass(frozen=True)
class Wallet:
    wallet_id: str
    name: str
    kind: WalletKind
    chain_family: ChainFamily
    chains: tuple[str, ...]
    address: str
    key_id: str
    backend: int
    public_key: bytes
    backend_reference: str
    sealed: bytes
    xpub: str
    state: WalletState
    required_approvals: int
    disable_reason: str
    disabled_by: str
    version: int
    create_time_us: int
    update_time_us: int


@dataclass(frozen=True)
class Approval:
    """One approver's decision on a movement."""

    approver_id: str
    decision: Decision
    comment: str
    decide_time_us: int


@dataclass(frozen=True)
class Movement:
    movement_id: str
    kind: MovementKind
    source_wallet_id: str
    destination_wallet_id: str
    chain: str
    from_address: str
    to_address: str
    asset: str
    amount: int
    state: MovementState
    required_approvals: int
    requested_by: str
    reason: str
    plan_id: str
    tx_hash: str
    nonce: int | None
    outcome_message: str
    approval_expire_time_us: int
    create_time_us: int
    update_time_us: int
    version: int
    # Paid by the transaction, in the chain's native asset; known once CONFIRMED or FAILED.
    network_fee_asset: str = ""
    network_fee: int | None = None


@dataclass(frozen=True)
class Claims:
    """Verified approval claims, as the policy compares them."""

    approval_id: str
    purpose: Purpose
    issuer: str
    reference: str
    chain: str
    chain_id: int
    from_address: str
    to_address: str
    asset: str
    amount: int
    nonce: int
    max_fee_per_gas: int
    derivation_path: str
    issue_time_us: int
    expire_time_us: int


def transition_wallet(wallet: Wallet, target: WalletState) -> None:
    if (wallet.state, target) not in WALLET_TRANSITIONS:
        raise errors.InvalidState(
            f"wallet is {wallet.state.name}, cannot become {target.name}",
            metadata={"wallet_id": wallet.wallet_id, "state": wallet.state.name},
        )


def transition_movement(movement: Movement, target: MovementState) -> None:
    if (movement.state, target) not in MOVEMENT_TRANSITIONS:
        raise errors.InvalidState(
            f"movement is {movement.state.name}, cannot become {target.name}",
            metadata={"movement_id": movement.movement_id, "state": movement.state.name},
        )


def check_required_approvals(kind: WalletKind, required: int) -> None:
    """COLD: 2 to 16 distinct approvers; HOT and DEPOSIT_ROOT: none."""
    if kind is WalletKind.COLD and not COLD_APPROVALS_MIN <= required <= COLD_APPROVALS_MAX:
        raise errors.InvalidArgument(
            [
                errors.FieldViolation(
                    "required_approvals", f"a COLD wallet needs {COLD_APPROVALS_MIN} to {COLD_APPROVALS_MAX}"
                )
            ]
        )
    if kind is not WalletKind.COLD and required != 0:
        raise errors.InvalidArgument(
            [errors.FieldViolation("required_approvals", f"must be 0 for a {kind.name} wallet")]
        )


def movement_kind(source: Wallet, destination: Wallet) -> MovementKind:
    """The direction of a movement between two custody wallets; INVALID_ARGUMENT for any other pair."""
    pairs = {
        (WalletKind.HOT, WalletKind.COLD): MovementKind.HOT_TO_COLD,
        (WalletKind.COLD, WalletKind.HOT): MovementKind.COLD_TO_HOT,
        (WalletKind.COLD, WalletKind.COLD): MovementKind.COLD_TO_COLD,
    }
    kind = pairs.get((source.kind, destination.kind))
    if kind is None or source.wallet_id == destination.wallet_id:
        raise errors.InvalidArgument(
            [
                errors.FieldViolation(
                    "destination_wallet_id",
                    f"no movement from a {source.kind.name} wallet to a {destination.kind.name} wallet",
                )
            ]
        )
    return kind


def approvals_granted(approvals: list[Approval]) -> int:
    """Distinct approvers who approved (the store's key makes an approver appear once)."""
    approvers = [approval.approver_id for approval in approvals if approval.decision is Decision.APPROVE]
    assert len(approvers) == len(set(approvers)), approvers
    return len(approvers)


class AlreadyDecided(errors.DomainError):
    """FAILED_PRECONDITION with reason ALREADY_EXISTS: one decision per approver and movement."""

    reason = "ALREADY_EXISTS"


def decide(movement: Movement, approvals: list[Approval], approver: str, now_us: int) -> None:
    """Checks that `approver` may decide on the movement now."""
    if movement.state is not MovementState.PENDING_APPROVAL:
        raise errors.InvalidState(
            f"movement is {movement.state.name}, not waiting for approvals",
            metadata={"movement_id": movement.movement_id, "state": movement.state.name},
        )
    if approver == movement.requested_by:
        raise errors.PermissionDenied(
            "the requester of a movement may not decide on it", metadata={"movement_id": movement.movement_id}
        )
    if any(approval.approver_id == approver for approval in approvals):
        # The contract's precise answer for a second decision by the same person.
        raise AlreadyDecided(
            "this approver has already decided on the movement",
            metadata={"movement_id": movement.movement_id, "approver_id": approver},
        )
    assert now_us < movement.approval_expire_time_us, (now_us, movement.approval_expire_time_us)


def check_wallet_may_sign(wallet: Wallet, transaction: Unsigned, sender: str, chain: str) -> None:
    """Refusals that do not depend on the authorisation: state, chain, sender."""
    if wallet.state is not WalletState.ACTIVE:
        raise Refused(Refusal.WALLET_DISABLED, f"wallet {wallet.name} is disabled: {wallet.disable_reason}")
    if chain not in wallet.chains:
        raise Refused(Refusal.MALFORMED_TRANSACTION, f"wallet {wallet.name} does not serve chain {chain}")
    if transaction.sender.lower() != sender.lower():
        raise Refused(Refusal.MALFORMED_TRANSACTION, f"the transaction's sender is not {sender}")


def check_approval(
    wallet: Wallet,
    claims: Claims,
    transaction: Unsigned,
    transfer: Transfer,
    *,
    chain: str,
    asset: str,
    derivation_path: str,
    now_us: int,
) -> None:
    """An approval-authorised transaction: purpose fits the wallet, transaction equals the claims."""
    allowed = {
        WalletKind.HOT: {Purpose.WITHDRAWAL, Purpose.GAS_TOP_UP},
        WalletKind.DEPOSIT_ROOT: {Purpose.DEPOSIT_SWEEP},
    }.get(wallet.kind, set())
    if claims.purpose not in allowed:
        raise Refused(
            Refusal.KIND_NOT_ALLOWED,
            f"a {claims.purpose.name} approval cannot sign for a {wallet.kind.name} wallet",
        )
    if now_us >= claims.expire_time_us:
        raise Refused(Refusal.APPROVAL_EXPIRED, "the approval has expired")
    if claims.purpose is Purpose.DEPOSIT_SWEEP and claims.derivation_path != derivation_path:
        raise Refused(Refusal.APPROVAL_MISMATCH, "the approval is for another deposit address")
    mismatched = [
        name
        for name, matches in (
            ("chain", claims.chain == chain),
            ("chain_id", claims.chain_id == transaction.chain_id),
            ("from_address", claims.from_address.lower() == transaction.sender.lower()),
            ("nonce", claims.nonce == transaction.nonce),
        )
        if not matches
    ]
    if transfer.kind is not TransferKind.CANCEL:
        mismatched += [
            name
            for name, matches in (
                ("to_address", claims.to_address.lower() == transfer.recipient.lower()),
                ("asset", claims.asset == asset),
                ("amount", claims.amount == transfer.amount),
            )
            if not matches
        ]
    if mismatched:
        raise Refused(
            Refusal.APPROVAL_MISMATCH, "the transaction differs from the approval in " + ", ".join(mismatched)
        )
    if transaction.fee_per_gas_max > claims.max_fee_per_gas:
        raise Refused(
            Refusal.FEE_ABOVE_CAP,
            f"fee per gas {transaction.fee_per_gas_max} is above the approval's cap {claims.max_fee_per_gas}",
        )


def check_movement(
    wallet: Wallet,
    movement: Movement,
    approvals: list[Approval],
    transaction: Unsigned,
    transfer: Transfer,
    *,
    chain: str,
    asset: str,
) -> None:
    """A movement-authorised transaction: APPROVED by the quorum, transaction equals the movement."""
    if wallet.kind is WalletKind.DEPOSIT_ROOT or (
        wallet.kind is WalletKind.HOT and movement.kind is not MovementKind.HOT_TO_COLD
    ):
        raise Refused(Refusal.KIND_NOT_ALLOWED, f"a movement cannot sign for this {wallet.kind.name} wallet")
    if movement.source_wallet_id != wallet.wallet_id:
        raise Refused(Refusal.APPROVAL_MISMATCH, "the movement leaves another wallet")
    if movement.state not in (MovementState.APPROVED, MovementState.SIGNING):
        raise Refused(Refusal.QUORUM_NOT_MET, f"the movement is {movement.state.name}, not APPROVED")
    granted = approvals_granted(approvals)
    if granted < movement.required_approvals:
        raise Refused(
            Refusal.QUORUM_NOT_MET, f"{granted} of {movement.required_approvals} distinct approvals"
        )
    mismatched = [
        name
        for name, matches in (
            ("chain", movement.chain == chain),
            ("nonce", movement.nonce is None or movement.nonce == transaction.nonce),
        )
        if not matches
    ]
    if transfer.kind is not TransferKind.CANCEL:
        mismatched += [
            name
            for name, matches in (
                ("to_address", movement.to_address.lower() == transfer.recipient.lower()),
                ("asset", movement.asset == asset),
                ("amount", movement.amount == transfer.amount),
            )
            if not matches
        ]
    elif movement.nonce is None:
        mismatched.append("nonce (a cancel replaces a signed transaction only)")
    if mismatched:
        raise Refused(
            Refusal.APPROVAL_MISMATCH, "the transaction differs from the movement in " + ", ".join(mismatched)
        )


class RebalanceKind(IntEnum):
    SWEEP_TO_COLD = 1
    TOP_UP_FROM_COLD = 2


class PlanState(IntEnum):
    PROPOSED = 1
    ACCEPTED = 2
    DISMISSED = 3
    SUPERSEDED = 4


PLAN_TRANSITIONS = {
    (PlanState.PROPOSED, PlanState.ACCEPTED),
    (PlanState.PROPOSED, PlanState.DISMISSED),
    (PlanState.PROPOSED, PlanState.SUPERSEDED),
}
POLICY_FIELDS = ("hot_wallet_id", "cold_wallet_id", "floor", "target", "ceiling", "auto_sweep", "enabled")


@dataclass(frozen=True)
class Policy:
    """The band of one asset's hot-wallet balance."""

    policy_id: str
    asset: str
    hot_wallet_id: str
    cold_wallet_id: str
    floor: int
    target: int
    ceiling: int
    auto_sweep: bool
    enabled: bool
    update_user_id: str
    create_time_us: int
    update_time_us: int
    version: int


@dataclass(frozen=True)
class Plan:
    """A sweep or top-up proposed because the hot balance left its band."""

    plan_id: str
    policy_id: str
    kind: RebalanceKind
    asset: str
    hot_balance: int
    block_number: int
    amount: int
    state: PlanState
    movement_id: str
    decided_by: str
    note: str
    create_time_us: int
    decide_time_us: int | None


def check_band(floor: int, target: int, ceiling: int) -> None:
    """floor <= target <= ceiling, and a ceiling above zero."""
    if not 0 <= floor <= target <= ceiling or ceiling == 0:
        raise errors.InvalidArgument(
            [
                errors.FieldViolation(
                    "policy.target", f"need floor <= target <= ceiling, got {floor}, {target}, {ceiling}"
                )
            ]
        )


def check_policy_wallets(policy: Policy, hot: Wallet, cold: Wallet, chain: str) -> None:
    """The hot wallet is HOT, the cold one COLD, and both serve the asset's chain."""
    for wallet, kind, name in (
        (hot, WalletKind.HOT, "hot_wallet_id"),
        (cold, WalletKind.COLD, "cold_wallet_id"),
    ):
        if wallet.kind is not kind or chain not in wallet.chains:
            raise errors.InvalidArgument(
                [errors.FieldViolation(f"policy.{name}", f"must be a {kind.name} wallet serving {chain}")]
            )


def rebalance_for(policy: Policy, balance: int) -> tuple[RebalanceKind, int] | None:
    """The move that brings `balance` back to the target, if it left the band."""
    if balance > policy.ceiling:
        return RebalanceKind.SWEEP_TO_COLD, balance - policy.target
    if balance < policy.floor:
        return RebalanceKind.TOP_UP_FROM_COLD, policy.target - balance
    return None


def transition_plan(plan: Plan, target: PlanState) -> None:
    if (plan.state, target) not in PLAN_TRANSITIONS:
        raise errors.InvalidState(
            f"plan is {plan.state.name}, cannot become {target.name}",
            metadata={"plan_id": plan.plan_id, "state": plan.state.name},
        )
