"""The block follower of one chain: reads blocks in order, records their numbers and hashes,
extracts native transfers and ERC-20 Transfer logs to watched addresses, confirms them at the
chain's depth, and on a parent-hash mismatch walks back to the common ancestor and rolls back.

Each block is one database transaction: the block row, its transfers, the transfers it confirms,
their outbox events and the follower's position commit together. A restart therefore resumes
after the last committed block and neither misses nor repeats an event.

Replicas of the service share one database, and exactly one of them follows a chain at a time: the
one holding the chain's lease (a row with holder and expiry, renewed at every tick). The others
stand by, reading only the head, and take the lease over once it expires (or is released by a
replica that stops). Every write transaction renews the lease first and gives up when it was lost,
so a replica that paused past its expiry writes nothing after another took over; with the
position check of each block, no block is applied twice nor skipped across a takeover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from svc.chain_gateway import convert, domain, events, store
from svc.chain_gateway.chain import BlockHeader, ChainAdapter
from svc.chain_gateway.domain import TransferKind, TransferStatus
from svc.kit.db import Database

log = logging.getLogger("finmesh.chain_gateway.follower")

# Within this many blocks of the head the follower is FOLLOWING, else CATCHING_UP.
CATCH_UP_THRESHOLD_BLOCKS = 10
# Failed ticks in a row before the follower reports STALLED.
STALL_TICKS = 3


class FollowerState(IntEnum):
    STARTING = 1
    CATCHING_UP = 2
    FOLLOWING = 3
    STALLED = 4
    STOPPED = 5


class ReorgTooDeep(RuntimeError):
    """No common ancestor within the configured depth: an operator must look."""


class InconsistentChain(RuntimeError):
    """A block's parent hash is not the hash the provider gives for the block below it, which
    is unchanged: a broken provider (or a race the next tick resolves), never a reorganisation."""


class LeaseLost(RuntimeError):
    """Another replica took the chain's follower lease over: this one stops writing."""


class ChainReplaced(RuntimeError):
    """The provider's genesis block is not the one followed so far (a non-development chain)."""


@dataclass(frozen=True)
class Position:
    number: int
    hash: str  # "" where the block below the first followed one was never recorded


def _now_us() -> int:
    return time.time_ns() // 1000


def replica_id() -> str:
    """Who holds a lease: host, process and a random part (two followers in one process differ)."""
    return f"{socket.gethostname()[:80]}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


