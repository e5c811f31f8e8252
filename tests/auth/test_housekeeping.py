"""Auth housekeeping on each backend: rows a day past their expiry go (refresh tokens, challenges,
step-up tokens, reset codes, sealed replays), live ones stay; expired in-memory nonces go."""

from __future__ import annotations

import time

from finmesh.auth.v1 import auth_service_pb2 as auth
from sqlalchemy import func, select, update

from svc.auth import housekeeping, resets, store
from svc.auth.nonces import RETENTION_MARGIN_S, MemoryNonceStore
from tests.harness.identity import Identity, from_ip, rid

TABLES = (store.refresh_tokens, store.challenges, store.step_ups, resets.resets, store.replays)


async def _counts(identity: Identity) -> dict[str, int]:
    async with identity.auth_app.database.transaction() as session:
        return {
            table.name: int((await session.execute(select(func.count()).select_from(table))).scalar_one())
            for table in TABLES
        }


async def test_sweep_removes_what_expired_a_day_ago_and_keeps_the_rest(identity: Identity) -> None:
    address = "sweep@example.com"
    await identity.register(email=address)
    await identity.tokens(address)
    access = (await identity.tokens(address)).access_token
    await identity.enable_totp(access)
    await identity.login(address)  # a TOTP challenge now
    await identity.auth.RequestPasswordReset(
        auth.RequestPasswordResetRequest(request_id=rid("reset"), email=address), metadata=from_ip()
    )
    before = await _counts(identity)
    assert all(
        before[name] > 0 for name in ("auth_refresh_tokens", "auth_challenges", "auth_password_resets")
    )
    long_ago = time.time_ns() // 1000 - housekeeping.RETENTION_US - 1
    async with identity.auth_app.database.transaction() as session:
        for table in TABLES:
            await session.execute(update(table).values(expire_time_us=long_ago))
    removed = await housekeeping.sweep(identity.auth_app.database, MemoryNonceStore())
    assert {name: removed[name] for name in before} == before
    assert set((await _counts(identity)).values()) == {0}
    # What expires now is still there a round later.
    await identity.register(email="fresh@example.com")
    await identity.tokens("fresh@example.com")
    kept = await _counts(identity)
    assert kept["auth_refresh_tokens"] == 1
    await housekeeping.sweep(identity.auth_app.database, MemoryNonceStore())
    assert await _counts(identity) == kept


async def test_expired_memory_nonces_are_forgotten() -> None:
    nonces = MemoryNonceStore()
    assert await nonces.claim("key-1", "n-old", ttl_s=-RETENTION_MARGIN_S - 1)
    assert await nonces.claim("key-1", "n-live", ttl_s=300)
    assert await nonces.sweep() == 1
    assert not await nonces.claim("key-1", "n-live", ttl_s=300)  # still remembered: a replay
    assert await nonces.claim("key-1", "n-old", ttl_s=300)
