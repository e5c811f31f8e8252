"""The balance cache: per account, the latest ledger snapshot seen (domain.Snapshot).

Writes are compare-and-set on the ledger sequence: a snapshot replaces the cached one only when
it is newer, so fills from ledger reads and updates from ledger events (which may arrive out of
order across partitions) can race freely and the cache only ever moves forward. Redis when
FINMESH_REDIS_URL is set (shared by every replica); this process's memory otherwise.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio as aioredis

from svc.account.domain import Snapshot

KEY_PREFIX = "finmesh:account:balance:"
# An entry nobody read or updated for this long is dropped; the next read fills it again.
ENTRY_TTL_S = 24 * 3600
MEMORY_ENTRIES_MAX = 100_000

# KEYS[1]: the entry; ARGV: the new sequence, the encoded snapshot, the TTL. Sequences stay far
# below 2^53, so Lua's numbers compare them exactly.
_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
    local sequence = tonumber(string.match(current, '^(%d+)|'))
    if sequence >= tonumber(ARGV[1]) then
        return 0
    end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


def encode(snapshot: Snapshot) -> str:
    """`sequence|time_us|debits_posted|credits_posted|debits_pending|credits_pending|frozen`."""
    return "|".join(
        str(value)
        for value in (
            snapshot.sequence,
            snapshot.time_us,
            snapshot.debits_posted,
            snapshot.credits_posted,
            snapshot.debits_pending,
            snapshot.credits_pending,
            snapshot.frozen,
        )
    )


def decode(text: str) -> Snapshot:
    """The snapshot of an encoded entry."""
    sequence, time_us, debits_posted, credits_posted, debits_pending, credits_pending, frozen = (
        int(part) for part in text.split("|")
    )
    return Snapshot(debits_posted, credits_posted, debits_pending, credits_pending, frozen, sequence, time_us)


class BalanceCache(Protocol):
    """Latest snapshot per account id."""

    async def get_many(self, account_ids: Sequence[str]) -> dict[str, Snapshot]:
        """The cached snapshots of those accounts that have one."""
        ...

    async def put(self, account_id: str, snapshot: Snapshot) -> bool:
        """Stores the snapshot unless a snapshot of the same or a later sequence is cached."""
        ...

    async def close(self) -> None:
        """Releases connections."""
        ...


class MemoryCache:
    """The cache in this process's memory, least recently used entries dropped beyond a bound."""

    def __init__(self, *, entries_max: int = MEMORY_ENTRIES_MAX) -> None:
        self.entries_max = entries_max
        self._entries: OrderedDict[str, Snapshot] = OrderedDict()

    async def get_many(self, account_ids: Sequence[str]) -> dict[str, Snapshot]:
        """The cached snapshots of those accounts that have one."""
        found = {}
        for account_id in account_ids:
            snapshot = self._entries.get(account_id)
            if snapshot is not None:
                self._entries.move_to_end(account_id)
                found[account_id] = snapshot
        return found

    async def put(self, account_id: str, snapshot: Snapshot) -> bool:
        """Stores the snapshot if it is newer than the cached one."""
        current = self._entries.get(account_id)
        if current is not None and current.sequence >= snapshot.sequence:
            return False
        self._entries[account_id] = snapshot
        self._entries.move_to_end(account_id)
        while len(self._entries) > self.entries_max:
            self._entries.popitem(last=False)
        return True

    async def close(self) -> None:
        """Nothing to release."""


class RedisCache:
    """The cache in Redis: one string per account, replaced by a compare-and-set script."""

    def __init__(self, url: str, *, ttl_s: int = ENTRY_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._client = aioredis.from_url(url, decode_responses=True)
        self._set_if_newer = self._client.register_script(_SET_IF_NEWER)

    async def get_many(self, account_ids: Sequence[str]) -> dict[str, Snapshot]:
        """The cached snapshots of those accounts that have one (one round trip)."""
        if not account_ids:
            return {}
        values = await self._client.mget([KEY_PREFIX + account_id for account_id in account_ids])
        return {
            account_id: decode(value if isinstance(value, str) else value.decode())
            for account_id, value in zip(account_ids, values, strict=True)
            if value is not None
        }

    async def put(self, account_id: str, snapshot: Snapshot) -> bool:
        """Stores the snapshot if it is newer than the cached one (atomically, in Redis)."""
        stored = await self._set_if_newer(
            keys=[KEY_PREFIX + account_id], args=[snapshot.sequence, encode(snapshot), self.ttl_s]
        )
        return bool(stored)

    async def close(self) -> None:
        """Closes the connection pool."""
        await self._client.aclose()


def make_cache(redis_url: str) -> BalanceCache:
    """Redis when a URL is configured, memory otherwise."""
    return RedisCache(redis_url) if redis_url else MemoryCache()
