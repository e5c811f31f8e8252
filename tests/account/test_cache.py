"""The balance cache in the real Redis: filled from ledger reads, moved forward by ledger events,
never backwards, and bypassed by `min_sequence`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from svc.account.cache import RedisCache
from svc.account.domain import Snapshot
from tests.account.conftest import Mesh, eventually, refused, start_mesh
from tests.harness.servers import RedisServer


@pytest.fixture
async def redis_mesh(database_url: str, tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Mesh]:
    """Ledger and account service with the balance cache in Redis."""
    running = await start_mesh(database_url, tmp_path, redis_url=redis_server.url)
    yield running
    await running.stop()


@pytest.mark.redis
async def test_redis_cache_follows_ledger_events(redis_mesh: Mesh, redis_server: RedisServer) -> None:
    mesh = redis_mesh
    account = (await mesh.open()).account
    first = await mesh.deposit(account.ledger_account_id, 500)
    assert (await mesh.balance(account.account_id, first.sequence)).balance.total == "500"
    cache = RedisCache(redis_server.url)
    try:
        cached = (await cache.get_many([account.account_id]))[account.account_id]
        assert cached.credits_posted == 500 and cached.sequence >= first.sequence
        # A snapshot older than the cached one is refused: the cache never goes back.
        assert not await cache.put(account.account_id, Snapshot(0, 1, 0, 0, 0, first.sequence - 1, 0))
        second = await mesh.deposit(account.ledger_account_id, 250)

        async def consumed() -> bool:
            found = await cache.get_many([account.account_id])
            return found[account.account_id].sequence >= second.sequence

        await eventually(consumed)
        balance = (await mesh.balance(account.account_id)).balance
        assert balance.total == "750" and balance.as_of_sequence == second.sequence
        # A newer snapshot written behind the service's back is served as is; min_sequence beyond
        # it forces a read from the ledger.
        assert await cache.put(account.account_id, Snapshot(0, 1, 0, 0, 0, second.sequence + 1, 0))
        assert (await mesh.balance(account.account_id)).balance.total == "1"
        other = (await mesh.open(user="u2")).account
        await mesh.deposit(other.ledger_account_id, 5)
        later = await mesh.deposit(other.ledger_account_id, 5)
        assert later.sequence > second.sequence + 1
        fresh = (await mesh.balance(account.account_id, later.sequence)).balance
        assert fresh.total == "750" and fresh.as_of_sequence >= later.sequence
        assert (await mesh.balance(account.account_id)).balance.total == "750"
        ahead = mesh.balance(account.account_id, later.sequence + 100)
        await refused(ahead, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    finally:
        await cache.close()
