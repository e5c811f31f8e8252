"""The signing keys: stored (private keys sealed), advanced through their states as time passes,
and held in memory for signing and verification.

Rotation with overlap: a new key is PENDING and already published in the JWKS document for its
activation delay (at least the JWKS cache lifetime), so every verifier knows it before it signs;
at its activation time it becomes ACTIVE and the previous ACTIVE key RETIRED, still published
until every token it signed has expired; then REMOVED. A REVOKED key leaves the JWKS at once.
Every replica advances the states from the database (under row locks), so they agree on the
ACTIVE key within RELOAD_INTERVAL_S.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from svc.auth import keys, store
from svc.auth.domain import (
    PUBLISHED_KEY_STATES,
    SIGNING_RETIRED_PUBLISHED_US,
    KeyState,
    SigningKey,
    check_key_transition,
)
from svc.kit import errors
from svc.kit.context import EndUser
from svc.kit.db import Database
from svc.kit.identity import JWT_LEEWAY_S, TokenVerifier
from svc.kit.sealing import Sealer

RELOAD_INTERVAL_S = 5.0
log = logging.getLogger(__name__)


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Loaded:
    """The keys as last read: the signer, the published JWKs, and public keys by kid."""

    kid: str
    algorithm: str
    private: keys.PrivateKey
    published: tuple[dict[str, str], ...]
    verifying: dict[str, tuple[str, keys.PublicKey]]
    next_change_us: int
    loaded_at: float


def new_key(sealer: Sealer, algorithm: str, state: KeyState, now_us: int, activate_us: int) -> SigningKey:
    private = keys.generate(algorithm)
    jwk = keys.public_jwk(private, algorithm)
    return SigningKey(
        kid=jwk["kid"],
        algorithm=algorithm,
        state=state,
        public_jwk=jwk,
        private_sealed=keys.seal_private(sealer, private, jwk["kid"]),
        create_time_us=now_us,
        activate_time_us=activate_us,
    )


def _moved(key: SigningKey, state: KeyState, now_us: int) -> SigningKey:
    check_key_transition(key.state, state)
    if state is KeyState.ACTIVE:
        return replace(key, state=state, activate_time_us=now_us)
    if state is KeyState.RETIRED:
        return replace(key, state=state, retire_time_us=now_us)
    return replace(key, state=state, remove_time_us=now_us)


class KeyRing:
    """The service's signing keys."""

    def __init__(self, database: Database, sealer: Sealer, algorithm: str) -> None:
        self.database = database
        self.sealer = sealer
        self.algorithm = algorithm
        self._loaded: Loaded | None = None

    async def advance(self, session: AsyncSession, now_us: int) -> list[SigningKey]:
        """Applies the time-driven transitions; returns every key, newest first.

        With no ACTIVE key (first start, or the last one revoked with nothing pending) a new key
        becomes ACTIVE at once: the service never runs without a signer.
        """
        stored = await store.signing_keys_all(session, lock=True)
        changed: dict[str, SigningKey] = {}
        due = sorted(
            (
                key
                for key in stored
                if key.state is KeyState.PENDING and (key.activate_time_us or 0) <= now_us
            ),
            key=lambda key: key.activate_time_us or 0,
        )
        for pending in due:
            for key in [*stored, *changed.values()]:
                current = changed.get(key.kid, key)
                if current.state is KeyState.ACTIVE:
                    changed[key.kid] = _moved(current, KeyState.RETIRED, now_us)
            changed[pending.kid] = _moved(pending, KeyState.ACTIVE, now_us)
        for key in stored:
            current = changed.get(key.kid, key)
            if (
                current.state is KeyState.RETIRED
                and (current.retire_time_us or 0) + SIGNING_RETIRED_PUBLISHED_US <= now_us
            ):
                changed[key.kid] = _moved(current, KeyState.REMOVED, now_us)
        for key in changed.values():
            await store.update_signing_key(session, key)
        result = [changed.get(key.kid, key) for key in stored]
        if not any(key.state is KeyState.ACTIVE for key in result):
            created = new_key(self.sealer, self.algorithm, KeyState.ACTIVE, now_us, now_us)
            await store.insert_signing_key(session, created)
            result.insert(0, created)
        assert sum(key.state is KeyState.ACTIVE for key in result) == 1, result
        return result

    async def _load(self) -> Loaded:
        now_us = _now_us()
        async with self.database.transaction() as session:
            stored = await self.advance(session, now_us)
        active = next(key for key in stored if key.state is KeyState.ACTIVE)
        published = tuple(key.public_jwk for key in stored if key.state in PUBLISHED_KEY_STATES)
        changes = [key.activate_time_us or 0 for key in stored if key.state is KeyState.PENDING] + [
            (key.retire_time_us or 0) + SIGNING_RETIRED_PUBLISHED_US
            for key in stored
            if key.state is KeyState.RETIRED
        ]
        self._loaded = Loaded(
            kid=active.kid,
            algorithm=active.algorithm,
            private=keys.open_private(self.sealer, active.private_sealed, active.kid),
            published=published,
            verifying={
                key.kid: (key.algorithm, keys.public_key_of(key.public_jwk))
                for key in stored
                if key.state in PUBLISHED_KEY_STATES
            },
            next_change_us=min(changes, default=2**62),
            loaded_at=time.monotonic(),
        )
        return self._loaded

    async def current(self) -> Loaded:
        """The keys, reloaded when a transition is due or RELOAD_INTERVAL_S has passed."""
        loaded = self._loaded
        if (
            loaded is None
            or time.monotonic() - loaded.loaded_at > RELOAD_INTERVAL_S
            or _now_us() >= loaded.next_change_us
        ):
            loaded = await self._load()
        return loaded

    @property
    def loaded(self) -> Loaded | None:
        """The keys as last loaded, without reloading."""
        return self._loaded

    def invalidate(self) -> None:
        """Forces a reload at the next use (after a rotation or revocation here); the keys
        loaded so far keep verifying until then."""
        if self._loaded is not None:
            self._loaded = replace(self._loaded, loaded_at=float("-inf"))

    def sign(self, claims: dict[str, Any]) -> tuple[str, str]:
        """A signed token of the claims and the kid that signed it, with the keys as loaded.

        Never reloads: callers sign inside their transaction, and a reload opens another one
        (on SQLite it would wait for the caller's own lock). They call `current()` first.
        """
        loaded = self._loaded
        assert loaded is not None, "call KeyRing.current() before signing"
        return keys.sign(claims, loaded.private, loaded.algorithm, loaded.kid), loaded.kid

    async def rotate(self, session: AsyncSession, algorithm: str, delay_us: int) -> tuple[SigningKey, str]:
        """A new PENDING key activating after `delay_us`; returns it and the kid it will replace."""
        now_us = _now_us()
        stored = await self.advance(session, now_us)
        previous = next(key.kid for key in stored if key.state is KeyState.ACTIVE)
        created = new_key(
            self.sealer, algorithm or self.algorithm, KeyState.PENDING, now_us, now_us + delay_us
        )
        await store.insert_signing_key(session, created)
        return created, previous

    async def revoke(self, session: AsyncSession, kid: str) -> tuple[SigningKey, SigningKey]:
        """Revokes a key; if it was ACTIVE, the newest PENDING key (or a new one) signs at once."""
        now_us = _now_us()
        stored = await self.advance(session, now_us)
        target = next((key for key in stored if key.kid == kid), None)
        if target is None:
            raise errors.NotFound(f"no signing key {kid}", metadata={"kid": kid})
        revoked = _moved(target, KeyState.REVOKED, now_us)
        await store.update_signing_key(session, revoked)
        active = next(key for key in stored if key.state is KeyState.ACTIVE)
        if target.state is KeyState.ACTIVE:
            pending = [key for key in stored if key.state is KeyState.PENDING]
            if pending:
                active = _moved(pending[0], KeyState.ACTIVE, now_us)
                await store.update_signing_key(session, active)
            else:
                active = new_key(self.sealer, target.algorithm, KeyState.ACTIVE, now_us, now_us)
                await store.insert_signing_key(session, active)
        return revoked, active


