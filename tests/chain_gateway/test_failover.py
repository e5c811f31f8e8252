"""Failover between two Hardhat nodes of one chain. The nodes are peers, kept in step by the
harness's PeerSync the way a network's gossip keeps real nodes in step: each block one has is
replayed on the other and comes out with the same hash. The primary node's process is stopped
mid-run while calls go on; they continue on the fallback; the primary is restarted empty on the
same port, catches up from its peer, is judged healthy and rejoins the rotation."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as service
from finmesh.events.v1 import chain_events_pb2
from web3 import AsyncHTTPProvider, AsyncWeb3

from svc.chain_gateway.config import ProviderConfig, ProviderRole
from tests.harness.hardhat import HARDHAT_ACCOUNT_KEYS, HardhatNode, PeerSync

from .conftest import (
    CHAIN,
    DEPTH,
    ETHER,
    HARDHAT_CHAIN_ID,
    Gateway,
    Token,
    build_sign_broadcast,
    deploy_token,
    eventually,
    hardhat_chain,
    request_id,
    start_gateway,
)

NATIVE = f"{CHAIN}:ETH"
# A fixed genesis date makes both nodes (and the primary after its restart) start from the same
# genesis block, so that replayed blocks have the same hashes.
INITIAL_DATE = "2026-01-01T00:00:00Z"
READ_INTERVAL_S = 0.02


@dataclass
class Peers:
    primary: HardhatNode
    fallback: HardhatNode
    sync: PeerSync
    token: Token

    async def in_step(self) -> bool:
        return await asyncio.to_thread(self.sync.in_step)


@pytest.fixture(scope="module")
async def peers(token_artifact: dict[str, Any]) -> AsyncIterator[Peers]:
    primary = HardhatNode(chain_id=HARDHAT_CHAIN_ID, initial_date=INITIAL_DATE)
    fallback = HardhatNode(chain_id=HARDHAT_CHAIN_ID, initial_date=INITIAL_DATE)
    sync = PeerSync([primary, fallback])
    try:
        primary.start()
        fallback.start()
        sync.start()
        token = await deploy_token(primary.url, token_artifact)
        running = Peers(primary, fallback, sync, token)
        await eventually(running.in_step)
        yield running
    finally:
        sync.stop()
        primary.close()
        fallback.close()


async def _providers(gateway: Gateway) -> dict[str, resources.Provider]:
    response = await gateway.stub.ListProviders(service.ListProvidersRequest(chain=CHAIN))
    return {provider.name: provider for provider in response.providers}


async def _fund(url: str, recipient: str, ether: int) -> None:
    """A real transfer from a pre-funded account (hardhat_setBalance makes no block, so a peer
    would never learn of it)."""
    funder = Account.from_key(HARDHAT_ACCOUNT_KEYS[1])
    w3 = AsyncWeb3(AsyncHTTPProvider(url))
    try:
        block = await w3.eth.get_block("latest")
        signed = funder.sign_transaction(
            {
                "chainId": HARDHAT_CHAIN_ID,
                "nonce": await w3.eth.get_transaction_count(funder.address, "pending"),
                "to": AsyncWeb3.to_checksum_address(recipient),
                "value": ether * ETHER,
                "gas": 21_000,
                "maxFeePerGas": 2 * int(block["baseFeePerGas"]) + 10**9,
                "maxPriorityFeePerGas": 10**9,
                "type": 2,
            }
        )
        receipt = await w3.eth.wait_for_transaction_receipt(
            await w3.eth.send_raw_transaction(signed.raw_transaction)
        )
        assert receipt["status"] == 1
    finally:
        await w3.provider.disconnect()


class Reader:
    """GetBalance at the head, over and over in the background: every call must succeed."""

    def __init__(self, gateway: Gateway, address: str) -> None:
        self.gateway = gateway
        self.address = address
        self.calls = 0
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.gateway.stub.GetBalance(
                    service.GetBalanceRequest(
                        chain=CHAIN,
                        query=service.BalanceQuery(address=self.address, asset=NATIVE),
                        block=service.BlockSelector(latest=True),
                    )
                )
                self.calls += 1
            except Exception as error:  # every failure is what the test reports
                self.failures.append(repr(error))
            await asyncio.sleep(READ_INTERVAL_S)


async def _balance(url: str, address: str) -> int:
    w3 = AsyncWeb3(AsyncHTTPProvider(url))
    try:
        return int(await w3.eth.get_balance(AsyncWeb3.to_checksum_address(address)))
    finally:
        await w3.provider.disconnect()


async def test_primary_node_stopped_mid_run_then_restarted_rejoins(
    database_url: str, tmp_path: Path, peers: Peers
) -> None:
    primary, fallback = peers.primary, peers.fallback
    providers = (
        ProviderConfig(
            name="primary", role=ProviderRole.PRIMARY, priority=0, endpoint=primary.url, timeout_ms=2_000
        ),
        ProviderConfig(
            name="fallback", role=ProviderRole.FALLBACK, priority=1, endpoint=fallback.url, timeout_ms=2_000
        ),
    )
    gateway = await start_gateway(
        database_url,
        tmp_path,
        # A node more than a block behind its peer is out of rotation until it has caught up.
        {CHAIN: hardhat_chain(primary.url, peers.token, providers=providers, lag_blocks_max=1)},
    )
    reader: Reader | None = None
    try:
        listed = await _providers(gateway)
        assert [(listed[name].health, listed[name].in_rotation) for name in ("primary", "fallback")] == [
            (resources.PROVIDER_HEALTH_HEALTHY, True)
        ] * 2
        sender = Account.create()
        recipient = Account.create().address
        await _fund(primary.url, sender.address, 10)
        await gateway.stub.CreateWatchedAddress(
            service.CreateWatchedAddressRequest(
                request_id=request_id("watch"), chain=CHAIN, address=recipient, owner="deposit"
            )
        )
        _, first = await build_sign_broadcast(gateway, sender, recipient, NATIVE, 1)
        await eventually(peers.in_step)

        reader = Reader(gateway, recipient)
        reader.start()
        await asyncio.sleep(0.2)
        await asyncio.to_thread(primary.stop)
        assert not primary.alive()
        # The primary's process is gone: builds, broadcasts and reads go on through the fallback.
        hashes = [first.transaction.tx_hash]
        for amount in (2, 3):
            _, sent = await build_sign_broadcast(gateway, sender, recipient, NATIVE, amount)
            hashes.append(sent.transaction.tx_hash)
        listed = await _providers(gateway)
        assert (listed["primary"].health, listed["primary"].in_rotation) == (
            resources.PROVIDER_HEALTH_UNREACHABLE,
            False,
        )
        assert listed["primary"].last_error and listed["fallback"].in_rotation
        assert await _balance(fallback.url, recipient) == 6
        calls_while_down = reader.calls

        # Restarted on the same port, empty: it catches up from its peer, block by block.
        replayed_before = len(peers.sync.replayed)
        fallback_head = int(fallback.rpc("eth_blockNumber"), 16)
        await asyncio.to_thread(primary.start)
        assert primary.alive()

        async def rejoined() -> bool:
            found = await _providers(gateway)
            primary_now = found["primary"]
            return primary_now.in_rotation and primary_now.health == resources.PROVIDER_HEALTH_HEALTHY

        await eventually(rejoined)
        await eventually(peers.in_step)
        rebuilt = [number for url, number in peers.sync.replayed[replayed_before:] if url == primary.url]
        assert rebuilt == list(range(1, fallback_head + 1)), peers.sync.replayed
        assert reader.calls > calls_while_down
        await reader.stop()
        assert reader.failures == [] and calls_while_down > 0

        async def same_head() -> bool:
            found = await _providers(gateway)
            return found["primary"].head_block_number == found["fallback"].head_block_number == fallback_head

        await eventually(same_head)
        assert await _balance(primary.url, recipient) == 6

        # Back first in rotation: with the peers' sync paused, a broadcast lands on the primary.
        peers.sync.stop()
        try:
            _, last = await build_sign_broadcast(gateway, sender, recipient, NATIVE, 4)
            hashes.append(last.transaction.tx_hash)
            balances = (await _balance(primary.url, recipient), await _balance(fallback.url, recipient))
            assert balances == (10, 6)
        finally:
            peers.sync.start()
        await eventually(peers.in_step)
        assert await _balance(fallback.url, recipient) == 10

        changes = await gateway.events(chain_events_pb2.ChainProviderHealthChanged)
        primary_changes = [
            (change.previous_health, change.provider.health)
            for change in changes
            if change.provider.name == "primary"
        ]
        went_away = primary_changes.index(
            (resources.PROVIDER_HEALTH_HEALTHY, resources.PROVIDER_HEALTH_UNREACHABLE)
        )
        assert primary_changes[-1][1] == resources.PROVIDER_HEALTH_HEALTHY
        assert len(primary_changes) > went_away + 1

        # The follower followed across the outage: each transfer seen once, confirmed once.
        primary.rpc("hardhat_mine", [hex(DEPTH)])

        async def all_confirmed() -> bool:
            found = await gateway.stub.ListTransfers(
                service.ListTransfersRequest(chain=CHAIN, to_address=recipient)
            )
            return len(found.transfers) == len(hashes) and all(
                transfer.status == resources.TRANSFER_STATUS_CONFIRMED for transfer in found.transfers
            )

        await eventually(all_confirmed)
        for event_type in (chain_events_pb2.ChainTransferSeen, chain_events_pb2.ChainTransferConfirmed):
            counted = Counter(
                event.transfer.tx_hash
                for event in await gateway.events(event_type)
                if event.transfer.to_address == recipient.lower()
            )
            assert counted == Counter(hashes), event_type
        await eventually(peers.in_step)
    finally:
        if reader is not None:
            await reader.stop()
        await gateway.stop()
    peers.sync.check()
