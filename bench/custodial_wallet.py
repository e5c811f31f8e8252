"""The custodial wallet's two money paths against the ledger's own posting rate, in one run.

The whole custodial-wallet profile runs as separate processes with mTLS (`finmesh run`, as in
tests/e2e) on the harness's real servers: PostgreSQL, Kafka, Redis, two Hardhat nodes and a
SoftHSM2 token. USERS people register through the REST edge and each gets a deposit address.

- deposits: with the node's automine off, DEPOSITS transfers from outside accounts to those
  addresses are sent and then mined in one block followed by the chain's confirmation depth;
  the clock runs from that first block until every deposit is CREDITED in the ledger (the
  users' balances through the edge add up to the burst). The path measured: the chain gateway's
  follower reads the block, its events cross Kafka, the deposit service records, waits for depth
  and credits the ledger, and the account service's cache shows it.
- transfers: CONCURRENCY clients post TRANSFERS internal transfers between those users through
  the REST edge (each one: the gateway, the wallet service, the ledger, the account service).
- ledger: the ledger itself (`finmesh serve ledger`, no TLS, on its own database of the same
  PostgreSQL server) posting SINGLE_ENTRIES one-entry CreateJournalEntry calls at CONCURRENCY
  clients (bench/ledger.py's single-entry run): every deposit credit and every internal transfer
  above is one such entry.

Figures (custodial_wallet/...): deposits_vs_ledger = deposits credited per second / ledger
entries per second; transfers_vs_ledger = internal transfers per second through the edge /
ledger entries per second. The detail holds the rates. After the runs the users' balances must
add up to the burst (transfers move money, never create it); a mismatch raises.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint

from bench import ledger as ledger_bench
from bench.results import Figure
from tests.e2e.conftest import (
    CHAIN_A,
    CHAIN_A_ID,
    CHAIN_B,
    CHAIN_B_ID,
    DEPTH,
    ETHER,
    TOKEN_SOURCE,
    Chain,
    deploy_token,
    platform_environment,
)
from tests.harness.hardhat import HardhatNode, compile_solidity
from tests.harness.servers import KafkaBroker, PostgresServer, RedisServer
from tests.harness.softhsm import SoftHsmToken
from tools.demo.edge import Person, rid, wait_for
from tools.demo.platform import bring_up, hot_wallet_environment

USERS = 10
DEPOSITS = 100
DEPOSIT_AMOUNT = ETHER // 1000
TRANSFERS = 200
TRANSFER_AMOUNT = 10**9
CONCURRENCY = 8
CREDIT_TIMEOUT_S = 600.0
NATIVE = f"{CHAIN_A}:ETH"


@contextmanager
def _started(resource: Any) -> Iterator[Any]:
    try:
        resource.start()
        yield resource
    finally:
        resource.close()


def _rpc(chain: Chain, method: str, params: list[Any]) -> Any:
    answer = chain.web3.provider.make_request(RPCEndpoint(method), params)
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def _available(person: Person) -> int:
    listed = person.get(f"/v1/users/me/wallets/{CHAIN_A}/balances", params={"includeZero": "true"})
    rows = {row["asset"]["id"]: row for row in listed.get("balances", [])}
    return int(rows.get(NATIVE, {}).get("available", "0"))


def _people(edge: Any) -> list[tuple[Person, str]]:
    people = []
    for number in range(USERS):
        person = Person(edge, f"bench-{number}-{uuid.uuid4().hex[:6]}@example.com", registration_id=rid("r"))
        person.register(f"Bench {number}")
        person.login()
        wallet = person.post("/v1/users/me/wallets", {"requestId": rid("wallet"), "chain": CHAIN_A})["wallet"]
        people.append((person, wallet["depositAddress"]["address"]))
    return people


def _deposit_burst(chain: Chain, people: list[tuple[Person, str]]) -> float:
    """Seconds from the block holding the burst until every deposit shows in the balances."""
    w3 = chain.web3
    sender = Account.create()
    _rpc(chain, "hardhat_setBalance", [sender.address, hex(10 * ETHER)])
    _rpc(chain, "evm_setAutomine", [False])
    try:
        nonce = w3.eth.get_transaction_count(sender.address, "pending")
        for number in range(DEPOSITS):
            address = people[number % len(people)][1]
            transaction = {
                "chainId": w3.eth.chain_id,
                "nonce": nonce + number,
                "to": Web3.to_checksum_address(address),
                "value": DEPOSIT_AMOUNT,
                "gas": 21_000,
                "maxFeePerGas": 100 * 10**9,
                "maxPriorityFeePerGas": 10**9,
            }
            w3.eth.send_raw_transaction(sender.sign_transaction(transaction).raw_transaction)
        began = time.perf_counter()
        chain.mine(1 + DEPTH)
    finally:
        _rpc(chain, "evm_setAutomine", [True])
    each = DEPOSITS // len(people)

    def credited() -> bool:
        return all(_available(person) == each * DEPOSIT_AMOUNT for person, _ in people)

    wait_for("every deposit of the burst credited", credited, timeout_s=CREDIT_TIMEOUT_S, interval_s=0.2)
    return time.perf_counter() - began


def _transfers(people: list[tuple[Person, str]]) -> float:
    """Seconds for TRANSFERS internal transfers from CONCURRENCY clients through the edge."""
    persons = [person for person, _ in people]

    def transfer(number: int) -> None:
        source = persons[number % len(persons)]
        target = persons[(number + 1) % len(persons)]
        source.post(
            f"/v1/users/me/wallets/{CHAIN_A}/internal_transfers",
            {
                "requestId": rid("transfer"),
                "toUserId": target.user_id,
                "amount": {"asset": NATIVE, "amount": str(TRANSFER_AMOUNT)},
            },
        )

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        list(pool.map(transfer, range(TRANSFERS)))
    return time.perf_counter() - began


def _ledger_rate(server: PostgresServer, scratch: Path) -> float:
    """Entries per second of the ledger alone: one-entry calls at CONCURRENCY clients."""
    bench = ledger_bench.LedgerBench(
        server, server.create_database(f"ledger_{uuid.uuid4().hex[:8]}"), scratch
    )

    async def measure() -> ledger_bench.Run:
        await bench.run(bench.setup)
        return await bench.run(lambda stub: bench.singles(stub, hot=False, label="wallet-baseline"))

    return asyncio.run(measure()).rate


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as scratch_dir, ExitStack() as stack:
        scratch = Path(scratch_dir)
        postgres = stack.enter_context(_started(PostgresServer()))
        kafka = stack.enter_context(_started(KafkaBroker()))
        redis = stack.enter_context(_started(RedisServer()))
        nodes = [stack.enter_context(_started(HardhatNode(chain_id=i))) for i in (CHAIN_A_ID, CHAIN_B_ID)]
        hsm = SoftHsmToken().start()
        stack.callback(hsm.close)
        chains = {
            key: Chain(key, node, Web3(HTTPProvider(node.url)))
            for key, node in zip((CHAIN_A, CHAIN_B), nodes, strict=True)
        }
        artifact = compile_solidity(TOKEN_SOURCE, scratch / "solc")["TestToken"]
        token = deploy_token(chains[CHAIN_A], artifact)
        environment = platform_environment(
            postgres.create_database(f"wallet_{uuid.uuid4().hex[:8]}"),
            kafka,
            redis,
            hsm,
            chains,
            token,
            Ed25519PrivateKey.generate(),
            Ed25519PrivateKey.generate(),
        )
        platform = bring_up(
            scratch / "var", environment, [CHAIN_A, CHAIN_B], hot_wallet_environment([CHAIN_A, CHAIN_B])
        )
        stack.callback(platform.stop)
        people = _people(platform.edge)
        deposit_s = _deposit_burst(chains[CHAIN_A], people)
        transfer_s = _transfers(people)
        total = sum(_available(person) for person, _ in people)
        if total != DEPOSITS * DEPOSIT_AMOUNT:
            raise RuntimeError(
                f"the users hold {total} after the transfers; the burst was {DEPOSITS * DEPOSIT_AMOUNT}"
            )
        ledger_per_s = _ledger_rate(postgres, scratch)
    deposits_per_s = DEPOSITS / deposit_s
    transfers_per_s = TRANSFERS / transfer_s
    detail = {
        "users": USERS,
        "deposits": DEPOSITS,
        "deposits_per_s": round(deposits_per_s, 2),
        "deposit_burst_s": round(deposit_s, 2),
        "transfers": TRANSFERS,
        "transfers_per_s": round(transfers_per_s, 2),
        "concurrency": CONCURRENCY,
        "ledger_entries_per_s": round(ledger_per_s, 1),
        "ledger_entries": ledger_bench.SINGLE_ENTRIES,
    }
    return [
        Figure("custodial_wallet", "deposits_vs_ledger", deposits_per_s / ledger_per_s, "ratio", "", detail),
        Figure("custodial_wallet", "transfers_vs_ledger", transfers_per_s / ledger_per_s, "ratio", "", {}),
    ]
