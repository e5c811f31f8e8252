"""Tracks the transactions the gateway broadcast to their final status, and expires nonce
reservations that were neither broadcast nor released.

Per open transaction and pass: a receipt on the canonical chain makes it MINED (CONFIRMED at the
depth) or FAILED; a receipt that went away (reorganisation) makes it PENDING again; a nonce used
on chain by another transaction makes it REPLACED; a transaction no provider knows any more after
the drop timeout is DROPPED and rebroadcast (PENDING again if a node takes it back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from svc.chain_gateway import convert, domain, events, store
from svc.chain_gateway.chain import ChainAdapter
from svc.chain_gateway.domain import ReservationState, TxStatus
from svc.kit.db import Database

log = logging.getLogger("finmesh.chain_gateway.tracker")

TRACK_BATCH_MAX = 200
EXPIRE_BATCH_MAX = 100


def _now_us() -> int:
    return time.time_ns() // 1000


class Tracker:
    """One chain's transaction tracker and reservation expiry, in the background or by `tick`."""

    def __init__(self, database: Database, adapter: ChainAdapter, nonce_state: Any) -> None:
        self.database = database
        self.adapter = adapter
        self.chain = adapter.key
        self.config = adapter.config
        # (session, chain, address) -> NonceState message, from the servicer (for gap events).
        self.nonce_state = nonce_state
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"chain-gateway-tracker-{self.chain}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("tracker pass failed", extra={"fields": {"chain": self.chain}})
            await asyncio.sleep(self.config.tracker_interval_ms / 1000)

    async def tick(self) -> None:
        async with self._lock:
            await self._expire_reservations()
            async with self.database.transaction() as session:
                rows = await store.open_transactions(session, self.chain, TRACK_BATCH_MAX)
            if not rows:
                return
            head = (await self.adapter.head()).number
            chain_nonces: dict[str, int] = {}
            for row in rows:
                await self._track(row, head, chain_nonces)

    def _message(self, row: Any) -> Any:
        return convert.transaction_message(row, self.config.confirmation_depth, self.adapter.native.asset_id)

    async def _track(self, row: Any, head: int, chain_nonces: dict[str, int]) -> None:
        receipt = await self.adapter.receipt(row.tx_hash)
        now = _now_us()
        if receipt is not None:
            count = domain.confirmations(receipt.block_number, head)
            final = count >= self.config.confirmation_depth
            if receipt.status == 1:
                target = TxStatus.CONFIRMED if final else TxStatus.MINED
            else:
                target = TxStatus.FAILED
            values: dict[str, Any] = {
                "status": int(target),
                "confirmations": count,
                "block_number": receipt.block_number,
                "block_hash": receipt.block_hash,
                "gas_used": receipt.gas_used,
                "effective_gas_price": receipt.effective_gas_price,
                "failure_message": "reverted" if receipt.status != 1 else "",
            }
            if row.block_number != receipt.block_number or row.block_time_us is None:
                block = await self.adapter.block(receipt.block_number)
                values["block_time_us"] = block.timestamp_s * 1_000_000 if block else None
            if final:
                values["final_time_us"] = now
            await self._move(row, target, values, announce=final)
            if final or target is TxStatus.MINED:
                await self._replace_siblings(row)
            return
        if row.status in (int(TxStatus.MINED), int(TxStatus.FAILED)):
            await self._move(
                row,
                TxStatus.PENDING,
                {
                    "status": int(TxStatus.PENDING),
                    "confirmations": 0,
                    "block_number": 0,
                    "block_hash": "",
                    "gas_used": 0,
                    "effective_gas_price": None,
                    "block_time_us": None,
                    "failure_message": "",
                },
                announce=False,
            )
            return
        if row.from_address not in chain_nonces:
            chain_nonces[row.from_address] = (await self.adapter.nonces(row.from_address))[0]
        if chain_nonces[row.from_address] > row.nonce:
            return  # the nonce is used: a sibling's receipt marks this one REPLACED when it is read
        if now - row.last_broadcast_time_us < self.config.drop_timeout_ms * 1000:
            return
        if await self.adapter.known(row.tx_hash):
            return
        if row.status == int(TxStatus.PENDING):
            await self._move(
                row,
                TxStatus.DROPPED,
                {
                    "status": int(TxStatus.DROPPED),
                    "failure_message": "no provider knows the transaction any more",
                },
                announce=True,
            )
        try:
            await self.adapter.send_raw(bytes.fromhex(row.raw[2:]))
        except domain.TransactionRejected as refused:
            log.warning(
                "rebroadcast refused", extra={"fields": {"tx": row.tx_hash, "error": refused.message}}
            )
            return
        async with self.database.transaction() as session:
            await store.update_transaction(
                session,
                self.chain,
                row.tx_hash,
                {"status": int(TxStatus.PENDING), "last_broadcast_time_us": _now_us(), "failure_message": ""},
            )

    async def _replace_siblings(self, mined: Any) -> None:
        """Every other transaction of the platform with the mined one's sender and nonce."""
        async with self.database.transaction() as session:
            siblings = await store.same_nonce(session, self.chain, mined.from_address, mined.nonce)
            for sibling in siblings:
                if sibling.tx_hash == mined.tx_hash or sibling.status == int(TxStatus.REPLACED):
                    continue
                if sibling.status not in (int(TxStatus.PENDING), int(TxStatus.DROPPED)):
                    continue
                values = {
                    "status": int(TxStatus.REPLACED),
                    "replaced_by_tx_hash": mined.tx_hash,
                    "final_time_us": _now_us(),
                }
                await store.update_transaction(session, self.chain, sibling.tx_hash, values)
                updated = await store.transaction(session, self.chain, sibling.tx_hash)
                await events.transaction_replaced(session, self._message(updated))

    async def _move(self, row: Any, target: TxStatus, values: dict[str, Any], *, announce: bool) -> None:
        async with self.database.transaction() as session:
            current = await store.transaction(session, self.chain, row.tx_hash, lock=True)
            assert current is not None
            status = TxStatus(current.status)
            if not domain.tx_may_move(status, target):
                log.warning(
                    "transaction transition refused",
                    extra={"fields": {"tx": row.tx_hash, "from": status.name, "to": target.name}},
                )
                return
            changed = any(getattr(current, key) != value for key, value in values.items())
            if not changed:
                return
            await store.update_transaction(session, self.chain, row.tx_hash, values)
            updated = await store.transaction(session, self.chain, row.tx_hash)
            already_final = current.final_time_us is not None
            if announce and not (already_final and status is target):
                message = self._message(updated)
                if target is TxStatus.CONFIRMED:
                    await events.transaction_confirmed(session, message)
                elif target is TxStatus.FAILED:
                    await events.transaction_failed(session, message)
                elif target is TxStatus.DROPPED:
                    await events.transaction_dropped(session, message)

    async def _expire_reservations(self) -> None:
        now = _now_us()
        async with self.database.transaction() as session:
            expired = await store.expired_reservations(session, self.chain, now, EXPIRE_BATCH_MAX)
            senders: set[str] = set()
            for row in expired:
                await store.end_reservation(
                    session, row.reservation_id, ReservationState.EXPIRED, now, "reservation timeout"
                )
                senders.add(row.address)
            for address in sorted(senders):
                await self._announce_gaps(session, address)

    async def _announce_gaps(self, session: AsyncSession, address: str) -> None:
        state = await self.nonce_state(session, self.chain, address)
        if state.gap_nonces:
            await events.nonce_gap_detected(session, state, list(state.gap_nonces))