class KeyRingVerifier(TokenVerifier):
    """Verifies end-user tokens presented to the auth service itself against its published keys
    (the kit's verifier reads a PEM file, which the service that makes the keys does not need).

    The kit's chain verifies synchronously, so this reads the keys the ring last loaded; the
    service keeps them fresh with `refresh_forever`.
    """

    def __init__(self, ring: KeyRing, *, issuer: str, audience: str) -> None:
        super().__init__([], issuer=issuer, audience=audience)
        self._ring = ring

    def verify(self, token: str) -> EndUser:
        loaded = self._ring.loaded
        try:
            kid = str(jwt.get_unverified_header(token).get("kid", ""))
        except jwt.PyJWTError:
            raise errors.Unauthenticated("invalid access token: not a JWT") from None
        known = loaded.verifying.get(kid) if loaded is not None else None
        if known is None:
            raise errors.Unauthenticated("invalid access token: unknown signing key")
        try:
            claims = jwt.decode(
                token,
                known[1],
                algorithms=[known[0]],
                issuer=self._issuer,
                audience=self._audience,
                leeway=JWT_LEEWAY_S,
                options={"require": ["sub", "exp", "iat"]},
            )
        except jwt.PyJWTError as error:
            raise errors.Unauthenticated(f"invalid access token: {error}") from None
        return EndUser(
            subject=str(claims["sub"]),
            roles=frozenset(claims.get("roles", ())),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            session_id=str(claims.get("sid", "")),
            token=token,
        )


async def refresh_forever(ring: KeyRing) -> None:
    """Reloads the ring's keys every RELOAD_INTERVAL_S (transitions of other replicas included)."""
    while True:
        await asyncio.sleep(RELOAD_INTERVAL_S)
        try:
            await ring.current()
        except Exception:
            log.exception("signing keys could not be reloaded; keeping the last ones")
