"""Password reset through the gRPC contract, the code mailed by the real notification service to
the real SMTP server: one answer whoever asks, codes hashed at rest, single use, expiring,
limited per hour, the second factor required with TOTP on, and every session ended."""

from __future__ import annotations

import hashlib
import re
import uuid

import grpc
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.events.v1 import auth_events_pb2
from sqlalchemy import select, update

from svc.auth import resets
from tests.harness.calls import eventually
from tests.harness.identity import PASSWORD, from_ip, refused, rid
from tests.notification.conftest import Mesh, mesh

__all__ = ["mesh"]

CODE = re.compile(r"fmr_[A-Za-z0-9_-]{20,}")
NEW_PASSWORD = "a brand new passphrase 42"


def _address() -> str:
    return f"reset-{uuid.uuid4().hex[:10]}@example.com"


def _codes_now(mesh: Mesh, address: str) -> list[str]:
    found = []
    for received in [m for m in mesh.smtp.received if m.recipients == [address]]:
        body = received.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        found.extend(CODE.findall(body))
    return found


async def _codes(mesh: Mesh, address: str, count: int) -> list[str]:
    """The reset codes mailed to `address` (the welcome message carries none), once `count` came."""

    async def arrived() -> bool:
        return len(_codes_now(mesh, address)) >= count

    await eventually(arrived)
    return _codes_now(mesh, address)


async def _request(mesh: Mesh, address: str) -> auth.RequestPasswordResetResponse:
    return await mesh.identity.auth.RequestPasswordReset(
        auth.RequestPasswordResetRequest(request_id=rid("reset"), email=address), metadata=from_ip()
    )


def _reset(code: str, **fields: str) -> auth.ResetPasswordRequest:
    return auth.ResetPasswordRequest(
        request_id=rid("reset-password"), reset_token=code, new_password=NEW_PASSWORD, **fields
    )


async def test_a_reset_code_works_once_and_ends_every_session(mesh: Mesh) -> None:
    identity = mesh.identity
    address = _address()
    registered = await identity.register(email=address)
    tokens = await identity.tokens(address)
    nobody = _address()
    assert (
        await _request(mesh, address) == await _request(mesh, nobody) == auth.RequestPasswordResetResponse()
    )
    [code] = await _codes(mesh, address, 1)

    # At rest only the SHA-256 of the code.
    async with identity.auth_app.database.transaction() as session:
        rows = (await session.execute(select(resets.resets))).all()
    assert [(row.user_id, row.token_hash) for row in rows] == [
        (registered.user_id, hashlib.sha256(code.encode()).hexdigest())
    ]
    assert all(code not in str(value) for row in rows for value in row)

    request = _reset(code)
    done = await identity.auth.ResetPassword(request, metadata=from_ip())
    assert done.revoked_session_count == 1
    assert await identity.auth.ResetPassword(request, metadata=from_ip()) == done  # a replay
    await refused(
        identity.auth.ResetPassword(_reset(code), metadata=from_ip()),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    await refused(
        identity.auth.RefreshToken(
            auth.RefreshTokenRequest(request_id=rid("refresh"), refresh_token=tokens.refresh_token)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    await refused(identity.login(address, PASSWORD), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert (await identity.login(address, NEW_PASSWORD)).HasField("tokens")
    [changed] = await identity.events(identity.auth_app, auth_events_pb2.PasswordChanged)
    assert (changed.user_id, changed.via_reset, changed.revoked_session_count) == (
        registered.user_id,
        True,
        1,
    )
    [asked] = await identity.events(identity.auth_app, auth_events_pb2.PasswordResetRequested)
    assert asked.user_id == registered.user_id
    # Nothing went to the identifier nobody holds.
    assert not [m for m in mesh.smtp.received if m.recipients == [nobody]]
    assert len(_codes_now(mesh, address)) == 1


async def test_expired_unknown_and_superseded_codes_are_refused_alike(mesh: Mesh) -> None:
    identity = mesh.identity
    address = _address()
    await identity.register(email=address)
    await _request(mesh, address)
    await _request(mesh, address)
    first, second = await _codes(mesh, address, 2)
    async with identity.auth_app.database.transaction() as session:
        await session.execute(
            update(resets.resets)
            .where(resets.resets.c.token_hash == hashlib.sha256(first.encode()).hexdigest())
            .values(expire_time_us=resets.resets.c.request_time_us - 1)
        )
    expired = await refused(
        identity.auth.ResetPassword(_reset(first), metadata=from_ip()),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    unknown = await refused(
        identity.auth.ResetPassword(_reset("fmr_" + "x" * 43), metadata=from_ip()),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    assert expired.details() == unknown.details()
    await identity.auth.ResetPassword(_reset(second), metadata=from_ip())
    # The user's own attempts were counted against the IP, not as login failures of the user.
    assert (await identity.login(address, NEW_PASSWORD)).HasField("tokens")


async def test_at_most_three_codes_an_hour(mesh: Mesh) -> None:
    address = _address()
    await mesh.identity.register(email=address)
    for _ in range(resets.RESETS_PER_HOUR_MAX + 2):
        assert await _request(mesh, address) == auth.RequestPasswordResetResponse()
    codes = await _codes(mesh, address, resets.RESETS_PER_HOUR_MAX)
    # A later message would have arrived by the time one more (to someone else) did.
    marker = _address()
    await mesh.identity.register(email=marker)
    await _request(mesh, marker)
    await _codes(mesh, marker, 1)
    assert len(codes) == len(set(codes)) == resets.RESETS_PER_HOUR_MAX
    assert len(_codes_now(mesh, address)) == resets.RESETS_PER_HOUR_MAX


async def test_with_totp_a_reset_needs_the_second_factor(mesh: Mesh) -> None:
    identity = mesh.identity
    address = _address()
    await identity.register(email=address)
    _, recovery = await identity.enable_totp((await identity.tokens(address)).access_token)
    await _request(mesh, address)
    [code] = await _codes(mesh, address, 1)
    await refused(
        identity.auth.ResetPassword(_reset(code), metadata=from_ip()),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    await refused(
        identity.auth.ResetPassword(_reset(code, recovery_code="AAAAA-BBBBB"), metadata=from_ip()),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    # The refused attempts left the code usable.
    done = await identity.auth.ResetPassword(_reset(code, recovery_code=recovery[0]), metadata=from_ip())
    assert done.revoked_session_count >= 1
    assert (await identity.login(address, NEW_PASSWORD)).HasField("challenge")
