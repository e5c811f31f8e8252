"""The custodial wallet end to end, through the REST edge only, with every service of the profile
running as its own process with mTLS on the real servers of tests/e2e/conftest.py.

The steps run in order and share one journey: each test is a stage of the same two users' story.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3

from tests.e2e.conftest import (
    CHAIN_A,
    CHAIN_B,
    DEPTH,
    E2E,
    ETH_FEE,
    ETHER,
    TOKEN_DECIMALS,
    TOKEN_FEE,
)
from tests.e2e.flows import (
    WAIT_S,
    balances,
    confirmed_on_chain,
    deposits_of,
    on_chain,
    send_ether,
    send_token,
    withdrawal_of,
)
from tests.harness.hardhat import HARDHAT_ACCOUNT_KEYS
from tools.demo.edge import EdgeError, Person, rid, wait_for
from tools.demo.platform import ledger_holdings

pytestmark = pytest.mark.timeout(1800)

DEPOSIT_ETH_A = 3 * ETHER
DEPOSIT_ETH_B = ETHER
DEPOSIT_TOKEN = 1_000 * 10**TOKEN_DECIMALS
TRANSFER_ETH = ETHER
SWEEP_DONE = ("SWEEP_STATE_COMPLETED", "SWEEP_STATE_PARTIALLY_COMPLETED", "SWEEP_STATE_FAILED")
WITHDRAW_SMALL_ETH = ETHER // 5
WITHDRAW_LARGE_TOKEN = 60 * 10**TOKEN_DECIMALS


@dataclass
class Journey:
    alice: Person
    bob: Person
    # (email, chain) -> deposit address, lower case
    addresses: dict[tuple[str, str], str] = field(default_factory=dict)
    destination_id: str = ""
    destination: str = ""
    withdrawals: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def journey(e2e: E2E) -> Journey:
    edge = e2e.platform.edge
    return Journey(
        Person(edge, f"alice-{rid('a')[-8:]}@example.com", registration_id=rid("register-alice")),
        Person(edge, f"bob-{rid('b')[-8:]}@example.com", registration_id=rid("register-bob")),
    )


def test_two_users_register_and_sign_in_with_two_factor(journey: Journey) -> None:
    for person, name in ((journey.alice, "Alice"), (journey.bob, "Bob")):
        registered = person.register(name)
        assert registered["userId"] == person.user_id
        assert registered["email"] == person.email
        signed_in = person.login()
        assert signed_in["tokens"]["accessToken"]
        me = person.get("/v1/users/me")["user"]
        assert (me["userId"], me["email"]) == (person.user_id, person.email)
        assert person.get("/v1/auth/two_factor")["twoFactor"].get("totpEnabled", False) is False

        confirmed = person.enable_totp()
        assert confirmed["twoFactor"]["totpEnabled"] is True
        assert len(person.recovery_codes) == confirmed["twoFactor"]["recoveryCodesRemaining"] > 0

        # From now on a password alone is a challenge; a wrong code does not complete it.
        challenge = person.edge.post(
            "/v1/auth/login", {"requestId": rid("login"), "email": person.email, "password": person.password}
        )["challenge"]
        assert "SECOND_FACTOR_TOTP" in challenge["allowedFactors"]
        with pytest.raises(EdgeError) as wrong:
            person.edge.post(
                "/v1/auth/login:complete",
                {
                    "requestId": rid("complete"),
                    "challengeToken": challenge["challengeToken"],
                    "totpCode": "000000",
                },
            )
        assert wrong.value.status in (400, 401), wrong.value
        person.login()
        me_again = person.get("/v1/auth/me")
        assert me_again["principal"]["userId"] == person.user_id
        assert me_again["twoFactor"]["totpEnabled"] is True


# --------------------------------------------------------------------------------------------
# Deposits


def test_each_user_gets_a_deposit_address_per_chain(e2e: E2E, journey: Journey) -> None:
    seen: set[str] = set()
    for person in (journey.alice, journey.bob):
        for chain in (CHAIN_A, CHAIN_B):
            created = person.post("/v1/users/me/wallets", {"requestId": rid("wallet"), "chain": chain})
            wallet = created["wallet"]
            address = wallet["depositAddress"]["address"]
            assert Web3.is_address(address) and wallet["chain"] == chain
            assert wallet["depositAddress"]["derivationPath"].startswith("m/")
            assert wallet["depositAddress"]["custodyWalletId"] == e2e.platform.custody.deposit_root_id
            # Asking again is the same wallet, not a new address.
            again = person.post("/v1/users/me/wallets", {"requestId": rid("wallet"), "chain": chain})
            assert again["wallet"]["depositAddress"]["address"] == address
            assert again.get("created", False) is False
            journey.addresses[(person.email, chain)] = address.lower()
            seen.add(address.lower())
    # Never reused across users.
    of_alice = {address for (email, _), address in journey.addresses.items() if email == journey.alice.email}
    of_bob = {address for (email, _), address in journey.addresses.items() if email == journey.bob.email}
    assert of_alice and of_bob and not of_alice & of_bob
    hot = e2e.platform.custody.hot_wallet_address.lower()
    assert hot not in seen


def test_outside_deposits_are_pending_then_credited(e2e: E2E, journey: Journey) -> None:
    alice = journey.alice
    chain_a, chain_b = e2e.chains[CHAIN_A], e2e.chains[CHAIN_B]
    outsider = Account.from_key(HARDHAT_ACCOUNT_KEYS[1])
    sent = {
        chain_a.native: send_ether(
            chain_a, outsider, journey.addresses[(alice.email, CHAIN_A)], DEPOSIT_ETH_A
        ),
        chain_b.native: send_ether(
            chain_b, outsider, journey.addresses[(alice.email, CHAIN_B)], DEPOSIT_ETH_B
        ),
        e2e.token.asset: send_token(e2e.token, journey.addresses[(alice.email, CHAIN_A)], DEPOSIT_TOKEN),
    }
    expected = {chain_a.native: DEPOSIT_ETH_A, chain_b.native: DEPOSIT_ETH_B, e2e.token.asset: DEPOSIT_TOKEN}

    def seen_all() -> dict[str, dict[str, Any]] | None:
        found = {
            row["amount"]["asset"]: row
            for chain in (CHAIN_A, CHAIN_B)
            for row in deposits_of(alice, chain)
            if row["txHash"].lower() in {tx.lower() for tx in sent.values()}
        }
        return found if set(found) == set(expected) else None

    pending = wait_for("the three deposits seen on chain", seen_all, timeout_s=WAIT_S)
    for asset, row in pending.items():
        assert row["state"] in ("DEPOSIT_STATE_PENDING", "DEPOSIT_STATE_CONFIRMING"), row
        assert int(row["amount"]["amount"]) == expected[asset]
        assert int(row.get("confirmations", 0)) < int(row["requiredConfirmations"]) == DEPTH
    for chain in (CHAIN_A, CHAIN_B):
        for asset, row in balances(alice, chain).items():
            if asset in expected:
                assert int(row.get("available", "0")) == 0, row

    chain_a.mine(DEPTH)
    chain_b.mine(DEPTH)

    def credited() -> dict[str, dict[str, Any]] | None:
        rows = seen_all() or {}
        done = {asset: row for asset, row in rows.items() if row["state"] == "DEPOSIT_STATE_CREDITED"}
        return done if len(done) == len(expected) else None

    done = wait_for("the three deposits credited", credited, timeout_s=WAIT_S)
    assert all(row["creditEntryId"] for row in done.values())

    def available() -> bool:
        found = {**balances(alice, CHAIN_A), **balances(alice, CHAIN_B)}
        return all(
            int(found.get(asset, {}).get("available", "0")) == amount for asset, amount in expected.items()
        )

    wait_for("alice's balances to show the deposits", available, timeout_s=WAIT_S)


# --------------------------------------------------------------------------------------------
# Internal transfer


def test_an_internal_transfer_reaches_the_second_user_at_once(journey: Journey) -> None:
    alice, bob = journey.alice, journey.bob
    before = int(balances(alice, CHAIN_A)[f"{CHAIN_A}:ETH"]["available"])
    request = {
        "requestId": rid("transfer"),
        "toUserId": bob.user_id,
        "amount": {"asset": f"{CHAIN_A}:ETH", "amount": str(TRANSFER_ETH)},
        "memo": "rent",
    }
    path = f"/v1/users/me/wallets/{CHAIN_A}/internal_transfers"
    transfer = alice.post(path, request)["transfer"]
    assert transfer["fromUserId"] == alice.user_id and transfer["toUserId"] == bob.user_id
    assert transfer["ledgerEntryId"]
    # The same request again is the same transfer, not a second one.
    assert alice.post(path, request)["transfer"]["transferId"] == transfer["transferId"]
    assert int(balances(alice, CHAIN_A)[f"{CHAIN_A}:ETH"]["available"]) == before - TRANSFER_ETH
    assert int(balances(bob, CHAIN_A)[f"{CHAIN_A}:ETH"]["available"]) == TRANSFER_ETH
    listed = bob.get(f"/v1/users/me/wallets/{CHAIN_A}/internal_transfers")["transfers"]
    assert [row["transferId"] for row in listed] == [transfer["transferId"]]


# --------------------------------------------------------------------------------------------
# Withdrawals


def _swept(e2e: E2E, asset: str) -> dict[str, Any]:
    """An operator sweeps every deposit address holding `asset` on chain A to the hot wallet; the
    sweep, once finished (the chain is mined a block at a time: sweeps confirm at depth)."""
    operator, chain = e2e.platform.staff.operator, e2e.chains[CHAIN_A]
    operator.login()
    created = operator.post(
        "/v1/admin/deposit_sweeps", {"requestId": rid("sweep"), "chain": CHAIN_A, "asset": asset}
    )
    sweep_id = created["sweep"]["sweepId"]

    def finished() -> dict[str, Any] | None:
        chain.mine(1)
        sweep: dict[str, Any] = operator.get(f"/v1/admin/deposit_sweeps/{sweep_id}")["sweep"]
        return sweep if sweep["state"] in SWEEP_DONE else None

    return wait_for(f"the {asset} sweep to finish", finished, timeout_s=WAIT_S)


def test_credited_deposits_are_swept_to_the_hot_wallet(e2e: E2E, journey: Journey) -> None:
    """The hot wallet is funded by the users' deposits only: the ether first, then the token,
    whose sweep tops up the deposit address's gas from the hot wallet."""
    hot = e2e.platform.custody.hot_wallet_address
    chain = e2e.chains[CHAIN_A]
    alice_address = journey.addresses[(journey.alice.email, CHAIN_A)]
    ether = _swept(e2e, chain.native)
    assert ether["state"] == "SWEEP_STATE_COMPLETED", ether
    assert {
        item["address"].lower() for item in ether["items"] if item["state"] == "SWEEP_ITEM_STATE_CONFIRMED"
    } == {alice_address}, ether["items"]
    swept_ether = sum(int(item["amount"]["amount"]) for item in ether["items"])
    assert 0 < swept_ether <= DEPOSIT_ETH_A
    assert on_chain(e2e, chain.native, hot) == swept_ether
    token = _swept(e2e, e2e.token.asset)
    assert token["state"] == "SWEEP_STATE_COMPLETED", token
    assert on_chain(e2e, e2e.token.asset, hot) == DEPOSIT_TOKEN
    assert on_chain(e2e, e2e.token.asset, alice_address) == 0
    # The top-up came out of the hot wallet: it now holds less ether than was swept into it.
    assert on_chain(e2e, chain.native, hot) < swept_ether


