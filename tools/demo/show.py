"""The demo: the custodial-wallet profile on the embedded defaults, driven through its REST edge.

Every service runs as its own process with mTLS (`finmesh run`), on SQLite databases, the SQLite
event log shared by the processes, the chain gateway's in-process EVMs (two development chains)
and custody's envelope-encrypted software keys, all under a scratch directory removed at the end.
Money from outside the platform comes from the chain gateway's development-only CreateDevTransfer
(refused on any chain not marked as a development chain): ETH, and the development ERC-20 that
every embedded chain carries from its first block (svc/chain_gateway/dev_token.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from svc.chain_gateway.config import EMBEDDED_CHAIN_ID, EMBEDDED_SCHEME, EMBEDDED_TOKEN, default_chains
from tools.demo.edge import EdgeError, Person, rid
from tools.demo.mesh import MeshError
from tools.demo.platform import (
    Platform,
    approval_key_environment,
    bring_up,
    hot_wallet_environment,
    ledger_holdings,
    withdrawal_policy,
)

CHAINS = ("local", "local-b")
ETHER = 10**18
FEE = 10**15
AUTO_APPROVAL_BELOW = ETHER // 2
# The development token (USDT, 6 decimals) is on every embedded chain; the demo moves it on local.
TOKEN = EMBEDDED_TOKEN.symbol
TOKEN_UNIT = 10**EMBEDDED_TOKEN.decimals
TOKEN_FEE = TOKEN_UNIT
TOKEN_AUTO_APPROVAL_BELOW = 500 * TOKEN_UNIT
DECIMALS = {"ETH": 18, TOKEN: EMBEDDED_TOKEN.decimals}
# What someone outside sends Alice: (chain, asset) -> base units.
DEPOSITS = {
    ("local", "local:ETH"): 3 * ETHER,
    ("local-b", "local-b:ETH"): ETHER,
    ("local", f"local:{TOKEN}"): 1_000 * TOKEN_UNIT,
}
TRANSFER = ETHER // 2
WAIT_S = 120.0
# What the operator sweeps to the hot wallet before the withdrawals (the ether first: the token's
# sweep tops up the deposit address's gas from it).
SWEPT = ("local:ETH", f"local:{TOKEN}")
SWEEP_FINISHED = ("SWEEP_STATE_COMPLETED", "SWEEP_STATE_PARTIALLY_COMPLETED", "SWEEP_STATE_FAILED")
SWEEP_ON_CHAIN = ("SWEEP_ITEM_STATE_FUNDING_GAS", "SWEEP_ITEM_STATE_BROADCAST")
SMALL_WITHDRAWAL = ETHER // 5
TOKEN_WITHDRAWAL = 100 * TOKEN_UNIT
LARGE_WITHDRAWAL = ETHER * 6 // 10
ENDED_UNPAID = ("WITHDRAWAL_STATE_REJECTED", "WITHDRAWAL_STATE_CANCELLED", "WITHDRAWAL_STATE_FAILED")
# Where the chain moves on to: an address outside the platform.
ELSEWHERE = "0x" + "ee" * 20


class DemoFailure(Exception):
    """The platform did not do what the step expects; the message says what."""


def embedded_environment() -> dict[str, str]:
    """The settings the demo adds to the embedded defaults: a second in-process EVM (a copy of
    `local`, development token included), the chains' assets for custody and the accounts, the
    withdrawal policies and the approval key."""
    local = default_chains()["local"]
    second = local.model_copy(
        update={
            "display_name": "Embedded development EVM B",
            "providers": (local.providers[0].model_copy(update={"endpoint": EMBEDDED_SCHEME + "local-b"}),),
        }
    )
    chains = {"local": local.model_dump(mode="json"), "local-b": second.model_dump(mode="json")}
    assets = {f"{chain}:{symbol}": decimals for chain in CHAINS for symbol, decimals in DECIMALS.items()}
    policies = {
        "ETH": withdrawal_policy(ETHER, FEE, AUTO_APPROVAL_BELOW),
        TOKEN: withdrawal_policy(TOKEN_UNIT, TOKEN_FEE, TOKEN_AUTO_APPROVAL_BELOW),
    }
    settings: dict[str, Any] = {
        "FINMESH_PRODUCT_PROFILE": "custodial-wallet",
        # Generous edge deadlines: the machine runs every service of the profile at once.
        "FINMESH_GATEWAY__DEFAULT_TIMEOUT_S": 30,
        "FINMESH_CHAIN_GATEWAY__CHAINS": chains,
        "FINMESH_CUSTODY__CHAINS": {
            chain: {
                "chain_id": EMBEDDED_CHAIN_ID,
                "native_asset": f"{chain}:ETH",
                "tokens": {EMBEDDED_TOKEN.contract: f"{chain}:{TOKEN}"},
            }
            for chain in CHAINS
        },
        "FINMESH_CUSTODY__MOVEMENT_INTERVAL_S": 1,
        "FINMESH_ACCOUNT__ASSETS": assets,
        "FINMESH_WITHDRAW__WITHDRAWAL_ASSETS": {asset: policies[symbol_of(asset)] for asset in assets},
        "FINMESH_WITHDRAW__CHAIN_IDS": dict.fromkeys(CHAINS, EMBEDDED_CHAIN_ID),
        "FINMESH_WITHDRAW__ADDRESS_COOL_DOWN_S": 0,
        "FINMESH_WITHDRAW__EXECUTION_INTERVAL_S": 1,
    }
    environment = {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in settings.items()
    }
    return {
        **environment,
        **approval_key_environment(
            {
                "withdraw": ("withdraw-demo", Ed25519PrivateKey.generate()),
                "deposit": ("deposit-demo", Ed25519PrivateKey.generate()),
            }
        ),
    }


def symbol_of(asset: str) -> str:
    """`USDT` of `local:USDT` (and of `USDT`)."""
    return asset.rsplit(":", 1)[-1]


def units(amount: int | str, asset: str = "ETH") -> str:
    """Base units in whole units of the asset (`local:USDT` or a symbol) for people (the exact
    base units stay in the JSON)."""
    symbol = symbol_of(asset)
    decimals = DECIMALS[symbol]
    whole, fraction = divmod(int(amount), 10**decimals)
    text = f"{whole}.{fraction:0{decimals}d}".rstrip("0").rstrip(".")
    return f"{text} {symbol}"


def eth(amount: int | str) -> str:
    return units(amount, "ETH")


class Show:
    """Numbered steps, each line as a user reads it, waits with a progress line."""

    def __init__(self, out: TextIO, steps: int) -> None:
        self.out = out
        self.steps = steps
        self.number = 0
        self.started = time.monotonic()

    def step(self, title: str) -> None:
        self.number += 1
        self.say(f"\n[{self.number}/{self.steps}] {title}")

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def ok(self, text: str) -> None:
        self.say(f"  ✓ {text}")

    def info(self, text: str) -> None:
        self.say(f"    {text}")

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
        """Polls `check` until truthy; on a terminal the seconds waited count up on one line."""
        live = self.out.isatty()
        start = "\r" if live else ""
        began = time.monotonic()
        while True:
            result = check()
            waited = time.monotonic() - began
            if result:
                self.out.write(f"{start}  … {what}: done after {waited:.1f} s\n")
                self.out.flush()
                return result
            if waited > timeout_s:
                self.out.write("\n" if live else "")
                raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
            if live:
                self.out.write(f"\r  … {what} ({waited:.0f} s)")
                self.out.flush()
            time.sleep(0.5)


def balances_of(person: Person, chain: str) -> dict[str, dict[str, str]]:
    listed = person.get(f"/v1/users/me/wallets/{chain}/balances", params={"includeZero": "true"})
    return {row["asset"]["id"]: row for row in listed.get("balances", [])}


def run_flow(platform: Platform, show: Show) -> None:
    admin = platform.staff.admin
    edge = platform.edge
    alice = Person(edge, f"alice-{rid('a')[-6:]}@example.com", registration_id=rid("register-alice"))
    bob = Person(edge, f"bob-{rid('b')[-6:]}@example.com", registration_id=rid("register-bob"))

    show.step("Alice and Bob sign up, turn on two-factor sign-in, and sign in with it")
    for person, name in ((alice, "Alice"), (bob, "Bob")):
        person.register(name)
        person.login()
        show.ok(f"{name} registered as {person.email} (user {person.user_id}) and signed in")
        person.enable_totp()
        show.ok(f"{name} scanned the TOTP QR code; {len(person.recovery_codes)} recovery codes issued")
        person.login()
        show.ok(f"{name} signed in again: password, then the 6-digit code from the phone")

    show.step("Alice and Bob open a wallet on each chain and get deposit addresses")
    addresses: dict[tuple[str, str], str] = {}
    for person, name in ((alice, "Alice"), (bob, "Bob")):
        for chain in CHAINS:
            wallet = person.post("/v1/users/me/wallets", {"requestId": rid("wallet"), "chain": chain})[
                "wallet"
            ]
            deposit = wallet["depositAddress"]
            addresses[(name, chain)] = deposit["address"]
            show.ok(f"{name} on {chain}: {deposit['address']} (derivation path {deposit['derivationPath']})")

    show.step(f"Someone outside the platform sends Alice ETH on both chains and {TOKEN} on local")
    admin.login()
    sent: dict[tuple[str, str], str] = {}

    def deposits(state: str = "") -> dict[tuple[str, str], dict[str, Any]]:
        """Alice's deposits of the transactions sent to her, by (chain, asset); in `state` if given."""
        found = {}
        for chain in CHAINS:
            for row in alice.get("/v1/deposits", params={"chain": chain}).get("deposits", []):
                key = (chain, row["amount"]["asset"])
                if sent.get(key) == row["txHash"].lower() and (not state or row["state"] == state):
                    found[key] = row
        return found

    def landed(key: tuple[str, str]) -> dict[str, Any] | None:
        # With its block counted: the deposit service caches the follower's progress a few seconds.
        row = deposits().get(key)
        return row if row is not None and int(row.get("confirmations", 0)) >= 1 else None

    for (chain, asset), amount in DEPOSITS.items():
        transaction = admin.post(
            f"/v1/admin/chains/{chain}/dev_transfers",
            {
                "requestId": rid("dev-transfer"),
                "recipient": addresses[("Alice", chain)],
                "amount": {"asset": asset, "amount": str(amount)},
            },
        )["transaction"]
        sent[(chain, asset)] = transaction["txHash"].lower()
        show.ok(f"{units(amount, asset)} sent to Alice on {chain}: transaction {transaction['txHash']}")
        # Seen at its first confirmation, before the next transfer's block confirms it once more.
        row = show.wait(
            "the deposit to show up in Alice's history", functools.partial(landed, (chain, asset))
        )
        show.ok(
            f"{chain}: {units(row['amount']['amount'], asset)} "
            f"{row['state'].removeprefix('DEPOSIT_STATE_').lower()}, "
            f"{row.get('confirmations', 0)} of {row['requiredConfirmations']} confirmations"
        )

    show.step("The chains move on; the deposits reach their confirmation depth and are credited")
    for chain in CHAINS:
        # Each development chain makes a block per transaction: one more payment elsewhere.
        admin.post(
            f"/v1/admin/chains/{chain}/dev_transfers",
            {
                "requestId": rid("dev-transfer"),
                "recipient": ELSEWHERE,
                "amount": {"asset": f"{chain}:ETH", "amount": "1"},
            },
        )

    def all_credited() -> dict[tuple[str, str], dict[str, Any]]:
        found = deposits("DEPOSIT_STATE_CREDITED")
        return found if len(found) == len(DEPOSITS) else {}

    def credits_shown() -> dict[tuple[str, str], str]:
        available = {
            (chain, asset): balances_of(alice, chain).get(asset, {}).get("available", "0")
            for chain, asset in DEPOSITS
        }
        return available if all(int(available[key]) == amount for key, amount in DEPOSITS.items()) else {}

    for (chain, asset), row in show.wait("the deposits to be credited", all_credited).items():
        show.ok(
            f"{chain}: {units(row['amount']['amount'], asset)} credited (ledger entry {row['creditEntryId']})"
        )
    # The balances follow the ledger's events: a credit shows once the account service consumed it.
    for (chain, asset), available in show.wait("Alice's balances to show the credits", credits_shown).items():
        show.ok(f"Alice's balance on {chain}: {units(available, asset)} available")

    show.step("Alice sends Bob ETH inside the platform (instant, no chain involved)")
    transfer = alice.post(
        "/v1/users/me/wallets/local/internal_transfers",
        {
            "requestId": rid("transfer"),
            "toUserId": bob.user_id,
            "amount": {"asset": "local:ETH", "amount": str(TRANSFER)},
            "memo": "dinner",
        },
    )["transfer"]
    show.ok(f"{eth(TRANSFER)} to Bob: {transfer['state'].removeprefix('INTERNAL_TRANSFER_STATE_').lower()}")
    for person, name in ((alice, "Alice"), (bob, "Bob")):
        row = balances_of(person, "local").get("local:ETH", {})
        show.ok(f"{name} now has {eth(row.get('available', '0'))} on local")
    run_withdrawals(platform, show, alice)
    show_books(platform, show, {"Alice": alice, "Bob": bob}, addresses)


