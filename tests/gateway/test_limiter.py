"""Rate limits: token buckets per IP, per user and per route; in memory on an injected clock, and in
a real Redis shared by two gateway replicas; 429 with Retry-After and a RetryInfo detail."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
import redis.asyncio

from gateway.config import GatewaySettings, RoutePolicy
from gateway.limiter import KEY_PREFIX, MemoryBuckets, RateLimiter, RedisBuckets
from tests.gateway.conftest import Edge, ManualClock, Mesh, gateway_settings, serve_gateway
from tests.harness.servers import RedisServer

LIST_MINE = "/v1/users/me/accounts"
LOGIN = "finmesh.auth.v1.AuthService.Login"


async def test_token_bucket_refills_at_its_rate() -> None:
    clock = ManualClock()
    buckets = MemoryBuckets(clock)
    assert [await buckets.take("k", 10.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await buckets.take("k", 10.0, 3) == pytest.approx(0.1)
    clock.advance(0.1)
    assert await buckets.take("k", 10.0, 3) == 0.0
    clock.advance(60)  # never above the burst
    assert [await buckets.take("k", 10.0, 3) == 0.0 for _ in range(4)] == [True, True, True, False]


async def test_default_limits_are_100_per_user_and_1000_per_ip() -> None:
    limiter = RateLimiter(MemoryBuckets(ManualClock()), GatewaySettings())
    assert [await limiter.check_caller("rpc", "u-1", "10.0.0.1") for _ in range(100)] == [None] * 100
    refused = await limiter.check_caller("rpc", "u-1", "10.0.0.1")
    assert refused is not None and refused.limit == "user" and refused.retry_after_s == 1
    assert await limiter.check_caller("rpc", "u-2", "10.0.0.1") is None
    assert [await limiter.check_ip("10.0.0.9") for _ in range(1000)] == [None] * 1000
    assert await limiter.check_ip("10.0.0.9") is not None


async def test_route_override_limits_one_rpc_per_caller() -> None:
    settings = GatewaySettings(routes={LOGIN: RoutePolicy(rate_per_s=0.5, burst=2)})
    limiter = RateLimiter(MemoryBuckets(ManualClock()), settings)
    assert await limiter.check_caller(LOGIN, "", "10.0.0.1") is None
    assert await limiter.check_caller(LOGIN, "", "10.0.0.1") is None
    refused = await limiter.check_caller(LOGIN, "", "10.0.0.1")
    assert refused is not None and refused.limit == "route" and refused.retry_after_s == 2
    assert await limiter.check_caller(LOGIN, "", "10.0.0.2") is None
    assert await limiter.check_caller("other", "", "10.0.0.1") is None


async def test_burst_above_the_user_limit_gets_429_below_it_none(
    mesh: Mesh, bearer: Callable[..., dict[str, str]]
) -> None:
    settings = gateway_settings(mesh, user_rate_per_s=1.0, user_burst=5)
    async with serve_gateway(settings, clock=ManualClock()) as edge:
        user, other = f"u-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
        below = [(await edge.http.get(LIST_MINE, headers=bearer(user))).status_code for _ in range(5)]
        assert below == [200] * 5
        above = [await edge.http.get(LIST_MINE, headers=bearer(user)) for _ in range(3)]
        assert [response.status_code for response in above] == [429] * 3
        body = above[0].json()
        assert above[0].headers["retry-after"] == "1"
        assert body["code"] == 8
        assert body["details"][0]["reason"] == "RATE_LIMITED"
        assert body["details"][1]["@type"].endswith("google.rpc.RetryInfo")
        # Another user has a bucket of their own.
        assert (await edge.http.get(LIST_MINE, headers=bearer(other))).status_code == 200


async def test_ip_limit_applies_before_authentication(mesh: Mesh) -> None:
    settings = gateway_settings(mesh, ip_rate_per_s=1.0, ip_burst=3)
    async with serve_gateway(settings, clock=ManualClock()) as edge:
        statuses = [(await edge.http.get("/v1/auth/jwks")).status_code for _ in range(3)]
        assert statuses == [200] * 3
        # Even a request that would fail authentication spends and is refused by the IP's bucket.
        assert (await edge.http.get(LIST_MINE)).status_code == 429


@pytest.mark.redis
async def test_redis_buckets_are_shared_and_atomic(redis_server: RedisServer) -> None:
    key = f"shared-{uuid.uuid4().hex}"
    clients = [redis.asyncio.from_url(redis_server.url) for _ in range(2)]
    replicas = [RedisBuckets(client, MemoryBuckets()) for client in clients]
    try:
        waits = await asyncio.gather(*(replicas[index % 2].take(key, 0.001, 10) for index in range(25)))
        assert sum(wait == 0.0 for wait in waits) == 10
        assert all(wait > 0 for wait in waits if wait != 0.0)
        assert await clients[0].ttl(KEY_PREFIX + key) > 0
    finally:
        for replica in replicas:
            await replica.close()


@pytest.mark.redis
async def test_two_gateway_replicas_share_the_users_bucket(
    mesh: Mesh, redis_server: RedisServer, bearer: Callable[..., dict[str, str]]
) -> None:
    settings = gateway_settings(mesh, user_rate_per_s=0.01, user_burst=4, redis_url=redis_server.url)
    user = f"u-{uuid.uuid4().hex[:8]}"
    async with serve_gateway(settings) as first, serve_gateway(settings) as second:
        replicas: tuple[Edge, Edge] = (first, second)
        statuses = [
            (await replicas[index % 2].http.get(LIST_MINE, headers=bearer(user))).status_code
            for index in range(8)
        ]
    assert statuses == [200] * 4 + [429] * 4
