"""Follower throughput: blocks and Transfer logs per second that the chain gateway's block follower
applies from a local Hardhat node, against a bare JSON-RPC scan of the same blocks.

A Hardhat node (tests/harness) with TestToken deployed (solc from npm) carries BLOCKS blocks made
before the clock starts, each with TOKEN_TRANSFERS_PER_BLOCK ERC-20 transfers and one native
transfer to WATCHED watched addresses. The follower (svc/chain_gateway/follower.py, the code the
service runs, with its provider pool and lease) applies them from its last position: per block it
reads the block with its transactions, the receipt of each native transfer to a watched address
and the block's Transfer logs to watched recipients, then writes the block, its transfers, the
confirmations and their outbox events and its position in one transaction. The baseline makes the
same JSON-RPC calls for the same blocks with the same HTTP client (web3's AsyncHTTPProvider over
aiohttp) and writes nothing: the ratio is the share of the bare scan's speed the follower keeps.
Both run once unmeasured (the node's caches), then the baseline, the follower and the baseline
again; the faster baseline counts.

Databases: SQLite (a file) and PostgreSQL with its durable defaults (tests/harness), each a fresh
database migrated by the service.

Figures (chain_follower/...): <db>_blocks_per_s, <db>_logs_per_s, <db>_ratio (follower blocks/s
over baseline blocks/s); baseline_blocks_per_s, baseline_logs_per_s.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from eth_account import Account
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as service
from sqlalchemy import func, select
from web3 import AsyncHTTPProvider, AsyncWeb3

from bench.results import Figure
from svc.chain_gateway import domain, store
from svc.chain_gateway.chain import ChainAdapter
from svc.chain_gateway.config import ChainConfig
from svc.chain_gateway.follower import Follower
from svc.kit.db import Database
from tests.chain_gateway.conftest import (
    CHAIN,
    TOKEN_SOURCE,
    Token,
    deploy_token,
    hardhat_chain,
    request_id,
    start_gateway,
)
from tests.harness.hardhat import HARDHAT_ACCOUNT_KEYS, HardhatNode, compile_solidity
from tests.harness.servers import PostgresServer

BLOCKS = int(os.environ.get("FINMESH_BENCH_FOLLOWER_BLOCKS", "200"))
TOKEN_TRANSFERS_PER_BLOCK = 4
WATCHED = 50
BLOCKS_PER_TICK = 1_000
GAS_TOKEN_TRANSFER = 100_000
GAS_NATIVE_TRANSFER = 21_000
MAX_FEE_PER_GAS = 100 * 10**9
PRIORITY_FEE_PER_GAS = 10**9
SCHEMA = "chain_gateway"


def _signed(key: str, nonce: int, to: str, value: int, data: bytes, gas: int) -> str:
    signed = Account.from_key(key).sign_transaction(
        {
            "chainId": 31337,
            "nonce": nonce,
            "to": AsyncWeb3.to_checksum_address(to),
            "value": value,
            "data": data,
            "gas": gas,
            "maxFeePerGas": MAX_FEE_PER_GAS,
            "maxPriorityFeePerGas": PRIORITY_FEE_PER_GAS,
            "type": 2,
        }
    )
    return "0x" + bytes(signed.raw_transaction).hex()


def _transfer_call(recipient: str, amount: int) -> bytes:
    selector = bytes.fromhex("a9059cbb")  # transfer(address,uint256)
    return selector + bytes(12) + bytes.fromhex(recipient[2:]) + amount.to_bytes(32, "big")


def _make_blocks(node: HardhatNode, token: Token, watched: list[str]) -> int:
    """BLOCKS blocks of transfers to the watched addresses; returns the Transfer logs made."""
    token_sender, native_sender = HARDHAT_ACCOUNT_KEYS[0], HARDHAT_ACCOUNT_KEYS[1]
    token_nonce = int(
        node.rpc("eth_getTransactionCount", [Account.from_key(token_sender).address, "pending"]), 16
    )
    native_nonce = int(
        node.rpc("eth_getTransactionCount", [Account.from_key(native_sender).address, "pending"]), 16
    )
    node.rpc("evm_setAutomine", [False])
    logs = 0
    try:
        for block in range(BLOCKS):
            for index in range(TOKEN_TRANSFERS_PER_BLOCK):
                recipient = watched[(block * TOKEN_TRANSFERS_PER_BLOCK + index) % len(watched)]
                data = _transfer_call(recipient, 1 + index)
                node.rpc(
                    "eth_sendRawTransaction",
                    [_signed(token_sender, token_nonce, token.address, 0, data, GAS_TOKEN_TRANSFER)],
                )
                token_nonce += 1
                logs += 1
            node.rpc(
                "eth_sendRawTransaction",
                [
                    _signed(
                        native_sender,
                        native_nonce,
                        watched[block % len(watched)],
                        1 + block,
                        b"",
                        GAS_NATIVE_TRANSFER,
                    )
                ],
            )
            native_nonce += 1
            node.rpc("evm_mine", [])
    finally:
        node.rpc("evm_setAutomine", [True])
    mined = node.rpc("eth_getBlockByNumber", ["latest", False])
    assert len(mined["transactions"]) == TOKEN_TRANSFERS_PER_BLOCK + 1, mined
    return logs


async def _scan(url: str, first: int, last: int, watched: list[str]) -> tuple[float, int]:
    """The bare scan: the follower's JSON-RPC calls for blocks first..last, no database.
    Returns (seconds, Transfer logs found)."""
    w3 = AsyncWeb3(AsyncHTTPProvider(url))
    wanted = set(watched)
    topics: list[Any] = [domain.ERC20_TRANSFER_TOPIC, None, [domain.topic_address(a) for a in watched]]
    logs = 0
    try:
        started = time.perf_counter()
        for number in range(first, last + 1):
            block: Any = await w3.eth.get_block(number, full_transactions=True)
            for transaction in block["transactions"]:
                to_address = str(transaction.get("to") or "").lower()
                if to_address in wanted and int(transaction["value"]):
                    receipt = await w3.eth.get_transaction_receipt(transaction["hash"])
                    assert receipt["status"] == 1
            found = await w3.eth.get_logs({"fromBlock": number, "toBlock": number, "topics": topics})
            logs += sum(
                1
                for entry in found
                if AsyncWeb3.to_hex(entry["blockHash"]) == AsyncWeb3.to_hex(block["hash"])
            )
        return time.perf_counter() - started, logs
    finally:
        await w3.provider.disconnect()


async def _prepared(database_url: str, directory: Path, config: ChainConfig, watched: list[str]) -> int:
    """Migrates the database and watches the addresses through the service, then stops it; its
    follower's position is where the measured follower starts. Returns that position."""
    gateway = await start_gateway(database_url, directory, {CHAIN: config})
    stub: Any = gateway.stub
    try:
        for address in watched:
            await stub.CreateWatchedAddress(
                service.CreateWatchedAddressRequest(
                    request_id=request_id("bench"), chain=CHAIN, address=address, owner="deposit"
                )
            )
    finally:
        await gateway.stop()
    database = Database(database_url, schema=SCHEMA)
    try:
        async with database.transaction() as session:
            row = await store.follower(session, CHAIN)
        assert row is not None
        return int(row.last_block_number)
    finally:
        await database.dispose()


