"""The withdrawal state machine: every transition of the contract allowed, every other refused."""

from __future__ import annotations

import itertools

import pytest
from finmesh.withdraw.v1 import withdraw_resources_pb2 as resources
from hypothesis import given
from hypothesis import strategies as st

from svc.kit import errors
from svc.withdraw.states import CANCELLABLE, TERMINAL, VOIDING, State, allowed, check

S = State
CONTRACT = {
    (S.REQUESTED, S.HELD),
    (S.REQUESTED, S.FAILED),
    (S.HELD, S.RISK_REVIEW),
    (S.HELD, S.CANCELLED),
    (S.HELD, S.REJECTED),
    (S.RISK_REVIEW, S.APPROVED),
    (S.RISK_REVIEW, S.AWAITING_APPROVAL),
    (S.RISK_REVIEW, S.REJECTED),
    (S.RISK_REVIEW, S.CANCELLED),
    (S.AWAITING_APPROVAL, S.APPROVED),
    (S.AWAITING_APPROVAL, S.REJECTED),
    (S.AWAITING_APPROVAL, S.CANCELLED),
    (S.APPROVED, S.SIGNING),
    (S.APPROVED, S.CANCELLED),
    (S.APPROVED, S.REJECTED),
    (S.SIGNING, S.BROADCAST),
    (S.SIGNING, S.FAILED),
    (S.BROADCAST, S.CONFIRMED),
    (S.BROADCAST, S.FAILED),
}


def test_states_are_the_contracts() -> None:
    declared = resources.WithdrawalState.keys()
    names = {name.removeprefix("WITHDRAWAL_STATE_") for name in declared}
    assert names - {"UNSPECIFIED"} == {state.name for state in State}
    for state in State:
        assert resources.WithdrawalState.Value(f"WITHDRAWAL_STATE_{state.name}") == state


def test_exactly_the_contracts_transitions_are_allowed() -> None:
    for source, target in itertools.product(State, State):
        assert allowed(source, target) == ((source, target) in CONTRACT), (source, target)


def test_terminal_cancellable_and_voiding_states() -> None:
    assert {S.CONFIRMED, S.REJECTED, S.CANCELLED, S.FAILED} == TERMINAL
    # Cancelling stops once signing has started.
    assert {S.HELD, S.RISK_REVIEW, S.AWAITING_APPROVAL, S.APPROVED} == CANCELLABLE
    assert {S.REJECTED, S.CANCELLED, S.FAILED} == VOIDING


@pytest.mark.parametrize("source", [S.SIGNING, S.BROADCAST, S.CONFIRMED])
def test_no_cancel_once_signing_started(source: State) -> None:
    with pytest.raises(errors.InvalidState) as refused:
        check(source, S.CANCELLED, "w-1")
    assert refused.value.metadata["state"] == f"WITHDRAWAL_STATE_{source.name}"


@given(st.lists(st.sampled_from(list(State)), min_size=1, max_size=20))
def test_any_allowed_walk_never_leaves_a_terminal_state(walk: list[State]) -> None:
    current = S.REQUESTED
    for target in walk:
        if allowed(current, target):
            assert current not in TERMINAL
            current = target
        else:
            with pytest.raises(errors.InvalidState):
                check(current, target)
