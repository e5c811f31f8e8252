"""Logins and token verifications per second through auth and user, and what verifying a JWT costs
a request against the bare ES256 signature check inside it.

The user and auth services run in this process (tests/harness/identity.py: kit servers, no TLS,
SQLite under a scratch directory), auth with the production argon2id cost (its settings'
defaults, RFC 9106's second recommendation). LOGIN_USERS users are registered before the clock
starts; CONCURRENCY clients, each with a client IP of its own, log in LOGINS times in all
(argon2id verification, session and refresh token, a signed ES256 access token, one commit).

Token verification through gRPC: CONCURRENCY clients call
- `AuthService.IntrospectToken` (full verification: signature, claims, session and user status),
- `UserService.GetMyUser` with the token as bearer (the kit's chain verifies the JWT against the
  PEM file of auth's keys, then one database read).

JWT verification alone, in this process, VERIFY_ROUNDS rounds alternating, each VERIFICATIONS
verifications of the same access token by
- the kit's `TokenVerifier` (what every service's chain runs per request: header, base64url,
  JSON, signature, iss/aud/exp/iat checks),
- auth's own `KeyRingVerifier` (the key picked by kid),
- the bare ES256 check: `cryptography`'s ECDSA P-256/SHA-256 verification of the token's signature
  over its signing input, the signature converted to DER before the clock starts.
The ratios are the medians over rounds of (verifier time / bare time) in the same round.

The password check alone is measured the same way: CONCURRENCY clients each verifying the
password against its argon2id hash in a worker thread, as Login does, LOGINS times in all.

Figures (identity/...): logins_per_s; argon2id_verifications_per_s and login_over_argon2id_ratio
(logins per second / bare argon2id verifications per second); introspections_per_s;
get_my_user_per_s; jwt_verify_us, keyring_verify_us, bare_es256_verify_us (median µs per
verification); jwt_over_bare_ratio and keyring_over_bare_ratio.
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.user.v1 import user_service_pb2 as user

from bench.results import Figure
from svc.auth.config import AuthSettings
from svc.auth.keyring import KeyRingVerifier
from svc.auth.passwords import Argon2Parameters, Passwords
from svc.kit.identity import TokenVerifier
from tests.harness.identity import PASSWORD, Identity, bearer, start_identity

LOGINS = int(os.environ.get("FINMESH_BENCH_IDENTITY_LOGINS", "120"))
LOGIN_USERS = 8
CONCURRENCY = 8
CALLS = int(os.environ.get("FINMESH_BENCH_IDENTITY_CALLS", "2000"))
VERIFICATIONS = 2_000
VERIFY_ROUNDS = 7
ISSUER, AUDIENCE = "finmesh-auth", "finmesh"


def production_argon2() -> tuple[int, int, int]:
    """The argon2id cost auth runs with unless configured otherwise."""
    fields = AuthSettings.model_fields
    return (
        int(fields["argon2_time_cost"].default),
        int(fields["argon2_memory_kib"].default),
        int(fields["argon2_parallelism"].default),
    )


async def _rate(count: int, call: Callable[[int], Awaitable[Any]]) -> float:
    """Calls per second of `count` calls (call(i) for i in 0..count-1) from CONCURRENCY clients."""
    remaining = list(range(count - 1, -1, -1))

    async def client() -> None:
        while remaining:
            await call(remaining.pop())

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return count / (time.perf_counter() - started)


def _bare_es256(token: str, public_key: ec.EllipticCurvePublicKey) -> Callable[[], None]:
    """The token's signature check alone, everything else prepared beforehand."""
    header, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    signing_input = f"{header}.{payload}".encode()
    algorithm = ec.ECDSA(hashes.SHA256())

    def check() -> None:
        public_key.verify(der, signing_input, algorithm)

    return check


def _seconds_per_call(check: Callable[[], Any]) -> float:
    started = time.perf_counter()
    for _ in range(VERIFICATIONS):
        check()
    return (time.perf_counter() - started) / VERIFICATIONS


def _verification(token: str, identity: Identity, pem: Path) -> dict[str, list[float]]:
    """Per-verification seconds of each side over VERIFY_ROUNDS alternating rounds."""
    loaded = identity.ring.loaded
    assert loaded is not None and len(loaded.verifying) == 1, "one signing key expected"
    algorithm, public_key = next(iter(loaded.verifying.values()))
    assert algorithm == "ES256" and isinstance(public_key, ec.EllipticCurvePublicKey), algorithm
    kit = TokenVerifier.from_pem_file(pem, issuer=ISSUER, audience=AUDIENCE)
    ring = KeyRingVerifier(identity.ring, issuer=ISSUER, audience=AUDIENCE)
    sides: dict[str, Callable[[], Any]] = {
        "jwt": lambda: kit.verify(token),
        "keyring": lambda: ring.verify(token),
        "bare": _bare_es256(token, public_key),
    }
    subject = kit.verify(token).subject
    assert subject == ring.verify(token).subject
    for check in sides.values():  # warm-up, unmeasured
        check()
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(VERIFY_ROUNDS):
        for name, check in sides.items():
            seconds[name].append(_seconds_per_call(check))
    return seconds


