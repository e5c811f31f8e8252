"""Faults on the running custodial-wallet profile (the processes of tests/e2e/conftest.py), each
driven through the REST edge and the chains, each ending with books that agree with the chain:
Kafka stopped and started during a burst of deposits, a reorganisation removing a deposit before
and after it was credited, the chain gateway killed (the launcher restarts it) while a withdrawal
is in flight, and one withdrawal request sent ten times at once.

The withdraw service killed between signing and broadcast is proven on the service itself, where
the test holds the step between the two (tests/withdraw/test_withdrawals.py).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import RPCEndpoint

from tests.e2e.conftest import CHAIN_A, DEPTH, E2E, ETH_FEE, ETHER, Chain
from tests.e2e.flows import (
    WAIT_S,
    balances,
    confirmed_on_chain,
    deposits_of,
    on_chain,
    send_ether,
    set_balance,
    withdrawal_of,
)
from tests.harness.servers import KafkaBroker
from tools.demo.edge import Person, rid, wait_for
from tools.demo.platform import ledger_holdings

pytestmark = pytest.mark.timeout(900)

BURST = 8
BURST_UNIT = ETHER // 100
REORGED_DEPOSIT = ETHER // 10
FLOAT_ETH = 2 * ETHER
WITHDRAWAL = ETHER // 20


@dataclass
class Faults:
    """Carol, who lives through the faults, and what the books must show at the end."""

    carol: Person
    chain: Chain
    deposit_address: str
    destination_id: str
    destination: str
    outsider: LocalAccount
    hot: str
    hot_on_chain_before: int
    hot_booked_before: int
    credited: int = 0
    debited: int = 0
    withdrawn_on_chain: int = 0
    withdrawals: list[str] = field(default_factory=list)


def _rpc(chain: Chain, method: str, params: list[Any] | None = None) -> Any:
    answer = chain.web3.provider.make_request(RPCEndpoint(method), params or [])
    assert "error" not in answer, answer
    return answer["result"]


def _available(person: Person) -> int:
    return int(balances(person, CHAIN_A).get(f"{CHAIN_A}:ETH", {}).get("available", "0"))


def _deposit(person: Person, tx_hash: str) -> dict[str, Any] | None:
    rows = [row for row in deposits_of(person, CHAIN_A) if row["txHash"].lower() == tx_hash.lower()]
    assert len(rows) <= 1, rows  # one deposit per (chain, tx hash, log index)
    return rows[0] if rows else None


def _in_state(person: Person, tx_hash: str, *states: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        row = _deposit(person, tx_hash)
        return row if row is not None and row["state"] in states else None

    return check


@pytest.fixture(scope="module")
def faults(e2e: E2E) -> Faults:
    chain = e2e.chains[CHAIN_A]
    carol = Person(e2e.platform.edge, f"carol-{rid('c')[-8:]}@example.com", registration_id=rid("register"))
    carol.register("Carol")
    carol.login()
    carol.enable_totp()
    carol.login()
    wallet = carol.post("/v1/users/me/wallets", {"requestId": rid("wallet"), "chain": CHAIN_A})["wallet"]
    destination = Account.create().address
    whitelisted = carol.post(
        "/v1/withdrawal_addresses",
        {
            "requestId": rid("address"),
            "address": {"chain": CHAIN_A, "address": destination},
            "label": "faults",
            "stepUpToken": carol.step_up("STEP_UP_PURPOSE_WITHDRAWAL_ADDRESS_ADD"),
        },
    )["address"]
    outsider: LocalAccount = Account.create()
    set_balance(chain, outsider.address, 10 * ETHER)
    hot = e2e.platform.custody.hot_wallet_address.lower()
    admin = e2e.platform.staff.admin
    admin.login()
    state = Faults(
        carol,
        chain,
        wallet["depositAddress"]["address"].lower(),
        whitelisted["addressId"],
        destination.lower(),
        outsider,
        hot,
        on_chain(e2e, chain.native, hot),
        ledger_holdings(admin, f"assets:custody:hot:{chain.native}"),
    )
    # The float the withdrawals below pay from, from outside (kept apart in the final check).
    send_ether(chain, outsider, hot, FLOAT_ETH)
    return state


def test_kafka_stopped_and_started_during_a_burst_of_deposits(
    e2e: E2E, faults: Faults, kafka_broker: KafkaBroker
) -> None:
    carol, chain = faults.carol, faults.chain
    amounts = [BURST_UNIT * (index + 1) for index in range(BURST)]
    sent: list[str] = []
    try:
        for index, amount in enumerate(amounts):
            if index == BURST // 2:
                kafka_broker.stop()
            sent.append(send_ether(chain, faults.outsider, faults.deposit_address, amount))
        chain.mine(DEPTH)
    finally:
        kafka_broker.start()

    def all_credited() -> bool:
        return all(_in_state(carol, tx, "DEPOSIT_STATE_CREDITED")() for tx in sent)

    wait_for("every deposit of the burst credited", all_credited, timeout_s=3 * WAIT_S)
    faults.credited += sum(amounts)
    wait_for(
        "carol's balance to show the burst", lambda: _available(carol) == faults.credited, timeout_s=WAIT_S
    )
    rows = [row for row in deposits_of(carol, CHAIN_A) if row["txHash"].lower() in {t.lower() for t in sent}]
    assert sorted(int(row["amount"]["amount"]) for row in rows) == amounts  # each once, none twice


def test_a_deposit_reorganised_out_before_credit_is_never_credited(faults: Faults) -> None:
    carol, chain = faults.carol, faults.chain
    snapshot = _rpc(chain, "evm_snapshot")
    tx = send_ether(chain, faults.outsider, faults.deposit_address, REORGED_DEPOSIT)
    wait_for(
        "the deposit seen, not yet credited",
        _in_state(carol, tx, "DEPOSIT_STATE_PENDING", "DEPOSIT_STATE_CONFIRMING"),
        timeout_s=WAIT_S,
    )
    assert _rpc(chain, "evm_revert", [snapshot]) is True
    chain.mine(DEPTH + 2)  # a longer branch without the deposit's block
    wait_for("the deposit reorganised out", _in_state(carol, tx, "DEPOSIT_STATE_REORGED"), timeout_s=WAIT_S)
    assert _available(carol) == faults.credited


def test_a_deposit_reorganised_out_after_credit_is_frozen_then_reversed_by_an_approver(
    e2e: E2E, faults: Faults
) -> None:
    carol, chain = faults.carol, faults.chain
    snapshot = _rpc(chain, "evm_snapshot")
    tx = send_ether(chain, faults.outsider, faults.deposit_address, REORGED_DEPOSIT)
    chain.mine(DEPTH)
    wait_for("the deposit credited", _in_state(carol, tx, "DEPOSIT_STATE_CREDITED"), timeout_s=WAIT_S)
    wait_for(
        "carol's balance with it",
        lambda: _available(carol) == faults.credited + REORGED_DEPOSIT,
        timeout_s=WAIT_S,
    )
    assert _rpc(chain, "evm_revert", [snapshot]) is True
    chain.mine(DEPTH + 2)
    frozen = wait_for(
        "the credited deposit frozen", _in_state(carol, tx, "DEPOSIT_STATE_FROZEN"), timeout_s=WAIT_S
    )
    # Frozen, not spendable: the credit stays booked until an approver decides.
    assert _available(carol) <= faults.credited
    approver = e2e.platform.staff.approvers[0]
    approver.login()
    resolved = approver.post(
        f"/v1/admin/deposits/{frozen['depositId']}:resolve",
        {
            "requestId": rid("resolve"),
            "resolution": "FROZEN_RESOLUTION_REVERSE",
            "note": "the block holding it left the canonical chain",
            # The maker-checker record of the decision (the admin service is not in this profile).
            "approvalId": rid("reorg-review"),
        },
    )["deposit"]
    assert resolved["state"] == "DEPOSIT_STATE_REVERSED"
    wait_for("carol's balance without it", lambda: _available(carol) == faults.credited, timeout_s=WAIT_S)


def test_the_chain_gateway_killed_while_a_withdrawal_is_in_flight(e2e: E2E, faults: Faults) -> None:
    carol, chain, mesh = faults.carol, faults.chain, e2e.platform.mesh
    sent_before = chain.web3.eth.get_transaction_count(Web3.to_checksum_address(faults.hot))
    created = carol.post(
        "/v1/withdrawals",
        {
            "requestId": rid("withdrawal"),
            "amount": {"asset": chain.native, "amount": str(WITHDRAWAL)},
            "destinationAddressId": faults.destination_id,
            "stepUpToken": carol.step_up("STEP_UP_PURPOSE_WITHDRAWAL"),
        },
    )["withdrawal"]
    first = mesh.pid_of("chain-gateway")
    os.kill(first, signal.SIGKILL)  # before custody signs or the transaction is built
    wait_for(
        "the launcher to restart the chain gateway",
        lambda: mesh.pid_of("chain-gateway") != first,
        timeout_s=30,
    )

    def broadcast() -> dict[str, Any] | None:
        current = withdrawal_of(carol, created["withdrawalId"])
        return current if current["state"] == "WITHDRAWAL_STATE_BROADCAST" else None

    wait_for("the withdrawal broadcast after the restart", broadcast, timeout_s=WAIT_S)
    second = mesh.pid_of("chain-gateway")
    os.kill(second, signal.SIGKILL)  # broadcast, not yet confirmed: the tracker must resume
    wait_for("the second restart", lambda: mesh.pid_of("chain-gateway") != second, timeout_s=30)
    done = confirmed_on_chain(e2e, carol, created["withdrawalId"], chain)
    assert chain.web3.eth.get_transaction_count(Web3.to_checksum_address(faults.hot)) == sent_before + 1
    assert chain.web3.eth.get_balance(Web3.to_checksum_address(faults.destination)) == WITHDRAWAL
    faults.debited += WITHDRAWAL + ETH_FEE
    faults.withdrawn_on_chain += WITHDRAWAL
    faults.withdrawals.append(done["withdrawalId"])


def test_the_same_withdrawal_request_ten_times_at_once_is_sent_once(e2e: E2E, faults: Faults) -> None:
    carol, chain = faults.carol, faults.chain
    sent_before = chain.web3.eth.get_transaction_count(Web3.to_checksum_address(faults.hot))
    body = {
        "requestId": rid("withdrawal"),
        "amount": {"asset": chain.native, "amount": str(WITHDRAWAL)},
        "destinationAddressId": faults.destination_id,
        "stepUpToken": carol.step_up("STEP_UP_PURPOSE_WITHDRAWAL"),
    }
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: carol.post("/v1/withdrawals", body)["withdrawal"], range(10)))
    assert len({answer["withdrawalId"] for answer in answers}) == 1
    withdrawal_id = answers[0]["withdrawalId"]
    confirmed_on_chain(e2e, carol, withdrawal_id, chain)
    assert carol.post("/v1/withdrawals", body)["withdrawal"]["withdrawalId"] == withdrawal_id
    assert chain.web3.eth.get_transaction_count(Web3.to_checksum_address(faults.hot)) == sent_before + 1
    assert chain.web3.eth.get_balance(Web3.to_checksum_address(faults.destination)) == 2 * WITHDRAWAL
    faults.debited += WITHDRAWAL + ETH_FEE
    faults.withdrawn_on_chain += WITHDRAWAL
    faults.withdrawals.append(withdrawal_id)


def test_after_the_faults_the_books_agree_with_the_chain(e2e: E2E, faults: Faults) -> None:
    carol, chain = faults.carol, faults.chain
    admin = e2e.platform.staff.admin
    admin.login()
    expected = faults.credited - faults.debited
    assert _available(carol) == expected
    accounts = carol.get(f"/v1/users/{carol.user_id}/accounts").get("accounts", [])
    [ledger_id] = [row["ledgerAccountId"] for row in accounts if row["asset"] == chain.native]
    balance = admin.get(f"/v1/admin/ledger/accounts/{ledger_id}/balance")["balance"]
    assert int(balance.get("creditsPosted", "0")) - int(balance.get("debitsPosted", "0")) == expected
    # The deposit address holds what its custody account says: the burst, not the reorged ones.
    booked = ledger_holdings(admin, f"assets:custody:deposit:{faults.deposit_address}:{chain.native}")
    assert booked == on_chain(e2e, chain.native, faults.deposit_address) == faults.credited
    # The hot wallet moved on chain by exactly what the ledger booked for it, float apart.
    fees = sum(
        int(admin.get(f"/v1/admin/withdrawals/{w}")["withdrawal"]["networkFee"]["amount"])
        for w in faults.withdrawals
    )
    hot_booked = ledger_holdings(admin, f"assets:custody:hot:{chain.native}") - faults.hot_booked_before
    hot_moved = on_chain(e2e, chain.native, faults.hot) - faults.hot_on_chain_before - FLOAT_ETH
    assert hot_booked == hot_moved == -(faults.withdrawn_on_chain + fees)