def run_withdrawals(platform: Platform, show: Show, alice: Person) -> None:
    admin = platform.staff.admin
    hot = platform.custody.hot_wallet_address

    def pay_in(recipient: str, amount: int, asset: str = "local:ETH") -> dict[str, Any]:
        body = {
            "requestId": rid("dev-transfer"),
            "recipient": recipient,
            "amount": {"asset": asset, "amount": str(amount)},
        }
        answer: dict[str, Any] = admin.post("/v1/admin/chains/local/dev_transfers", body)["transaction"]
        return answer

    show.step("The operator sweeps the credited deposits to the hot wallet that pays withdrawals")
    operator = platform.staff.operator
    operator.login()
    for asset in SWEPT:
        sweep_id = operator.post(
            "/v1/admin/deposit_sweeps", {"requestId": rid("sweep"), "chain": "local", "asset": asset}
        )["sweep"]["sweepId"]

        def finished(sweep_id: str = sweep_id) -> dict[str, Any] | None:
            sweep: dict[str, Any] = operator.get(f"/v1/admin/deposit_sweeps/{sweep_id}")["sweep"]
            if sweep["state"] in SWEEP_FINISHED:
                return sweep
            if any(item["state"] in SWEEP_ON_CHAIN for item in sweep.get("items", [])):
                pay_in(ELSEWHERE, 1)  # the development chain makes a block per transaction
            return None

        sweep = show.wait(f"the {symbol_of(asset)} sweep", finished)
        if sweep["state"] != "SWEEP_STATE_COMPLETED":
            raise DemoFailure(f"the {asset} sweep ended {sweep['state']}: {sweep.get('items')}")
        moved = sum(int(item["amount"]["amount"]) for item in sweep.get("items", []))
        topped_up = any(item.get("gasTopUpTxHash") for item in sweep.get("items", []))
        show.ok(
            f"{units(moved, asset)} swept from {len(sweep.get('items', []))} deposit address(es) to the hot "
            f"wallet {hot}" + (" (the hot wallet first sent each address the gas)" if topped_up else "")
        )

    show.step("Alice adds an address to her withdrawal whitelist (confirmed with her 2FA code)")
    destination = "0x" + "5a" * 20
    address = alice.post(
        "/v1/withdrawal_addresses",
        {
            "requestId": rid("address"),
            "address": {"chain": "local", "address": destination},
            "label": "my hardware wallet",
            "stepUpToken": alice.step_up("STEP_UP_PURPOSE_WITHDRAWAL_ADDRESS_ADD"),
        },
    )["address"]
    show.ok(f"whitelisted {destination} as '{address['label']}'")

    def withdraw(amount: int, asset: str = "local:ETH") -> dict[str, Any]:
        created: dict[str, Any] = alice.post(
            "/v1/withdrawals",
            {
                "requestId": rid("withdrawal"),
                "amount": {"asset": asset, "amount": str(amount)},
                "destinationAddressId": address["addressId"],
                "stepUpToken": alice.step_up("STEP_UP_PURPOSE_WITHDRAWAL"),
            },
        )["withdrawal"]
        show.ok(
            f"requested {units(amount, asset)} (+ {units(created['fee']['amount'], asset)} fee, held from "
            f"her balance): {state_of(created)}"
        )
        return created

    def follow(withdrawal_id: str, until: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            current: dict[str, Any] = alice.get(f"/v1/withdrawals/{withdrawal_id}")["withdrawal"]
            if current["state"] in ENDED_UNPAID:
                raise DemoFailure(
                    f"the withdrawal ended {state_of(current)}: {current.get('outcomeMessage', '')}"
                )
            return current if current["state"] in until.split(",") else None

        answer: dict[str, Any] = show.wait(f"withdrawal {state_label(until.split(',')[0])}", reached)
        return answer

    def to_chain(withdrawal_id: str) -> None:
        sent = follow(withdrawal_id, "WITHDRAWAL_STATE_BROADCAST,WITHDRAWAL_STATE_CONFIRMED")
        show.ok(f"custody signed it with the hot wallet; broadcast as {sent['txHash']}")
        pay_in(ELSEWHERE, 1)  # the development chain makes a block per transaction
        follow(withdrawal_id, "WITHDRAWAL_STATE_CONFIRMED")
        show.ok("confirmed on chain at the chain's confirmation depth; the hold is posted")

    show.step("Alice withdraws a small amount: approved automatically, sent, confirmed")
    small = withdraw(SMALL_WITHDRAWAL)
    to_chain(small["withdrawalId"])

    show.step(f"Alice withdraws {TOKEN}: approved automatically, the hot wallet sends the token")
    token = withdraw(TOKEN_WITHDRAWAL, f"local:{TOKEN}")
    to_chain(token["withdrawalId"])
    row = balances_of(alice, "local").get(f"local:{TOKEN}", {})
    show.ok(f"Alice now has {units(row.get('available', '0'), f'local:{TOKEN}')} on local")

    show.step("Alice withdraws more than the auto-approval threshold: two approvers must agree")
    large = withdraw(LARGE_WITHDRAWAL)
    waiting = follow(large["withdrawalId"], "WITHDRAWAL_STATE_AWAITING_APPROVAL")
    show.ok(f"waiting for {waiting['requiredApprovals']} approvals")
    for approver in platform.staff.approvers:
        approver.login()
        queue = approver.get("/v1/admin/withdrawals", params={"awaitingMyApproval": "true"})
        if large["withdrawalId"] not in [row["withdrawalId"] for row in queue.get("withdrawals", [])]:
            raise DemoFailure(f"{approver.email} does not see the withdrawal among those awaiting approval")
        show.ok(f"{approver.email} finds it among the withdrawals awaiting their approval")
        approved = approver.post(
            f"/v1/admin/withdrawals/{large['withdrawalId']}:approve",
            {"requestId": rid("approve"), "stepUpToken": approver.step_up("STEP_UP_PURPOSE_STAFF_APPROVAL")},
        )["withdrawal"]
        show.ok(
            f"{approver.email} approved ({len(approved['approvals'])} of {approved['requiredApprovals']})"
        )
    to_chain(large["withdrawalId"])
    row = balances_of(alice, "local").get("local:ETH", {})
    show.ok(f"Alice now has {eth(row.get('available', '0'))} on local")


def show_books(
    platform: Platform, show: Show, people: dict[str, Person], addresses: dict[tuple[str, str], str]
) -> None:
    show.step("The books: what custody holds is what users are owed, plus fees, less gas")
    admin = platform.staff.admin
    admin.login()
    trial = {row["asset"]: row for row in admin.get("/v1/admin/ledger/trial_balance").get("assets", [])}
    for chain, asset in DEPOSITS:
        owed = sum(
            int(balances_of(person, chain).get(asset, {}).get("available", "0")) for person in people.values()
        )
        deposits = sum(
            ledger_holdings(admin, f"assets:custody:deposit:{address.lower()}:{asset}")
            for (_, on), address in addresses.items()
            if on == chain
        )
        hot = ledger_holdings(admin, f"assets:custody:hot:{asset}")
        fees = -ledger_holdings(admin, f"revenue:fees:withdrawal:{asset}")
        gas = ledger_holdings(admin, f"expenses:gas:withdrawal:{asset}")
        agree = deposits + hot == owed + fees - gas
        show.ok(
            f"{asset}: deposit addresses {units(deposits, asset)}, hot wallet {units(hot, asset)}; "
            f"users are owed {units(owed, asset)}, fees earned {units(fees, asset)}, gas spent "
            f"{units(gas, asset)}: " + ("they agree to the base unit" if agree else "THEY DISAGREE")
        )
        if not agree:
            raise DemoFailure(f"the books of {asset} do not agree")
        if asset in trial:
            verdict = "balanced" if trial[asset].get("balanced") else "NOT balanced"
            show.ok(f"{asset}: the ledger's trial balance is {verdict}")


def state_label(state: str) -> str:
    return state.removeprefix("WITHDRAWAL_STATE_").lower().replace("_", " ")


def state_of(withdrawal: dict[str, Any]) -> str:
    return state_label(withdrawal["state"])


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, databases)")
    arguments = parser.parse_args(argv)
    out = sys.stdout
    root = Path(tempfile.mkdtemp(prefix="finmesh-demo-"))
    show = Show(out, steps=12)
    show.say(f"finmesh demo: the custodial wallet on the embedded defaults (state and logs in {root})")
    platform: Platform | None = None
    code = 0
    try:
        show.step("Bring the platform up: identity, custody keys, then every service of the profile")
        platform = bring_up(
            root / "var", embedded_environment(), CHAINS, hot_wallet_environment(CHAINS), say=show.ok
        )
        run_flow(platform, show)
        show.say(f"\nfinmesh demo: done in {time.monotonic() - show.started:.0f} s")
    except (EdgeError, MeshError, TimeoutError, DemoFailure) as failure:
        show.say(f"\nfinmesh demo: stopped at step {show.number}: {failure}")
        code = 1
    except KeyboardInterrupt:
        show.say("\nfinmesh demo: interrupted")
        code = 130
    finally:
        if platform is not None:
            show.say("stopping every service")
            platform.stop()
        if arguments.keep or code:
            show.say(f"state and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return code
