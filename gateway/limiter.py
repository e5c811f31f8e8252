"""Rate limits: token buckets per client IP, per user, and per route where configured.

Defaults from the architecture document: 100 requests/s per user, 1,000 per IP. Buckets live in
Redis when FINMESH_REDIS_URL is set, so every gateway replica draws from the same bucket: one Lua
script refills and takes a token atomically, on Redis's clock, so replicas need no common clock.
Without Redis (the embedded default, one replica) they live in this process. If Redis fails, the
replica falls back to its own buckets rather than letting every request through.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config import GatewaySettings

log = logging.getLogger("finmesh.gateway.limiter")

# Bounds the in-process table; the least recently used bucket goes first (it is full again by then
# for any sane rate, so forgetting it changes nothing).
MEMORY_BUCKETS_MAX = 100_000
KEY_PREFIX = "finmesh:gateway:rl:"

# KEYS[1] bucket; ARGV rate (tokens/s), burst. Returns the seconds to wait as a string ("0": taken).
TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(math.max(now, ts)))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class Buckets(Protocol):
    async def take(self, key: str, rate_per_s: float, burst: int) -> float:
        """Takes one token; 0 if taken, else the seconds until one is available."""


class MemoryBuckets:
    """Token buckets in this process, on an injectable monotonic clock."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_keys: int = MEMORY_BUCKETS_MAX
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, key: str, rate_per_s: float, burst: int) -> float:
        now = self._clock()
        tokens, stamp = self._buckets.pop(key, (float(burst), now))
        tokens = min(float(burst), tokens + max(0.0, now - stamp) * rate_per_s)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / rate_per_s
        self._buckets[key] = (tokens, max(now, stamp))
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait


class RedisBuckets:
    """Token buckets in Redis, shared by every replica; falls back to `fallback` when Redis fails."""

    def __init__(self, client: Any, fallback: Buckets) -> None:
        self._client = client
        self._script = client.register_script(TAKE_SCRIPT)
        self._fallback = fallback

    async def take(self, key: str, rate_per_s: float, burst: int) -> float:
        try:
            raw = await self._script(keys=[KEY_PREFIX + key], args=[repr(rate_per_s), burst])
        except Exception as error:  # any Redis failure: connection, timeout, script error
            log.warning(
                "redis rate limiter unavailable, using local buckets", extra={"fields": {"error": str(error)}}
            )
            return await self._fallback.take(key, rate_per_s, burst)
        return float(raw.decode() if isinstance(raw, bytes) else raw)

    async def close(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True)
class Refusal:
    """Which limit refused a request, and when to retry (whole seconds, as Retry-After says)."""

    limit: str
    retry_after_s: int


class RateLimiter:
    """The edge's limits over a set of buckets."""

    def __init__(self, buckets: Buckets, settings: GatewaySettings) -> None:
        self.buckets = buckets
        self._settings = settings

    async def check_ip(self, ip: str) -> Refusal | None:
        """Every request, before authentication: 1,000/s per client IP by default."""
        settings = self._settings
        return await self._take("ip", f"ip:{ip}", settings.ip_rate_per_s, settings.ip_burst)

    async def check_caller(self, rpc: str, subject: str, ip: str) -> Refusal | None:
        """After authentication: the user's limit (100/s), then the route's own limit if configured."""
        settings = self._settings
        if subject:
            refusal = await self._take(
                "user", f"user:{subject}", settings.user_rate_per_s, settings.user_burst
            )
            if refusal is not None:
                return refusal
        policy = settings.policy(rpc)
        if policy.rate_per_s is None:
            return None
        burst = policy.burst or max(1, math.ceil(policy.rate_per_s))
        caller = f"user:{subject}" if subject else f"ip:{ip}"
        return await self._take("route", f"route:{rpc}:{caller}", policy.rate_per_s, burst)

    async def _take(self, limit: str, key: str, rate_per_s: float, burst: int) -> Refusal | None:
        wait = await self.buckets.take(key, rate_per_s, burst)
        if wait <= 0:
            return None
        return Refusal(limit, max(1, math.ceil(wait)))