def test_a_whitelisted_address_after_a_step_up(journey: Journey) -> None:
    alice = journey.alice
    destination = Account.create().address
    body = {
        "requestId": rid("address"),
        "address": {"chain": CHAIN_A, "address": destination},
        "label": "cold",
    }
    with pytest.raises(EdgeError) as refused:
        alice.post("/v1/withdrawal_addresses", {**body, "stepUpToken": "su_forged"})
    assert refused.value.status in (401, 403), refused.value
    created = alice.post(
        "/v1/withdrawal_addresses",
        {
            **body,
            "requestId": rid("address"),
            "stepUpToken": alice.step_up("STEP_UP_PURPOSE_WITHDRAWAL_ADDRESS_ADD"),
        },
    )["address"]
    assert created["address"]["address"].lower() == destination.lower()
    listed = alice.get("/v1/withdrawal_addresses", params={"chain": CHAIN_A})["addresses"]
    assert created["addressId"] in [row["addressId"] for row in listed]
    journey.destination_id = created["addressId"]
    journey.destination = destination.lower()


def test_a_withdrawal_under_the_threshold_is_auto_approved_and_confirmed(e2e: E2E, journey: Journey) -> None:
    alice, chain = journey.alice, e2e.chains[CHAIN_A]
    before = int(balances(alice, CHAIN_A)[chain.native]["available"])
    created = alice.post(
        "/v1/withdrawals",
        {
            "requestId": rid("withdrawal"),
            "amount": {"asset": chain.native, "amount": str(WITHDRAW_SMALL_ETH)},
            "destinationAddressId": journey.destination_id,
            "stepUpToken": alice.step_up("STEP_UP_PURPOSE_WITHDRAWAL"),
        },
    )["withdrawal"]
    assert int(created["fee"]["amount"]) == ETH_FEE
    assert int(created["totalDebit"]["amount"]) == WITHDRAW_SMALL_ETH + ETH_FEE
    # Held in the ledger from the request on; the balance the wallet shows follows the ledger's
    # events, so it shows the hold as soon as the account service has consumed the entry.
    held = before - WITHDRAW_SMALL_ETH - ETH_FEE
    wait_for(
        "the hold to show in alice's balance",
        lambda: int(balances(alice, CHAIN_A)[chain.native]["available"]) == held,
        timeout_s=WAIT_S,
    )
    done = confirmed_on_chain(e2e, alice, created["withdrawalId"], chain)
    assert done["autoApproved"] is True
    assert chain.web3.eth.get_balance(Web3.to_checksum_address(journey.destination)) == WITHDRAW_SMALL_ETH
    journey.withdrawals.append(done)


