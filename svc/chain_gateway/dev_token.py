"""The development ERC-20 that every embedded development chain carries from its first block.

Its source is contracts/TestToken.sol; contracts/TestToken.json is its build (ABI and creation
bytecode) made by the pinned solc from npm with `python -m tools.solidity` and committed, so that
`make run` and `make demo` need nothing but Python (a test rebuilds it and compares).

Every embedded chain gets it the same way: the development funding account deploys it at its
first nonce, so it has one address on every embedded chain (an address follows from the sender
and its nonce alone), the one `EMBEDDED_TOKEN` names and the `local` default chain lists. A
chain configured on any other embedded name (the demo's `local-b`) may list it as well; one that
does not simply has a contract on it that the platform does not support. The funding account
holds the whole supply and pays it out through CreateDevTransfer.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from eth_abi.abi import encode
from eth_account import Account
from eth_tester import EthereumTester  # type: ignore[import-untyped]

from svc.chain_gateway.config import EMBEDDED_CHAIN_ID, EMBEDDED_FUNDING_KEY, EMBEDDED_TOKEN, GWEI

CONTRACTS = Path(__file__).resolve().parent / "contracts"
SOURCE = CONTRACTS / "TestToken.sol"
ARTIFACT = CONTRACTS / "TestToken.json"
NAME = "Development USD"
# A billion tokens, in base units.
SUPPLY = 10**9 * 10**EMBEDDED_TOKEN.decimals
PRIORITY_FEE_PER_GAS = GWEI


@functools.cache
def artifact() -> dict[str, Any]:
    """The committed build: {"contract", "compiler", "abi", "bytecode", ...}."""
    built: dict[str, Any] = json.loads(ARTIFACT.read_text())
    return built


def creation_code() -> bytes:
    """The creation bytecode with the constructor's arguments (name, symbol, decimals, supply)."""
    built = artifact()
    constructor = next(entry for entry in built["abi"] if entry["type"] == "constructor")
    types = [argument["type"] for argument in constructor["inputs"]]
    arguments = encode(types, [NAME, EMBEDDED_TOKEN.symbol, EMBEDDED_TOKEN.decimals, SUPPLY])
    return bytes.fromhex(built["bytecode"].removeprefix("0x")) + arguments


def deploy(tester: EthereumTester) -> str:
    """Deploys the token on a new embedded chain from the funding account's first nonce; its
    address (lower case). A chain on which it lands anywhere else, or fails, stops the caller:
    the default configuration would name a contract that is not there."""
    funder = Account.from_key(EMBEDDED_FUNDING_KEY)
    nonce = tester.get_nonce(funder.address)
    if nonce != 0:
        raise RuntimeError(f"the funding account of a new embedded chain is at nonce {nonce}, not 0")
    data = creation_code()
    base_fee = int(tester.get_block_by_number("latest")["base_fee_per_gas"])
    transaction = {
        "type": 2,
        "chainId": EMBEDDED_CHAIN_ID,
        "nonce": nonce,
        "to": b"",
        "value": 0,
        "data": data,
        "gas": tester.estimate_gas({"from": funder.address, "data": "0x" + data.hex()}),
        "maxFeePerGas": 2 * base_fee + PRIORITY_FEE_PER_GAS,
        "maxPriorityFeePerGas": PRIORITY_FEE_PER_GAS,
    }
    signed = funder.sign_transaction(transaction)
    receipt = tester.get_transaction_receipt(tester.send_raw_transaction("0x" + signed.raw_transaction.hex()))
    address = str(receipt["contract_address"] or "").lower()
    if receipt["status"] != 1 or address != EMBEDDED_TOKEN.contract:
        raise RuntimeError(
            f"the development token was deployed at {address or 'no address'} (status {receipt['status']}), "
            f"not at {EMBEDDED_TOKEN.contract}"
        )
    return address
