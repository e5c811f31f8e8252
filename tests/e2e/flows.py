"""Steps of the end-to-end tests: driving the chains from outside accounts, and reading what the
platform shows through the REST edge."""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import RPCEndpoint

from tests.e2e.conftest import DEPTH, E2E, Chain, Token
from tests.harness.hardhat import HARDHAT_ACCOUNT_KEYS
from tools.demo.edge import Person, wait_for

WAIT_S = 120.0
FAILED_STATES = ("WITHDRAWAL_STATE_REJECTED", "WITHDRAWAL_STATE_CANCELLED", "WITHDRAWAL_STATE_FAILED")


def set_balance(chain: Chain, address: str, wei: int) -> None:
    """An outside account's ETH, set by the node (no block, no nonce used)."""
    chain.web3.provider.make_request(RPCEndpoint("hardhat_setBalance"), [address, hex(wei)])


def send_ether(chain: Chain, sender: LocalAccount, recipient: str, amount: int) -> str:
    """A plain transfer from an outside account, mined by the node; its hash."""
    w3 = chain.web3
    transaction: dict[str, Any] = {
        "chainId": w3.eth.chain_id,
        "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
        "to": Web3.to_checksum_address(recipient),
        "value": amount,
        "gas": 21_000,
        "maxFeePerGas": 100 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    sent = w3.eth.send_raw_transaction(sender.sign_transaction(transaction).raw_transaction)
    assert w3.eth.wait_for_transaction_receipt(sent)["status"] == 1
    return Web3.to_hex(sent)


def send_token(token: Token, recipient: str, amount: int) -> str:
    """An ERC-20 transfer from the token's deployer (an outside account holding the supply)."""
    w3 = token.chain.web3
    deployer = Account.from_key(HARDHAT_ACCOUNT_KEYS[0])
    contract = w3.eth.contract(address=Web3.to_checksum_address(token.address), abi=token.abi)
    transaction = contract.functions.transfer(Web3.to_checksum_address(recipient), amount).build_transaction(
        {"from": deployer.address, "nonce": w3.eth.get_transaction_count(deployer.address, "pending")}
    )
    sent = w3.eth.send_raw_transaction(deployer.sign_transaction(transaction).raw_transaction)
    assert w3.eth.wait_for_transaction_receipt(sent)["status"] == 1
    return Web3.to_hex(sent)


def balances(person: Person, chain: str) -> dict[str, dict[str, str]]:
    """The person's balances on a chain by asset id (zero balances included)."""
    listed = person.get(f"/v1/users/me/wallets/{chain}/balances", params={"includeZero": "true"})
    return {row["asset"]["id"]: row for row in listed.get("balances", [])}


def deposits_of(person: Person, chain: str) -> list[dict[str, Any]]:
    return list(person.get("/v1/deposits", params={"chain": chain}).get("deposits", []))


def withdrawal_of(person: Person, withdrawal_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = person.get(f"/v1/withdrawals/{withdrawal_id}")["withdrawal"]
    return answer


def confirmed_on_chain(e2e: E2E, person: Person, withdrawal_id: str, chain: Chain) -> dict[str, Any]:
    """Waits for the broadcast, lets the chain reach its depth, and waits for CONFIRMED."""

    def broadcast() -> dict[str, Any] | None:
        current = withdrawal_of(person, withdrawal_id)
        assert current["state"] not in FAILED_STATES, current
        return (
            current
            if current["state"] in ("WITHDRAWAL_STATE_BROADCAST", "WITHDRAWAL_STATE_CONFIRMED")
            else None
        )

    sent = wait_for("the withdrawal broadcast", broadcast, timeout_s=WAIT_S)
    receipt = chain.web3.eth.wait_for_transaction_receipt(sent["txHash"], timeout=WAIT_S)
    assert receipt["status"] == 1
    chain.mine(DEPTH)

    def confirmed() -> dict[str, Any] | None:
        current = withdrawal_of(person, withdrawal_id)
        assert current["state"] not in FAILED_STATES, current
        return current if current["state"] == "WITHDRAWAL_STATE_CONFIRMED" else None

    return wait_for("the withdrawal confirmed", confirmed, timeout_s=WAIT_S)  # type: ignore[no-any-return]


def on_chain(e2e: E2E, asset: str, address: str) -> int:
    chain = e2e.chains[asset.split(":")[0]]
    if asset == chain.native:
        return int(chain.web3.eth.get_balance(Web3.to_checksum_address(address)))
    assert asset == e2e.token.asset, asset
    return e2e.token.balance_of(address)