def test_a_withdrawal_above_the_threshold_needs_two_approvers(e2e: E2E, journey: Journey) -> None:
    alice, token = journey.alice, e2e.token
    created = alice.post(
        "/v1/withdrawals",
        {
            "requestId": rid("withdrawal"),
            "amount": {"asset": token.asset, "amount": str(WITHDRAW_LARGE_TOKEN)},
            "destinationAddressId": journey.destination_id,
            "stepUpToken": alice.step_up("STEP_UP_PURPOSE_WITHDRAWAL"),
        },
    )["withdrawal"]
    withdrawal_id = created["withdrawalId"]
    waiting = wait_for(
        "the withdrawal to wait for approvers",
        lambda: (
            (current := withdrawal_of(alice, withdrawal_id))["state"] == "WITHDRAWAL_STATE_AWAITING_APPROVAL"
            and current
        ),
        timeout_s=WAIT_S,
    )
    assert waiting["requiredApprovals"] == 2 and not waiting.get("autoApproved", False)
    # The requester is no approver.
    with pytest.raises(EdgeError) as denied:
        alice.post(
            f"/v1/admin/withdrawals/{withdrawal_id}:approve",
            {"requestId": rid("approve"), "stepUpToken": alice.step_up("STEP_UP_PURPOSE_STAFF_APPROVAL")},
        )
    assert denied.value.status == 403, denied.value
    for count, approver in enumerate(e2e.platform.staff.approvers, start=1):
        approver.login()
        queue = approver.get("/v1/admin/withdrawals", params={"awaitingMyApproval": "true"})
        assert withdrawal_id in [row["withdrawalId"] for row in queue.get("withdrawals", [])]
        approved = approver.post(
            f"/v1/admin/withdrawals/{withdrawal_id}:approve",
            {"requestId": rid("approve"), "stepUpToken": approver.step_up("STEP_UP_PURPOSE_STAFF_APPROVAL")},
        )["withdrawal"]
        assert len(approved["approvals"]) == count
    confirmed_on_chain(e2e, alice, withdrawal_id, token.chain)
    # The staff view has the approvals and the network fee the platform paid.
    done = e2e.platform.staff.approvers[0].get(f"/v1/admin/withdrawals/{withdrawal_id}")["withdrawal"]
    assert {row["approverId"] for row in done["approvals"]} == {
        p.user_id for p in e2e.platform.staff.approvers
    }
    assert token.balance_of(journey.destination) == WITHDRAW_LARGE_TOKEN
    journey.withdrawals.append(done)