class Follower:
    """Follows one chain in the background (`start`/`stop`) or one step at a time (`tick`)."""

    def __init__(self, database: Database, adapter: ChainAdapter, holder: str | None = None) -> None:
        self.database = database
        self.adapter = adapter
        self.chain = adapter.key
        self.config = adapter.config
        self.holder = holder or replica_id()
        self.leading = False
        self.state = FollowerState.STOPPED
        self.head_number = 0
        self._failed_ticks = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Checks the chain is the one followed so far (before the tracker's first pass, which
        must never act on records of a chain that was reset), then follows in the background."""
        if self._task is None:
            self.state = FollowerState.STARTING
            try:
                if await self._claim():
                    await self._check_genesis()
            except Exception:
                log.exception(
                    "genesis check failed; the follower retries", extra={"fields": {"chain": self.chain}}
                )
            self._task = asyncio.create_task(self._run(), name=f"chain-gateway-follower-{self.chain}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.state = FollowerState.STOPPED
        if self.leading:
            self.leading = False
            try:
                async with self.database.transaction() as session:
                    await store.release_lease(session, self.chain, self.holder, _now_us())
            except Exception:
                log.exception(
                    "follower lease not released; it expires", extra={"fields": {"chain": self.chain}}
                )

    async def _claim(self) -> bool:
        """Takes or renews the chain's lease; whether this replica follows the chain now."""
        async with self.database.transaction() as session:
            held = await store.claim_lease(session, self.chain, self.holder, _now_us(), self._lease_us())
        if held != self.leading:
            log.info(
                "follower lease taken over" if held else "follower lease lost: standing by",
                extra={"fields": {"chain": self.chain, "holder": self.holder}},
            )
        self.leading = held
        return held

    def _lease_us(self) -> int:
        return self.config.follower_lease_ms * 1000

    async def _fence(self, session: AsyncSession) -> None:
        """First statement of every write: the lease is still this replica's, and stays so until
        the transaction ends."""
        if not await store.renew_lease(session, self.chain, self.holder, _now_us(), self._lease_us()):
            self.leading = False
            raise LeaseLost(f"{self.chain}: the follower lease of {self.holder} was taken over")

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
                self._failed_ticks = 0
            except Exception:
                self._failed_ticks += 1
                if self._failed_ticks >= STALL_TICKS:
                    self.state = FollowerState.STALLED
                log.exception("follower tick failed", extra={"fields": {"chain": self.chain}})
            await asyncio.sleep(self.config.follower_poll_interval_ms / 1000)

    async def position(self) -> Position | None:
        async with self.database.transaction() as session:
            row = await store.follower(session, self.chain)
        return None if row is None else Position(row.last_block_number, row.last_block_hash)

    async def tick(self) -> int:
        """Applies up to the configured number of new blocks; returns how many (0 on a replica
        that stands by, which only reads the head to report the chain's follower state)."""
        async with self._lock:
            head = await self.adapter.head()
            self.head_number = head.number
            if not await self._claim():
                position = await self.position()
                self._report(head, position.number if position is not None else 0)
                return 0
            try:
                return await self._lead(head)
            except LeaseLost:
                log.warning("follower lease lost mid-tick", extra={"fields": {"chain": self.chain}})
                return 0

    async def _lead(self, head: BlockHeader) -> int:
        await self._check_genesis()
        position = await self.position()
        if position is None:
            position = await self._begin(head)
        applied = 0
        while applied < self.config.follower_blocks_per_tick_max:
            if position.number >= head.number:
                if position.hash and not await self._still_canonical(position):
                    position = await self._roll_back(position)
                    continue
                break
            found = await self.adapter.block_with_transactions(position.number + 1)
            if found is None:
                break
            header, transactions = found
            if position.hash and header.parent_hash != position.hash:
                position = await self._roll_back(position)
                continue
            position = await self._apply(position, header, transactions)
            applied += 1
        self._report(head, position.number)
        if applied < self.config.follower_blocks_per_tick_max:
            applied += await self._rescan(self.config.follower_blocks_per_tick_max - applied)
        return applied

    def _report(self, head: BlockHeader, last_block_number: int) -> None:
        behind = head.number - last_block_number
        self.state = (
            FollowerState.CATCHING_UP if behind > CATCH_UP_THRESHOLD_BLOCKS else FollowerState.FOLLOWING
        )

    async def _rescan(self, budget: int) -> int:
        """Scans earlier blocks for addresses added with a start block below the follower's
        position, up to `budget` blocks; the follower covers every later block itself."""
        async with self.database.transaction() as session:
            pending = await store.rescans(session, self.chain)
        scanned = 0
        for watched in pending:
            number = int(watched.rescan_next)
            while number <= watched.rescan_end and scanned < budget:
                found = await self.adapter.block_with_transactions(number)
                if found is None:
                    return scanned
                header, transactions = found
                transfers = await self._transfers(
                    header, transactions, {watched.address: watched.start_block}
                )
                now = _now_us()
                async with self.database.transaction() as session:
                    await self._fence(session)
                    current = await store.follower(session, self.chain, lock=True)
                    assert current is not None
                    recorded = await store.canonical_block(session, self.chain, number)
                    if recorded is not None and recorded.hash != header.hash:
                        return scanned  # a reorganisation the follower has yet to roll back
                    for values in transfers:
                        if await store.transfer_exists(session, values["transfer_id"], values["block_hash"]):
                            continue
                        values["seen_time_us"] = now
                        await store.insert_transfer(session, values)
                        await events.transfer_seen(
                            session,
                            convert.transfer_message(
                                _Row(values), domain.confirmations(header.number, current.last_block_number)
                            ),
                        )
                    await self._confirm(session, current.last_block_number, now)
                    await store.advance_rescan(
                        session, self.chain, watched.address, number + 1, watched.rescan_end
                    )
                number += 1
                scanned += 1
        return scanned

    async def _check_genesis(self) -> None:
        """Records the genesis hash on first use; a different one later means another chain: a
        development chain that was restarted empty is forgotten and followed afresh, any other
        chain stops the follower (STALLED) for an operator."""
        genesis = await self.adapter.block(0)
        assert genesis is not None
        async with self.database.transaction() as session:
            await self._fence(session)
            row = await store.follower(session, self.chain, lock=True)
            if row is None:
                return
            if not row.genesis_hash:
                await store.save_follower(session, self.chain, {"genesis_hash": genesis.hash})
                return
            if row.genesis_hash == genesis.hash:
                return
            if not self.config.development:
                self.state = FollowerState.STALLED
                raise ChainReplaced(f"{self.chain}: genesis {genesis.hash}, followed {row.genesis_hash}")
            await store.forget_chain(session, self.chain, _now_us())
        log.warning(
            "development chain was reset: following it afresh", extra={"fields": {"chain": self.chain}}
        )

    async def _begin(self, head: BlockHeader) -> Position:
        """A follower's first start: it follows from the current head on (a fresh deployment has
        no watched address with history); the head's parent is the position, hash unknown."""
        start = max(0, head.number - 1)
        genesis = await self.adapter.block(0)
        assert genesis is not None
        async with self.database.transaction() as session:
            await self._fence(session)
            await store.save_follower(
                session,
                self.chain,
                {
                    "last_block_number": start,
                    "last_block_hash": "",
                    "reorg_count": 0,
                    "last_reorg_depth": 0,
                    "last_reorg_time_us": None,
                    "update_time_us": _now_us(),
                    "genesis_hash": genesis.hash,
                },
            )
        return Position(start, "")

    async def _still_canonical(self, position: Position) -> bool:
        found = await self.adapter.block(position.number)
        return found is not None and found.hash == position.hash

    async def _apply(self, position: Position, header: BlockHeader, transactions: list[Any]) -> Position:
        async with self.database.transaction() as session:
            watched = await _watched_start_blocks(session, self.chain)
        found = await self._transfers(header, transactions, watched)
        now = _now_us()
        async with self.database.transaction() as session:
            await self._fence(session)
            current = await store.follower(session, self.chain, lock=True)
            assert current is not None
            if current.last_block_number != position.number or current.last_block_hash != position.hash:
                # Another follower of this chain moved on meanwhile: take its position.
                return Position(current.last_block_number, current.last_block_hash)
            if await _watched_start_blocks(session, self.chain) != watched:
                # An address was added (or removed) while the block was read: read it again, or
                # a new address's transfers in this very block would be missed.
                return position
            await store.insert_block(
                session,
                {
                    "chain": self.chain,
                    "hash": header.hash,
                    "number": header.number,
                    "parent_hash": header.parent_hash,
                    "block_time_us": header.timestamp_s * 1_000_000,
                    "status": int(domain.BlockStatus.CANONICAL),
                    "transfer_count": len(found),
                    "process_time_us": now,
                    "orphan_time_us": None,
                    "processor": self.holder,
                },
            )
            for values in found:
                values["seen_time_us"] = now
                await store.insert_transfer(session, values)
                row = _Row(values)
                await events.transfer_seen(
                    session, convert.transfer_message(row, domain.confirmations(header.number, header.number))
                )
            await self._confirm(session, header.number, now)
            await store.save_follower(
                session,
                self.chain,
                {"last_block_number": header.number, "last_block_hash": header.hash, "update_time_us": now},
            )
        return Position(header.number, header.hash)

    async def _confirm(self, session: AsyncSession, last: int, now: int) -> None:
        """Transfers whose block reached the depth with block `last` become CONFIRMED."""
        highest = last - self.config.confirmation_depth + 1
        if highest < 0:
            return
        for row in await store.transfers_to_confirm(session, self.chain, highest):
            await store.update_transfer(
                session, row.id, {"status": int(TransferStatus.CONFIRMED), "confirm_time_us": now}
            )
            confirmed = _Row(
                {**row._asdict(), "status": int(TransferStatus.CONFIRMED), "confirm_time_us": now}
            )
            await events.transfer_confirmed(
                session, convert.transfer_message(confirmed, domain.confirmations(row.block_number, last))
            )

    async def _transfers(
        self, header: BlockHeader, transactions: list[Any], watched: dict[str, int]
    ) -> list[dict[str, Any]]:
        """Native value and Transfer logs to addresses watched from this block on."""
        if not watched:
            return []
        recipients = [address for address, start in watched.items() if start <= header.number]
        if not recipients:
            return []
        wanted = set(recipients)
        found: list[dict[str, Any]] = []
        tokens = {asset.contract: asset.asset_id for asset in self.adapter.assets if asset.contract}
        base = {
            "chain": self.chain,
            "block_number": header.number,
            "block_hash": header.hash,
            "block_time_us": header.timestamp_s * 1_000_000,
        }
        for transaction in transactions:
            to_address = (transaction.get("to") or "").lower()
            value = int(transaction.get("value") or 0)
            if not to_address or value == 0 or to_address not in wanted:
                continue
            tx_hash = convert_hash(transaction["hash"])
            receipt = await self.adapter.receipt(tx_hash)
            if receipt is None or receipt.status != 1:
                continue  # a reverted transaction moved no value
            found.append(
                {
                    **base,
                    "transfer_id": domain.transfer_id(self.chain, tx_hash, domain.NATIVE_LOG_INDEX),
                    "tx_hash": tx_hash,
                    "log_index": domain.NATIVE_LOG_INDEX,
                    "kind": int(TransferKind.NATIVE),
                    "from_address": str(transaction["from"]).lower(),
                    "to_address": to_address,
                    "token_contract": "",
                    "asset": self.adapter.native.asset_id,
                    "amount": value,
                    "status": int(TransferStatus.SEEN),
                    "confirm_time_us": None,
                    "reorg_time_us": None,
                }
            )
        for entry in await self.adapter.transfer_logs(header.number, header.hash, recipients):
            topics = [convert_hash(topic) for topic in entry["topics"]]
            if len(topics) != 3 or entry.get("removed"):
                continue  # ERC-721 Transfer has the id indexed too: four topics
            tx_hash = convert_hash(entry["transactionHash"])
            log_index = int(entry["logIndex"])
            contract = str(entry["address"]).lower()
            data = entry["data"]
            raw = bytes(data) if not isinstance(data, str) else bytes.fromhex(data[2:])
            found.append(
                {
                    **base,
                    "transfer_id": domain.transfer_id(self.chain, tx_hash, log_index),
                    "tx_hash": tx_hash,
                    "log_index": log_index,
                    "kind": int(TransferKind.ERC20),
                    "from_address": domain.address_of_topic(topics[1]),
                    "to_address": domain.address_of_topic(topics[2]),
                    "token_contract": contract,
                    "asset": tokens.get(contract, ""),
                    "amount": int.from_bytes(raw[:32], "big") if raw else 0,
                    "status": int(TransferStatus.SEEN),
                    "confirm_time_us": None,
                    "reorg_time_us": None,
                }
            )
        return found

    async def _roll_back(self, position: Position) -> Position:
        """Walks back from `position` to the newest recorded block the chain still has, orphans
        everything above it and reports the transfers they carried as REORGED."""
        number = position.number
        ancestor: Position | None = None
        depth_max = self.config.reorg_depth_max
        while ancestor is None:
            async with self.database.transaction() as session:
                recorded = await store.canonical_block(session, self.chain, number)
            if recorded is None:
                ancestor = Position(number, "")
                break
            canonical = await self.adapter.block(number)
            if canonical is not None and canonical.hash == recorded.hash:
                ancestor = Position(number, recorded.hash)
                break
            if position.number - number >= depth_max:
                self.state = FollowerState.STALLED
                raise ReorgTooDeep(
                    f"{self.chain}: no common ancestor within {depth_max} blocks of {position.number}"
                )
            number -= 1
        if ancestor.number == position.number and ancestor.hash == position.hash:
            # Nothing to roll back: the block above does not follow from a block the chain still
            # has. Publishing a reorganisation of depth 0 (again on every tick) would be wrong.
            raise InconsistentChain(
                f"{self.chain}: block {position.number + 1} does not follow block {position.number} "
                f"({position.hash}), which the provider still reports"
            )
        now = _now_us()
        async with self.database.transaction() as session:
            await self._fence(session)
            current = await store.follower(session, self.chain, lock=True)
            assert current is not None
            orphaned = await store.orphan_blocks_above(session, self.chain, ancestor.number, now)
            depth = self.config.confirmation_depth
            for row in await store.transfers_in_blocks(session, self.chain, orphaned):
                was_confirmed = row.status == int(TransferStatus.CONFIRMED)
                await store.update_transfer(
                    session, row.id, {"status": int(TransferStatus.REORGED), "reorg_time_us": now}
                )
                reorged = _Row({**row._asdict(), "status": int(TransferStatus.REORGED), "reorg_time_us": now})
                await events.transfer_reorged(session, convert.transfer_message(reorged, 0), was_confirmed)
            await events.reorg_detected(
                session,
                self.chain,
                ancestor.number,
                ancestor.hash,
                orphaned,
                beyond_depth=len(orphaned) >= depth,
            )
            await store.save_follower(
                session,
                self.chain,
                {
                    "last_block_number": ancestor.number,
                    "last_block_hash": ancestor.hash,
                    "reorg_count": current.reorg_count + 1,
                    "last_reorg_depth": len(orphaned),
                    "last_reorg_time_us": now,
                    "update_time_us": now,
                },
            )
        log.warning(
            "reorganisation rolled back",
            extra={"fields": {"chain": self.chain, "ancestor": ancestor.number, "depth": len(orphaned)}},
        )
        return ancestor


class _Row:
    """Attribute access over a values dictionary (for messages built before a row is read back)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def convert_hash(value: Any) -> str:
    text = value if isinstance(value, str) else "0x" + bytes(value).hex()
    return text.lower()


async def _watched_start_blocks(session: AsyncSession, chain: str) -> dict[str, int]:
    rows = await session.execute(
        store.watched.select()
        .with_only_columns(store.watched.c.address, store.watched.c.start_block)
        .where(store.watched.c.chain == chain)
    )
    return {address: start for address, start in rows}
