"""Replicas of the chain gateway on one database: the chain's follower lease lets exactly one of
them apply blocks; when it stops (or crashes and its lease runs out), another takes over, and no
event is missed or repeated across the handover."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from eth_account import Account
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as service
from finmesh.events.v1 import chain_events_pb2
from sqlalchemy import select
from sqlalchemy.engine import Row
from web3 import AsyncWeb3

from svc.chain_gateway import store
from svc.chain_gateway.domain import BlockStatus
from svc.kit.db import Database
from tests.harness.hardhat import HardhatNode
from tests.harness.process import free_port

from .conftest import (
    CHAIN,
    DEPTH,
    Gateway,
    Token,
    eventually,
    funded_account,
    hardhat_chain,
    mine,
    request_id,
    send_token,
    start_gateway,
)
from .test_follower import _send_native

LEASE_MS = 3_000
SCHEMA = "chain_gateway"


async def _status(gateway: Gateway) -> resources.FollowerStatus:
    response = await gateway.stub.GetFollowerStatus(service.GetFollowerStatusRequest(chain=CHAIN))
    return response.status


async def _started(gateway: Gateway) -> None:
    async def recorded() -> bool:
        return (await _status(gateway)).last_block_number > 0

    await eventually(recorded)


async def _lease(gateway: Gateway) -> Row[Any]:
    async with gateway.app.database.transaction() as session:
        row = await store.lease(session, CHAIN)
    assert row is not None
    return row


async def _blocks(gateway: Gateway) -> list[Row[Any]]:
    async with gateway.app.database.transaction() as session:
        rows = await session.execute(
            select(store.blocks.c.number, store.blocks.c.processor, store.blocks.c.process_time_us)
            .where(store.blocks.c.chain == CHAIN, store.blocks.c.status == int(BlockStatus.CANONICAL))
            .order_by(store.blocks.c.number)
        )
        return list(rows)


async def _watch(gateway: Gateway, address: str) -> None:
    await gateway.stub.CreateWatchedAddress(
        service.CreateWatchedAddressRequest(
            request_id=request_id("watch"), chain=CHAIN, address=address, owner="deposit"
        )
    )


async def _events_to(gateway: Gateway, event_type: Any, address: str) -> Counter[str]:
    return Counter(
        event.transfer.tx_hash
        for event in await gateway.events(event_type)
        if event.transfer.to_address == address.lower()
    )


def _contiguous(blocks: list[Row[Any]]) -> bool:
    numbers = [block.number for block in blocks]
    return numbers == list(range(numbers[0], numbers[0] + len(numbers)))


async def test_one_replica_follows_and_another_takes_over_when_it_stops(
    database_url: str, tmp_path: Path, hardhat_node: HardhatNode, token: Token, web3: AsyncWeb3[Any]
) -> None:
    chains = {CHAIN: hardhat_chain(hardhat_node.url, token, follower_lease_ms=LEASE_MS)}
    first = await start_gateway(database_url, tmp_path / "first", chains)
    second: Gateway | None = None
    first_running = True
    try:
        await _started(first)
        second = await start_gateway(database_url, tmp_path / "second", chains, port=free_port())
        watched = Account.create().address
        await _watch(second, watched)  # any replica serves the API; one follows
        sender = await funded_account(web3)
        native, _ = await _send_native(web3, sender, watched, 1)
        hashes = [native, await send_token(web3, token, watched, 2)]
        await mine(web3, 2)

        async def seen(count: int) -> bool:
            events = await _events_to(second, chain_events_pb2.ChainTransferSeen, watched)
            return sum(events.values()) >= count

        await eventually(lambda: seen(2))
        leader = (await _lease(first)).holder
        blocks = await _blocks(first)
        assert {block.processor for block in blocks} == {leader}
        assert _contiguous(blocks)
        standby = await _status(second)
        assert standby.state == resources.FOLLOWER_STATE_FOLLOWING

        async def standby_agrees() -> bool:  # the leader may apply a block between the two reads
            return (await _status(second)).last_block_number == (await _status(first)).last_block_number

        await eventually(standby_agrees)

        # A transfer the leader may or may not get to before it stops, and one after.
        hashes.append((await _send_native(web3, sender, watched, 3))[0])
        first_running = False
        await first.stop()
        hashes.append((await _send_native(web3, sender, watched, 4))[0])
        await mine(web3, DEPTH)

        async def all_confirmed() -> bool:
            events = await _events_to(second, chain_events_pb2.ChainTransferConfirmed, watched)
            return sum(events.values()) >= len(hashes)

        await eventually(all_confirmed)
        await mine(web3, 2)
        head = await web3.eth.block_number

        async def caught_up() -> bool:
            return (await _status(second)).last_block_number >= head

        await eventually(caught_up)
        taken_over = await _lease(second)
        assert taken_over.holder != leader
        blocks = await _blocks(second)
        processors = [block.processor for block in blocks]
        # One handover: the first replica's blocks, then the second's, each block applied once.
        handover = processors.index(taken_over.holder)
        assert set(processors[:handover]) == {leader} and set(processors[handover:]) == {taken_over.holder}
        assert _contiguous(blocks) and blocks[-1].number >= head
        for event_type in (chain_events_pb2.ChainTransferSeen, chain_events_pb2.ChainTransferConfirmed):
            assert await _events_to(second, event_type, watched) == Counter(hashes), event_type
    finally:
        if first_running:
            await first.stop()
        if second is not None:
            await second.stop()


async def test_the_lease_of_a_crashed_replica_is_taken_over_once_it_expires(
    database_url: str, tmp_path: Path, hardhat_node: HardhatNode, token: Token, web3: AsyncWeb3[Any]
) -> None:
    chains = {CHAIN: hardhat_chain(hardhat_node.url, token, follower_lease_ms=LEASE_MS)}
    watched = Account.create().address
    first = await start_gateway(database_url, tmp_path / "first", chains)
    try:
        await _started(first)
        await _watch(first, watched)
    finally:
        await first.stop()
    # What a replica that crashed leaves behind: its lease, unexpired, never to be renewed.
    database = Database(database_url, schema=SCHEMA)
    try:
        async with database.transaction() as session:
            crashed_at = time.time_ns() // 1000
            assert await store.claim_lease(session, CHAIN, "crashed-replica", crashed_at, LEASE_MS * 1000)
    finally:
        await database.dispose()
    sender = await funded_account(web3)
    hashes = [(await _send_native(web3, sender, watched, amount))[0] for amount in (5, 6)]
    await mine(web3, DEPTH)
    second = await start_gateway(database_url, tmp_path / "second", chains)
    try:

        async def all_confirmed() -> bool:
            events = await _events_to(second, chain_events_pb2.ChainTransferConfirmed, watched)
            return sum(events.values()) >= len(hashes)

        await eventually(all_confirmed)
        holder = (await _lease(second)).holder
        assert holder != "crashed-replica"
        later = [block for block in await _blocks(second) if block.processor == holder]
        assert later and min(block.process_time_us for block in later) >= crashed_at + LEASE_MS * 1000
        for event_type in (chain_events_pb2.ChainTransferSeen, chain_events_pb2.ChainTransferConfirmed):
            assert await _events_to(second, event_type, watched) == Counter(hashes), event_type
    finally:
        await second.stop()


async def test_a_lease_is_held_by_one_holder_renewed_by_it_and_free_once_expired(
    database_url: str, tmp_path: Path
) -> None:
    """The lease queries on each backend, the clock given: the rules every replica relies on."""
    gateway = await start_gateway(database_url, tmp_path, {})
    await gateway.stop()  # only for its migrations
    database = Database(database_url, schema=SCHEMA)
    duration = 1_000
    try:
        async with database.transaction() as session:
            assert await store.claim_lease(session, "x", "a", 10_000, duration)
        async with database.transaction() as session:
            assert not await store.claim_lease(session, "x", "b", 10_500, duration)
            assert await store.claim_lease(session, "x", "a", 10_600, duration)  # renewal: until 11_600
            assert not await store.claim_lease(session, "x", "b", 11_599, duration)
        async with database.transaction() as session:
            assert await store.claim_lease(session, "x", "b", 11_600, duration)
            # The old holder is fenced off: it can neither renew nor claim back an unexpired lease.
            assert not await store.renew_lease(session, "x", "a", 11_700, duration)
            assert not await store.claim_lease(session, "x", "a", 11_700, duration)
            assert await store.renew_lease(session, "x", "b", 11_700, duration)
            row = await store.lease(session, "x")
            assert row is not None
            assert (row.holder, row.acquire_time_us, row.expire_time_us) == ("b", 11_600, 12_700)
            await store.release_lease(session, "x", "a", 11_800)  # not its lease: no effect
            assert not await store.claim_lease(session, "x", "a", 11_800, duration)
            await store.release_lease(session, "x", "b", 11_900)
            assert await store.claim_lease(session, "x", "a", 11_900, duration)
            assert await store.claim_lease(session, "y", "b", 11_900, duration)  # per chain
    finally:
        await database.dispose()