async def _run(directory: Path) -> list[Figure]:
    argon2 = production_argon2()
    load_before = os.getloadavg()[0]
    url = f"sqlite+aiosqlite:///{directory / 'identity.db'}"
    identity = await start_identity(url, directory, argon2=argon2)
    try:
        emails = [f"bench{index}@example.com" for index in range(LOGIN_USERS)]
        for email in emails:
            await identity.register(email=email)
        await identity.login(emails[0])  # warm-up, unmeasured

        async def login(index: int) -> None:
            ip = f"198.51.100.{index % CONCURRENCY + 1}"
            response = await identity.login(emails[index % LOGIN_USERS], ip=ip)
            assert response.HasField("tokens"), response

        logins = await _rate(LOGINS, login)
        passwords = Passwords(Argon2Parameters(*argon2))
        stored = passwords.hash(PASSWORD)

        async def argon2_verification(_: int) -> None:
            assert await asyncio.to_thread(passwords.verify, stored, PASSWORD)

        argon2_verifications = await _rate(LOGINS, argon2_verification)
        token = (await identity.tokens(emails[0])).access_token
        introspect = auth.IntrospectTokenRequest(access_token=token)
        expected = (await identity.auth.IntrospectToken(introspect)).principal.user_id

        async def introspection(_: int) -> None:
            response = await identity.auth.IntrospectToken(introspect)
            assert response.principal.user_id == expected, response

        metadata = bearer(token)
        mine = user.GetMyUserRequest()

        async def get_my_user(_: int) -> None:
            response = await identity.users.GetMyUser(mine, metadata=metadata)
            assert response.user.user_id == expected, response

        await _rate(CALLS // 10, introspection)  # warm-up, unmeasured
        introspections = await _rate(CALLS, introspection)
        await _rate(CALLS // 10, get_my_user)
        my_users = await _rate(CALLS, get_my_user)
        pem = directory / "auth-public-keys.pem"
        seconds = _verification(token, identity, pem)
    finally:
        await identity.stop()
    jwt_ratio = statistics.median(j / b for j, b in zip(seconds["jwt"], seconds["bare"], strict=True))
    ring_ratio = statistics.median(k / b for k, b in zip(seconds["keyring"], seconds["bare"], strict=True))
    microseconds = {name: [round(value * 1e6, 2) for value in values] for name, values in seconds.items()}
    verify_detail = {"verifications_per_round": VERIFICATIONS, "rounds": VERIFY_ROUNDS, "us": microseconds}
    login_detail = {
        "logins": LOGINS,
        "users": LOGIN_USERS,
        "concurrency": CONCURRENCY,
        "argon2id": {"time_cost": argon2[0], "memory_kib": argon2[1], "parallelism": argon2[2]},
        "database": "sqlite",
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    call_detail = {"calls": CALLS, "concurrency": CONCURRENCY, "database": "sqlite"}
    return [
        Figure("identity", "logins_per_s", logins, "1/s", "", login_detail),
        Figure("identity", "argon2id_verifications_per_s", argon2_verifications, "1/s", "", login_detail),
        Figure("identity", "login_over_argon2id_ratio", logins / argon2_verifications, "ratio", "", {}),
        Figure("identity", "introspections_per_s", introspections, "1/s", "", call_detail),
        Figure("identity", "get_my_user_per_s", my_users, "1/s", "", call_detail),
        Figure("identity", "jwt_verify_us", statistics.median(microseconds["jwt"]), "us", "", verify_detail),
        Figure("identity", "keyring_verify_us", statistics.median(microseconds["keyring"]), "us", "", {}),
        Figure("identity", "bare_es256_verify_us", statistics.median(microseconds["bare"]), "us", "", {}),
        Figure("identity", "jwt_over_bare_ratio", jwt_ratio, "ratio", "", {}),
        Figure("identity", "keyring_over_bare_ratio", ring_ratio, "ratio", "", {}),
    ]


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="finmesh-bench-identity-") as directory:
        return asyncio.run(_run(Path(directory)))
