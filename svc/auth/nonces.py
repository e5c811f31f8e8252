"""The nonce store of signed requests: each (key, nonce) is accepted once within the replay
window. Redis when FINMESH_REDIS_URL is set (shared by every replica of the service, which is
what makes replay protection hold behind a load balancer); this process's memory otherwise (the
embedded default of a single process)."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import redis.asyncio as aioredis

KEY_PREFIX = "finmesh:auth:nonce:"
# A nonce is remembered a little longer than the window so a timestamp at the window's far edge
# still finds it.
RETENTION_MARGIN_S = 60
MEMORY_NONCES_MAX = 1_000_000


class NonceStore(Protocol):
    async def claim(self, api_key_id: str, nonce: str, ttl_s: int) -> bool:
        """True the first time (key, nonce) is claimed within ttl_s; False for a replay."""
        ...

    async def close(self) -> None: ...

    async def sweep(self) -> int:
        """Forgets expired nonces; how many."""
        ...


class MemoryNonceStore:
    """Nonces in this process, expiring; bounded so a flood cannot exhaust memory."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def claim(self, api_key_id: str, nonce: str, ttl_s: int) -> bool:
        key = f"{api_key_id}:{nonce}"
        now = time.monotonic()
        async with self._lock:
            if len(self._expiry) >= MEMORY_NONCES_MAX:
                self._expiry = {k: until for k, until in self._expiry.items() if until > now}
                if len(self._expiry) >= MEMORY_NONCES_MAX:
                    # Refusing is safe (the partner retries with a new nonce); forgetting is not.
                    return False
            until = self._expiry.get(key)
            if until is not None and until > now:
                return False
            self._expiry[key] = now + ttl_s + RETENTION_MARGIN_S
            return True

    async def close(self) -> None:
        self._expiry.clear()

    async def sweep(self) -> int:
        now = time.monotonic()
        async with self._lock:
            kept = {key: until for key, until in self._expiry.items() if until > now}
            removed = len(self._expiry) - len(kept)
            self._expiry = kept
        return removed


class RedisNonceStore:
    """Nonces in Redis: SET NX with an expiry, one atomic command per claim."""

    def __init__(self, url: str) -> None:
        self._client = aioredis.from_url(url)

    async def claim(self, api_key_id: str, nonce: str, ttl_s: int) -> bool:
        claimed = await self._client.set(
            f"{KEY_PREFIX}{api_key_id}:{nonce}", b"1", nx=True, ex=ttl_s + RETENTION_MARGIN_S
        )
        return bool(claimed)

    async def close(self) -> None:
        await self._client.aclose()

    async def sweep(self) -> int:
        return 0  # each key carries its own expiry (SET ... EX)


def make_nonce_store(redis_url: str) -> NonceStore:
    """Redis when a URL is configured, memory otherwise."""
    return RedisNonceStore(redis_url) if redis_url else MemoryNonceStore()
