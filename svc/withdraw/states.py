"""The withdrawal state machine of the contract (`WithdrawalState`): which transition is allowed.

REQUESTED -> HELD | FAILED; HELD -> RISK_REVIEW | CANCELLED | REJECTED;
RISK_REVIEW -> APPROVED | AWAITING_APPROVAL | REJECTED | CANCELLED;
AWAITING_APPROVAL -> APPROVED | REJECTED | CANCELLED; APPROVED -> SIGNING | CANCELLED | REJECTED;
SIGNING -> BROADCAST | FAILED; BROADCAST -> CONFIRMED | FAILED.
CONFIRMED, REJECTED, CANCELLED and FAILED are terminal. Cancelling stops at APPROVED: once signing
has started a transaction may exist, so only the chain decides the outcome.
"""

from __future__ import annotations

import enum

from svc.kit import errors


class State(enum.IntEnum):
    REQUESTED = 1
    HELD = 2
    RISK_REVIEW = 3
    AWAITING_APPROVAL = 4
    APPROVED = 5
    SIGNING = 6
    BROADCAST = 7
    CONFIRMED = 8
    REJECTED = 9
    CANCELLED = 10
    FAILED = 11


ALLOWED: dict[State, frozenset[State]] = {
    State.REQUESTED: frozenset({State.HELD, State.FAILED}),
    # An operator may stop a withdrawal in HELD (RejectWithdrawal).
    State.HELD: frozenset({State.RISK_REVIEW, State.CANCELLED, State.REJECTED}),
    State.RISK_REVIEW: frozenset({State.APPROVED, State.AWAITING_APPROVAL, State.REJECTED, State.CANCELLED}),
    State.AWAITING_APPROVAL: frozenset({State.APPROVED, State.REJECTED, State.CANCELLED}),
    State.APPROVED: frozenset({State.SIGNING, State.CANCELLED, State.REJECTED}),
    State.SIGNING: frozenset({State.BROADCAST, State.FAILED}),
    State.BROADCAST: frozenset({State.CONFIRMED, State.FAILED}),
    State.CONFIRMED: frozenset(),
    State.REJECTED: frozenset(),
    State.CANCELLED: frozenset(),
    State.FAILED: frozenset(),
}

TERMINAL = frozenset(state for state, targets in ALLOWED.items() if not targets)
CANCELLABLE = frozenset(state for state, targets in ALLOWED.items() if State.CANCELLED in targets)
# States whose hold is released when the withdrawal ends there (CONFIRMED posts it instead).
VOIDING = frozenset({State.REJECTED, State.CANCELLED, State.FAILED})
# States that count against the daily limit: everything requested that has not ended unpaid.
COUNTED = frozenset(State) - VOIDING


def allowed(source: State, target: State) -> bool:
    """Whether `source -> target` is a transition of the contract."""
    return target in ALLOWED[source]


def check(source: State, target: State, withdrawal_id: str = "") -> None:
    """Refuses a transition the contract does not have with FAILED_PRECONDITION (INVALID_STATE)."""
    if not allowed(source, target):
        raise errors.InvalidState(
            f"a {source.name} withdrawal cannot become {target.name}",
            metadata={"withdrawal_id": withdrawal_id, "state": f"WITHDRAWAL_STATE_{source.name}"},
        )
