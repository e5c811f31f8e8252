"""Auth housekeeping: rows whose secrets can no longer be used are deleted a day after they
expired (the day keeps them for support and for a refresh token's reuse report), in batches, by
the kit's periodic rounds: refresh tokens, login challenges, step-up tokens, password reset codes
and sealed replays; the in-memory nonce store drops expired nonces (Redis expires them itself)."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import Table, delete, select

from svc.auth import resets, store
from svc.auth.nonces import NonceStore
from svc.kit.db import Database

log = logging.getLogger(__name__)

RETENTION_US = 86_400 * 1_000_000
BATCH_ROWS = 1_000
SWEEP_INTERVAL_S = 300.0


def _key_columns(table: Table) -> list[Any]:
    return list(table.primary_key.columns)


async def _sweep_table(database: Database, table: Table, before_us: int) -> int:
    """Deletes up to BATCH_ROWS rows of `table` that expired before `before_us`."""
    keys = _key_columns(table)
    async with database.transaction() as session:
        doomed = (
            await session.execute(select(*keys).where(table.c.expire_time_us < before_us).limit(BATCH_ROWS))
        ).all()
        for row in doomed:
            await session.execute(
                delete(table).where(*(key == value for key, value in zip(keys, row, strict=True)))
            )
    return len(doomed)


async def sweep(database: Database, nonces: NonceStore, now_us: int | None = None) -> dict[str, int]:
    """One round: how many rows of each kind were deleted (a full batch is swept again next round)."""
    before_us = (now_us if now_us is not None else time.time_ns() // 1000) - RETENTION_US
    tables = (store.refresh_tokens, store.challenges, store.step_ups, resets.resets, store.replays)
    removed = {table.name: await _sweep_table(database, table, before_us) for table in tables}
    removed["nonces"] = await nonces.sweep()
    if any(removed.values()):
        log.info("auth housekeeping", extra={"fields": removed})
    return removed
