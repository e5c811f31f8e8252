"""The account service's rules: user accounts over ledger accounts, freezes and their state machines,
and how an account's balances follow from the ledger's.

Each user account is backed by two ledger liability accounts: the user's own account U (code
`liabilities:users:<user>[:<kind>]:<asset>`, DEBITS_MUST_NOT_EXCEED_CREDITS) and its frozen-holds
account F (`liabilities:frozen:<user>[:<kind>]:<asset>`). An AMOUNT freeze is a PENDING ledger entry
without timeout debiting U and crediting F, so at every ledger sequence F's pending credits are
exactly the frozen amount and U's pending debits are holds plus that amount: a balance read of U
and F at one sequence gives every figure of the contract without any state of our own.
Pure: nothing here does I/O.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from enum import IntEnum

from svc.kit import errors
from svc.kit.amount import AMOUNT_MAX

LEDGER_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Freeze ids are derived from the request_id, so that a retry after a failure between the
# ledger's commit and ours reuses the same ledger entry ids instead of holding twice.
FREEZE_ID_NAMESPACE = uuid.UUID("6f1c2a8e-4b7d-5e0a-9c3f-1d2e3f405162")
FREEZE_ENTRY_PREFIX = "account.freeze."
HOLD_CATEGORY = "freeze.hold"
HOLD_ENTRY_ID = re.compile(
    r"^" + re.escape(FREEZE_ENTRY_PREFIX) + r"([0-9a-f-]{36})\.hold\.(0|[1-9][0-9]{0,8})$"
)
CAPTURE_CATEGORY = "freeze.capture"
RECLAIM_CATEGORY = "freeze.reclaim"
ENTRY_DESCRIPTION_CHARS_MAX = 256


class Kind(IntEnum):
    """Purpose of an account (finmesh.account.v1.AccountKind)."""

    MAIN = 1
    COLLATERAL = 2
    STAKING = 3


# The code segment between the user id and the asset (none for MAIN).
KIND_SEGMENT = {Kind.MAIN: "", Kind.COLLATERAL: "collateral", Kind.STAKING: "staking"}


class Status(IntEnum):
    """Status of an account (finmesh.account.v1.AccountStatus)."""

    ACTIVE = 1
    FROZEN = 2
    CLOSED = 3


class Scope(IntEnum):
    """What a freeze covers."""

    AMOUNT = 1
    ACCOUNT = 2


class FreezeState(IntEnum):
    """State of a freeze: ACTIVE -> RELEASED | CAPTURED (AMOUNT scope only)."""

    ACTIVE = 1
    RELEASED = 2
    CAPTURED = 3


FREEZE_TRANSITIONS = {
    (FreezeState.ACTIVE, FreezeState.RELEASED),
    (FreezeState.ACTIVE, FreezeState.CAPTURED),
}


class AssetDisabled(errors.DomainError):
    """The asset is not enabled in the platform's asset configuration."""

    reason = "FEATURE_DISABLED"


@dataclass(frozen=True)
class Account:
    """A user account and the two ledger accounts behind it."""

    account_id: str
    user_id: str
    asset: str
    kind: Kind
    status: Status
    ledger_account_id: str
    ledger_account_code: str
    frozen_account_id: str
    frozen_account_code: str
    # ACTIVE freezes of each scope: the account is FROZEN while account_freezes > 0.
    amount_freezes: int = 0
    account_freezes: int = 0
    version: int = 1
    create_time_us: int = 0
    update_time_us: int = 0
    close_time_us: int | None = None

    @property
    def active_freezes(self) -> int:
        """Number of ACTIVE freezes of either scope."""
        return self.amount_freezes + self.account_freezes


@dataclass(frozen=True)
class Freeze:
    """A freeze on an account. AMOUNT freezes hold `amount` through the ledger entry `hold_entry_id`."""

    freeze_id: str
    account_id: str
    user_id: str
    asset: str
    scope: Scope
    amount: int
    original_amount: int
    reason: int
    reason_detail: str
    case_reference: str
    state: FreezeState
    hold_entry_id: str
    # Partial releases replace the hold; this numbers the current one.
    hold_version: int
    placed_by: str
    action_request_id: str
    create_time_us: int
    expire_time_us: int | None = None
    end_time_us: int | None = None
    ended_by: str = ""
    end_note: str = ""
    capture_entry_id: str = ""
    version: int = 1

    def __post_init__(self) -> None:
        if self.scope is Scope.AMOUNT:
            assert 0 <= self.amount <= self.original_amount <= AMOUNT_MAX, self
            assert (self.amount > 0) == (self.state is FreezeState.ACTIVE), self
        else:
            assert self.amount == 0 and self.original_amount == 0 and not self.hold_entry_id, self


def transition(freeze: Freeze, target: FreezeState) -> FreezeState:
    """The one place that allows a freeze's state change; anything else is INVALID_STATE."""
    if (freeze.state, target) not in FREEZE_TRANSITIONS:
        raise errors.InvalidState(f"freeze is {freeze.state.name}", metadata={"freeze_id": freeze.freeze_id})
    if target is FreezeState.CAPTURED and freeze.scope is not Scope.AMOUNT:
        raise errors.InvalidState(
            "only AMOUNT freezes are captured", metadata={"freeze_id": freeze.freeze_id}
        )
    return target


