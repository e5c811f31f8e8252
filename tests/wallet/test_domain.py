"""Focused unit tests of the wallet's pure rules: the transfer state machine, masking of the other
user, stable ids, the mapping of the sources' states onto history statuses, and the projection's
entries for a transfer."""

from __future__ import annotations

import pytest
from finmesh.deposit.v1 import deposit_resources_pb2 as deposits
from finmesh.withdraw.v1 import withdraw_resources_pb2 as withdrawals

from svc.kit import errors
from svc.kit.hd import DerivationError, child_path
from svc.wallet import domain, projection
from svc.wallet.domain import InternalTransfer, Kind, Status, TransferState

SENDER = "00000000-0000-4000-8000-00000000000a"
RECIPIENT = "00000000-0000-4000-8000-00000000000b"


def transfer(state: TransferState = TransferState.COMPLETED, **fields: object) -> InternalTransfer:
    values: dict[str, object] = {
        "transfer_id": domain.transfer_id_for(SENDER, "req-1"),
        "request_id": "req-1",
        "chain": "local",
        "from_user_id": SENDER,
        "to_user_id": RECIPIENT,
        "from_display": "a***@example.com",
        "to_display": "b***@example.com",
        "asset": "local:ETH",
        "amount": 5,
        "memo": "hi",
        "state": state,
        "ledger_entry_id": "wallet.transfer.x",
        "reversal_entry_id": "",
        "reversed_by": "",
        "reverse_reason": "",
        "approval_id": "",
        "version": 1,
        "create_time_us": 1_000,
        "reverse_time_us": None,
        "ledger_sequence": 7,
        "reversal_sequence": 0,
    }
    values.update(fields)
    return InternalTransfer(**values)  # type: ignore[arg-type]


def test_a_transfer_is_reversed_once() -> None:
    domain.require_transition(transfer(), TransferState.REVERSED)
    with pytest.raises(errors.InvalidState):
        domain.require_transition(transfer(TransferState.REVERSED), TransferState.REVERSED)
    with pytest.raises(errors.InvalidState):
        domain.require_transition(transfer(), TransferState.COMPLETED)


def test_ids_derive_from_the_sender_and_request() -> None:
    first = domain.transfer_id_for(SENDER, "req-1")
    assert first == domain.transfer_id_for(SENDER, "req-1")
    assert first != domain.transfer_id_for(RECIPIENT, "req-1") != domain.transfer_id_for(SENDER, "req-2")
    assert domain.transfer_entry_id(first) != domain.reversal_entry_id(first)
    assert domain.history_entry_id(Kind.INTERNAL_TRANSFER_OUT, "x") == "internal_transfer_out:x"


@pytest.mark.parametrize(
    ("email", "phone", "shown"),
    [
        ("john@example.com", "", "j***@example.com"),
        ("j@example.com", "+4915112345678", "j***@example.com"),
        ("", "+4915112345678", "+49*******5678"),
        ("", "+1234567", "+12*****"),
        ("", "+12345678901", "+12*****8901"),
        ("", "", ""),
    ],
)
def test_the_other_user_is_masked(email: str, phone: str, shown: str) -> None:
    assert domain.display_of(email, phone) == shown


def test_every_source_state_has_a_status() -> None:
    known_deposits = set(deposits.DepositState.values()) - {deposits.DEPOSIT_STATE_UNSPECIFIED}
    assert set(projection.DEPOSIT_STATUS) == known_deposits
    known_withdrawals = set(withdrawals.WithdrawalState.values()) - {withdrawals.WITHDRAWAL_STATE_UNSPECIFIED}
    assert set(projection.WITHDRAWAL_STATUS) == known_withdrawals
    assert projection.DEPOSIT_STATUS[deposits.DEPOSIT_STATE_CONFIRMING] is Status.PENDING
    assert projection.DEPOSIT_STATUS[deposits.DEPOSIT_STATE_UNKNOWN_TOKEN] is Status.NOT_CREDITED
    assert projection.WITHDRAWAL_STATUS[withdrawals.WITHDRAWAL_STATE_BROADCAST] is Status.PENDING
    assert projection.WITHDRAWAL_STATUS[withdrawals.WITHDRAWAL_STATE_FAILED] is Status.FAILED


def test_an_unknown_token_deposit_keeps_its_raw_amount() -> None:
    entry = projection.deposit_entry(
        deposits.Deposit(
            deposit_id="d",
            user_id=SENDER,
            chain="local",
            state=deposits.DEPOSIT_STATE_UNKNOWN_TOKEN,
            unknown_token=deposits.UnknownToken(contract_address="0x" + "11" * 20, raw_amount="42"),
            version=1,
        )
    )
    assert (
        entry is not None and entry.amount == 42 and entry.asset == "" and entry.status is Status.NOT_CREDITED
    )
    assert projection.deposit_entry(deposits.Deposit(deposit_id="d", user_id=SENDER, version=1)) is None


def test_a_transfer_gives_one_entry_to_each_user() -> None:
    out, into = projection.transfer_entries(transfer())
    assert (out.user_id, out.kind, out.counterparty_display) == (
        SENDER,
        Kind.INTERNAL_TRANSFER_OUT,
        "b***@example.com",
    )
    assert (into.user_id, into.kind, into.counterparty_display) == (
        RECIPIENT,
        Kind.INTERNAL_TRANSFER_IN,
        "a***@example.com",
    )
    assert out.status is into.status is Status.COMPLETED
    reversed_out, _ = projection.transfer_entries(
        transfer(TransferState.REVERSED, version=2, reverse_time_us=2_000, reversal_sequence=9)
    )
    assert reversed_out.status is Status.REVERSED and reversed_out.source_version == 2
    assert reversed_out.update_time_us == 2_000 and reversed_out.create_time_us == 1_000


def test_deposit_paths() -> None:
    assert child_path("m/44'/60'/0'", 7) == "m/44'/60'/0'/0/7"
    with pytest.raises(DerivationError):
        child_path("m/44'/60'/0'", 2**31)