# --------------------------------------------------------------------------------------------
# The books against the chains


def test_the_books_agree_with_the_chains_to_the_base_unit(e2e: E2E, journey: Journey) -> None:
    alice, bob = journey.alice, journey.bob
    admin = e2e.platform.staff.admin
    admin.login()
    eth_a, eth_b, token = f"{CHAIN_A}:ETH", f"{CHAIN_B}:ETH", e2e.token.asset
    assets_of = {CHAIN_A: (eth_a, token), CHAIN_B: (eth_b,)}
    small, large = (
        admin.get(f"/v1/admin/withdrawals/{row['withdrawalId']}")["withdrawal"] for row in journey.withdrawals
    )
    expected_users = {
        (alice.user_id, eth_a): DEPOSIT_ETH_A - TRANSFER_ETH - WITHDRAW_SMALL_ETH - ETH_FEE,
        (alice.user_id, token): DEPOSIT_TOKEN - WITHDRAW_LARGE_TOKEN - TOKEN_FEE,
        (alice.user_id, eth_b): DEPOSIT_ETH_B,
        (bob.user_id, eth_a): TRANSFER_ETH,
        (bob.user_id, token): 0,
        (bob.user_id, eth_b): 0,
    }
    # Every user's balance, as the wallet shows it and as the ledger holds it.
    for person in (alice, bob):
        shown = {**balances(person, CHAIN_A), **balances(person, CHAIN_B)}
        accounts = person.get(f"/v1/users/{person.user_id}/accounts").get("accounts", [])
        for (user_id, asset), amount in expected_users.items():
            if user_id != person.user_id:
                continue
            assert int(shown.get(asset, {}).get("available", "0")) == amount, (person.email, asset)
            ledger_ids = [row["ledgerAccountId"] for row in accounts if row["asset"] == asset]
            ledger = sum(
                int(b.get("creditsPosted", "0")) - int(b.get("debitsPosted", "0"))
                for b in (admin.get(f"/v1/admin/ledger/accounts/{i}/balance")["balance"] for i in ledger_ids)
            )
            assert ledger == amount, (person.email, asset)
    # Every deposit address: the custody account mirroring it is what the chain shows.
    custody_total = dict.fromkeys((eth_a, token, eth_b), 0)
    for (email, chain), address in journey.addresses.items():
        for asset in assets_of[chain]:
            booked = ledger_holdings(admin, f"assets:custody:deposit:{address}:{asset}")
            assert booked == on_chain(e2e, asset, address), (email, asset, address)
            custody_total[asset] += booked
    # The hot wallet holds what the ledger says: the sweeps in, the top-up and the withdrawals out.
    hot = e2e.platform.custody.hot_wallet_address.lower()
    for asset in (eth_a, token, eth_b):
        booked = ledger_holdings(admin, f"assets:custody:hot:{asset}")
        assert on_chain(e2e, asset, hot) == booked, asset
        custody_total[asset] += booked
    assert ledger_holdings(admin, f"assets:custody:hot:{token}") == DEPOSIT_TOKEN - WITHDRAW_LARGE_TOKEN
    # Every wei of gas the platform paid (sweeps, the top-up's own, withdrawals) is an expense.
    paid = int(small["networkFee"]["amount"]) + int(large["networkFee"]["amount"])
    assert ledger_holdings(admin, f"expenses:gas:withdrawal:{eth_a}") >= paid
    # Custody holds what users are owed plus the fees earned less the gas spent.
    for asset in custody_total:
        owed = sum(amount for (_, owned), amount in expected_users.items() if owned == asset)
        revenue = -ledger_holdings(admin, f"revenue:fees:withdrawal:{asset}")
        gas = ledger_holdings(admin, f"expenses:gas:withdrawal:{asset}")
        assert custody_total[asset] == owed + revenue - gas, asset
    assert -ledger_holdings(admin, f"revenue:fees:withdrawal:{eth_a}") == ETH_FEE
    assert -ledger_holdings(admin, f"revenue:fees:withdrawal:{token}") == TOKEN_FEE