def status_after_freezes(account: Account, account_freezes: int) -> Status:
    """ACTIVE <-> FROZEN follows the count of ACTIVE ACCOUNT-scope freezes; CLOSED is terminal."""
    assert account.status is not Status.CLOSED, account
    assert account_freezes >= 0, account_freezes
    return Status.FROZEN if account_freezes else Status.ACTIVE


def require_open(account: Account) -> None:
    """Refuses changes to a CLOSED account."""
    if account.status is Status.CLOSED:
        raise errors.InvalidState("account is closed", metadata={"account_id": account.account_id})


def check_user_id(user_id: str) -> None:
    """A user id becomes a ledger code segment, so it must be one."""
    if not LEDGER_SEGMENT.match(user_id):
        raise errors.InvalidArgument(
            [errors.FieldViolation("user_id", "letters, digits, '.', '_' and '-' only", "pattern")]
        )


def ledger_codes(user_id: str, asset: str, kind: Kind) -> tuple[str, str]:
    """The codes of the user's ledger account and of its frozen-holds account."""
    middle = f"{user_id}:{KIND_SEGMENT[kind]}" if KIND_SEGMENT[kind] else user_id
    return f"liabilities:users:{middle}:{asset}", f"liabilities:frozen:{middle}:{asset}"


def freeze_id_for(request_id: str) -> str:
    """The freeze id of a CreateFreeze request (stable across retries of one request)."""
    return str(uuid.uuid5(FREEZE_ID_NAMESPACE, request_id))


def hold_entry_id(freeze_id: str, version: int) -> str:
    """Ledger id of the PENDING entry holding a freeze's amount (one per partial release)."""
    return f"{FREEZE_ENTRY_PREFIX}{freeze_id}.hold.{version}"


def release_entry_id(freeze_id: str, version: int) -> str:
    """Ledger id of the VOID_PENDING entry releasing hold `version`."""
    return f"{FREEZE_ENTRY_PREFIX}{freeze_id}.release.{version}"


def capture_entry_ids(freeze_id: str) -> tuple[str, str]:
    """Ledger ids of a capture: posting the hold into F, and moving it from F to the destination."""
    return f"{FREEZE_ENTRY_PREFIX}{freeze_id}.capture", f"{FREEZE_ENTRY_PREFIX}{freeze_id}.transfer"


def reclaim_entry_id(freeze_id: str, version: int) -> str:
    """Ledger id of the VOID_PENDING entry by which the orphan sweep reclaims hold `version`."""
    return f"{FREEZE_ENTRY_PREFIX}{freeze_id}.reclaim.{version}"


def parse_hold_entry_id(entry_id: str) -> tuple[str, int] | None:
    """(freeze id, version) of one of our hold entry ids; None for any other id."""
    found = HOLD_ENTRY_ID.match(entry_id)
    if found is None:
        return None
    return found.group(1), int(found.group(2))


def is_freeze_entry(entry_id: str) -> bool:
    """Whether a ledger entry was written by the account service for a freeze."""
    return entry_id.startswith(FREEZE_ENTRY_PREFIX)


def release_amount(freeze: Freeze, requested: int | None) -> int:
    """How much a release frees: all of it when no amount is given; never more than is frozen."""
    if freeze.scope is Scope.ACCOUNT:
        if requested is not None:
            raise errors.InvalidArgument(
                [errors.FieldViolation("amount", "not allowed for an ACCOUNT freeze", "scope")]
            )
        return 0
    if requested is None:
        return freeze.amount
    if requested > freeze.amount:
        raise errors.InvalidArgument(
            [errors.FieldViolation("amount", f"more than the frozen {freeze.amount}", "range")]
        )
    return requested


@dataclass(frozen=True)
class Snapshot:
    """U's four ledger columns and F's pending credits, all as of one ledger sequence."""

    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    frozen: int
    sequence: int
    time_us: int

    def __post_init__(self) -> None:
        columns = (self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending)
        assert min(*columns, self.frozen) >= 0, self
        # U never goes below zero counting holds (its ledger constraint), and every freeze hold
        # is one of U's pending debits.
        assert self.debits_posted + self.debits_pending <= self.credits_posted, self
        assert self.frozen <= self.debits_pending, self


@dataclass(frozen=True)
class Balances:
    """An account's balances as the contract reports them; total = available + held + frozen."""

    total: int
    available: int
    held: int
    frozen: int
    pending_incoming: int
    sequence: int
    time_us: int


def balances(status: Status, snapshot: Snapshot) -> Balances:
    """The contract's figures from a ledger snapshot; a FROZEN account has nothing available."""
    total = snapshot.credits_posted - snapshot.debits_posted
    held = snapshot.debits_pending - snapshot.frozen
    frozen = snapshot.frozen
    available = total - held - frozen
    if status is Status.FROZEN:
        available, frozen = 0, total - held
    result = Balances(
        total, available, held, frozen, snapshot.credits_pending, snapshot.sequence, snapshot.time_us
    )
    assert min(total, available, held, frozen) >= 0, result
    assert result.total == result.available + result.held + result.frozen, result
    return result


def closable(snapshot: Snapshot) -> bool:
    """Every column of U nets to zero and nothing is held or on its way in."""
    return (
        snapshot.debits_posted == snapshot.credits_posted
        and snapshot.debits_pending == 0
        and snapshot.credits_pending == 0
    )