async def _follow(database_url: str, config: ChainConfig, last: int) -> tuple[float, int, int]:
    """The follower from its position to block `last`: (seconds, blocks applied, transfers)."""
    database = Database(database_url, schema=SCHEMA)
    adapter = ChainAdapter(CHAIN, config)
    await adapter.pool.start()
    follower = Follower(database, adapter)
    try:
        position = await follower.position()
        assert position is not None
        applied = 0
        started = time.perf_counter()
        while (await follower.position()).number < last:  # type: ignore[union-attr]
            applied += await follower.tick()
        elapsed = time.perf_counter() - started
        async with database.transaction() as session:
            transfers = (
                await session.execute(
                    select(func.count()).select_from(store.transfers).where(store.transfers.c.chain == CHAIN)
                )
            ).scalar_one()
        return elapsed, applied, int(transfers)
    finally:
        await follower.stop()
        await adapter.pool.stop()
        await database.dispose()


async def _run(directory: Path, node: HardhatNode, postgres: PostgresServer) -> list[Figure]:
    artifact = compile_solidity(TOKEN_SOURCE, directory / "solc")["TestToken"]
    token = await deploy_token(node.url, artifact)
    config = hardhat_chain(
        node.url,
        token,
        follower_blocks_per_tick_max=BLOCKS_PER_TICK,
        follower_poll_interval_ms=600_000,  # the measured follower is driven by tick() alone
        follower_lease_ms=3_600_000,
    )
    watched = [Account.create().address.lower() for _ in range(WATCHED)]
    databases = {
        "sqlite": f"sqlite+aiosqlite:///{directory / 'follower.db'}",
        "postgresql": str(postgres.create_database(f"bench_{uuid.uuid4().hex[:12]}")),
    }
    figures: list[Figure] = []
    baselines: list[tuple[float, float]] = []
    detail: dict[str, Any] = {
        "blocks": BLOCKS,
        "logs_per_block": TOKEN_TRANSFERS_PER_BLOCK,
        "native_per_block": 1,
        "watched": WATCHED,
        "node": "hardhat 2 (npm), automine off while the blocks are made",
    }
    for name, url in databases.items():
        start = await _prepared(url, directory / name, config, watched)
        logs = _make_blocks(node, token, watched)
        last = int(node.rpc("eth_blockNumber"), 16)
        first = start + 1
        blocks = last - start
        assert blocks >= BLOCKS
        await _scan(node.url, first, last, watched)  # unmeasured: the node's caches
        before, scanned_logs = await _scan(node.url, first, last, watched)
        assert scanned_logs == logs
        seconds, applied, transfers = await _follow(url, config, last)
        after, _ = await _scan(node.url, first, last, watched)
        assert applied == blocks and transfers == logs + BLOCKS, (applied, blocks, transfers, logs)
        baseline = blocks / min(before, after)
        baselines.append((baseline, logs / min(before, after)))
        rate = blocks / seconds
        database_detail = {**detail, "database": name, "durable": name == "postgresql"}
        figures += [
            Figure("chain_follower", f"{name}_blocks_per_s", rate, "1/s", "", database_detail),
            Figure("chain_follower", f"{name}_logs_per_s", logs / seconds, "1/s", "", database_detail),
            Figure(
                "chain_follower",
                f"{name}_ratio",
                rate / baseline,
                "x",
                "",
                {**database_detail, "baseline_blocks_per_s": baseline},
            ),
        ]
    best_blocks, best_logs = max(baselines)
    figures += [
        Figure("chain_follower", "baseline_blocks_per_s", best_blocks, "1/s", "", detail),
        Figure("chain_follower", "baseline_logs_per_s", best_logs, "1/s", "", detail),
    ]
    return figures


def run() -> list[Figure]:
    node = HardhatNode().start()
    postgres = PostgresServer(durable=True).start()
    try:
        with tempfile.TemporaryDirectory(prefix="finmesh-bench-follower-") as directory:
            return asyncio.run(_run(Path(directory), node, postgres))
    finally:
        node.close()
        postgres.close()
