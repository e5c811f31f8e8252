"""The deposit state machine and rules, without I/O: transitions, acceptance, depths, confirmations
and the ids that make a credit happen at most once."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from svc.deposit import domain
from svc.deposit.domain import Config, Deposit, Kind, State
from svc.kit import errors

TX = "0x" + "ab" * 32


def _deposit(state: State, **fields: object) -> Deposit:
    values: dict[str, object] = {
        "deposit_id": str(uuid.uuid4()),
        "user_id": "u1",
        "wallet_id": "w1",
        "chain": "hardhat",
        "tx_hash": TX,
        "log_index": -1,
        "block_number": 10,
        "block_hash": "0x" + "cd" * 32,
        "block_time_us": 1,
        "kind": Kind.NATIVE,
        "from_address": "0x" + "11" * 20,
        "to_address": "0x" + "22" * 20,
        "asset": "hardhat:ETH",
        "amount": 100,
        "token_contract": "",
        "state": state,
        "included": True,
        "chain_confirmed": False,
        "required_confirmations": 3,
        "minimum_amount": 0,
    }
    if state is State.CONFIRMING:
        values["pending_entry_id"] = "deposit.x.pending.0"
    if state in (State.CREDITED, State.FROZEN, State.REVERSED):
        values.update(
            pending_entry_id="deposit.x.pending.0", credit_entry_id="deposit.x.credit", credit_time_us=2
        )
    values.update(fields)
    return Deposit(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("source", list(State))
@pytest.mark.parametrize("target", list(State))
def test_only_the_contract_s_transitions_are_allowed(source: State, target: State) -> None:
    deposit = _deposit(source, asset="" if source is State.UNKNOWN_TOKEN else "hardhat:ETH")
    if (source, target) in domain.TRANSITIONS:
        assert domain.transition(deposit, target) is target
    else:
        with pytest.raises(errors.InvalidState):
            domain.transition(deposit, target)


def test_terminal_states_have_no_way_out() -> None:
    for state in domain.TERMINAL:
        assert not [target for source, target in domain.TRANSITIONS if source is state]
    # A credit is never taken back except by an operator's reversal through FROZEN.
    assert {target for source, target in domain.TRANSITIONS if source is State.CREDITED} == {State.FROZEN}


def test_acceptance() -> None:
    config = Config("hardhat", "ETH", minimum_amount=50)
    assert domain.acceptance("", 10**6, config) is State.UNKNOWN_TOKEN
    assert domain.acceptance("hardhat:ETH", 49, config) is State.BELOW_MINIMUM
    assert domain.acceptance("hardhat:ETH", 50, config) is State.CONFIRMING
    assert domain.acceptance("hardhat:ETH", 0, None) is State.BELOW_MINIMUM
    assert domain.acceptance("hardhat:ETH", 1, None) is State.CONFIRMING


def test_required_confirmations_never_below_the_chain_s() -> None:
    assert domain.required_confirmations(None, 12) == 12
    assert domain.required_confirmations(Config("c", "T", confirmation_depth=0), 12) == 12
    assert domain.required_confirmations(Config("c", "T", confirmation_depth=30), 12) == 30
    with pytest.raises(errors.InvalidArgument):
        domain.check_depth(5, 12)
    domain.check_depth(0, 12)
    domain.check_depth(12, 12)


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_confirmations_count_the_block_itself(block: int, last: int) -> None:
    found = domain.confirmations(block, last, True)
    assert found == (last - block + 1 if last >= block else 0)
    assert domain.confirmations(block, last, False) == 0


@given(
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    st.integers(min_value=-1, max_value=10_000),
    st.integers(min_value=0, max_value=1_000),
)
def test_ids_follow_the_transfer_key_and_fit_the_ledger(digits: str, log_index: int, reorgs: int) -> None:
    tx_hash = "0x" + digits
    deposit_id = domain.deposit_id_for("hardhat", tx_hash, log_index)
    assert deposit_id == domain.deposit_id_for("hardhat", tx_hash.upper().replace("0X", "0x"), log_index)
    assert deposit_id != domain.deposit_id_for("hardhat", tx_hash, log_index + 1)
    assert deposit_id != domain.deposit_id_for("other", tx_hash, log_index)
    ids = {
        domain.credit_entry_id(deposit_id),
        domain.pending_entry_id(deposit_id, reorgs),
        domain.pending_entry_id(deposit_id, reorgs + 1),
        domain.void_entry_id(deposit_id, reorgs),
        domain.remainder_entry_id(deposit_id),
        domain.loss_entry_id(deposit_id, reorgs),
    }
    assert len(ids) == 6
    # The ledger's entry id pattern: [A-Za-z0-9._-]{8,120}.
    assert all(
        8 <= len(entry_id) <= 120 and entry_id.replace("-", "").replace(".", "").isalnum() for entry_id in ids
    )


def test_a_re_included_transfer_is_matched_by_its_payment() -> None:
    deposit = _deposit(State.REORGED, reorg_count=1)
    assert domain.same_transfer(deposit, TX, deposit.to_address, "hardhat:ETH", "", 100)
    assert not domain.same_transfer(deposit, TX, deposit.to_address, "hardhat:ETH", "", 101)
    assert not domain.same_transfer(deposit, TX, "0x" + "33" * 20, "hardhat:ETH", "", 100)
    assert deposit.is_inclusion(deposit.block_hash, -1) and not deposit.is_inclusion("0x00", -1)


def test_a_confirming_deposit_always_holds_a_pending_entry() -> None:
    with pytest.raises(AssertionError):
        _deposit(State.CONFIRMING, pending_entry_id="")
    with pytest.raises(AssertionError):
        _deposit(State.CREDITED, credit_entry_id="")


def _item(state: domain.ItemState) -> domain.SweepItem:
    return domain.SweepItem(
        sweep_id=str(uuid.uuid4()), address="0x" + "33" * 20, position=0, derivation_path="m/44'/60'/0'/0/1",
        amount=10, state=state,
    )  # fmt: skip


def test_sweep_items_move_only_along_the_contract_s_transitions() -> None:
    item = _item(domain.ItemState.PENDING)
    assert domain.transition_item(item, domain.ItemState.FUNDING_GAS) is domain.ItemState.FUNDING_GAS
    for terminal in domain.ITEM_TERMINAL:
        with pytest.raises(errors.InvalidState):
            domain.transition_item(_item(terminal), domain.ItemState.READY)
    with pytest.raises(errors.InvalidState):
        domain.transition_item(item, domain.ItemState.CONFIRMED)  # never confirmed without a broadcast


def test_a_sweep_s_outcome_follows_its_items() -> None:
    confirmed, failed, skipped = (
        _item(domain.ItemState.CONFIRMED), _item(domain.ItemState.FAILED), _item(domain.ItemState.SKIPPED),
    )  # fmt: skip
    assert domain.sweep_outcome([confirmed, skipped]) is domain.SweepState.COMPLETED
    assert domain.sweep_outcome([]) is domain.SweepState.COMPLETED
    assert domain.sweep_outcome([confirmed, failed]) is domain.SweepState.PARTIALLY_COMPLETED
    assert domain.sweep_outcome([failed, skipped]) is domain.SweepState.FAILED


@given(st.integers(0, 10**20), st.integers(1, 10**18))
def test_a_gas_top_up_leaves_the_address_able_to_pay_twice_the_estimate(native: int, fee: int) -> None:
    top_up = domain.gas_top_up(native, fee)
    assert top_up == 0 if native >= fee else native + top_up == 2 * fee


def test_sweep_entry_and_request_ids_fit_the_ledger_and_gateway_limits() -> None:
    sweep_id, address = str(uuid.uuid4()), "0x" + "Ab" * 20
    ids = {
        domain.sweep_entry_id(sweep_id, address, purpose)
        for purpose in ("amount", "top_up", "top_up_fee", "fee")
    }
    assert len(ids) == 4 and all(len(entry_id) <= 120 and ":" not in entry_id for entry_id in ids)
    assert len(domain.sweep_step_id(sweep_id, address, "release.top_up")) <= 128
    assert domain.sweep_approval_id(sweep_id, address, domain.TxPurpose.SWEEP) == domain.sweep_approval_id(
        sweep_id, address.lower(), domain.TxPurpose.SWEEP
    )
    assert domain.native_sweep_value(100_000, 21_000, 2) == 58_000
