"""The caller's account security through the gRPC contract: changing the password, the login
history, and sessions ended platform-wide when the user service freezes a user for security."""

from __future__ import annotations

import asyncio
import time

import grpc
from finmesh.auth.v1 import auth_resources_pb2 as resources
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.user.v1 import user_service_pb2 as user

from svc.auth import totp
from tests.harness.identity import PASSWORD, Identity, bearer, refused, rid

NEW_PASSWORD = "a much longer new passphrase"


async def test_change_password_ends_the_other_sessions(identity: Identity) -> None:
    await identity.register(email="change@example.com")
    current = await identity.tokens("change@example.com")
    other = await identity.tokens("change@example.com")

    def change(current_password: str, new_password: str) -> auth.ChangePasswordRequest:
        return auth.ChangePasswordRequest(
            request_id=rid(), current_password=current_password, new_password=new_password
        )

    access = bearer(current.access_token)
    await refused(
        identity.auth.ChangePassword(change("wrong password", NEW_PASSWORD), metadata=access),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    await refused(
        identity.auth.ChangePassword(change(PASSWORD, PASSWORD), metadata=access),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    request = change(PASSWORD, NEW_PASSWORD)
    changed = await identity.auth.ChangePassword(request, metadata=access)
    assert changed.revoked_session_count == 1
    assert await identity.auth.ChangePassword(request, metadata=access) == changed
    await refused(identity.login("change@example.com"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert (await identity.login("change@example.com", password=NEW_PASSWORD)).HasField("tokens")
    stale = auth.RefreshTokenRequest(request_id=rid(), refresh_token=other.refresh_token)
    await refused(identity.auth.RefreshToken(stale), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    kept = auth.RefreshTokenRequest(request_id=rid(), refresh_token=current.refresh_token)
    assert (await identity.auth.RefreshToken(kept)).tokens.session_id == current.session_id


async def test_with_totp_a_password_change_needs_a_step_up(identity: Identity) -> None:
    await identity.register(email="change2fa@example.com")
    access = (await identity.tokens("change2fa@example.com")).access_token
    secret, _ = await identity.enable_totp(access)
    request = auth.ChangePasswordRequest(
        request_id=rid(), current_password=PASSWORD, new_password=NEW_PASSWORD
    )
    await refused(
        identity.auth.ChangePassword(request, metadata=bearer(access)),
        grpc.StatusCode.PERMISSION_DENIED,
        "STEP_UP_REQUIRED",
    )
    step_up = await identity.auth.VerifyStepUp(
        auth.VerifyStepUpRequest(
            request_id=rid(),
            purpose=resources.STEP_UP_PURPOSE_PASSWORD_CHANGE,
            totp_code=totp.totp(secret, time.time() + 30),
        ),
        metadata=bearer(access),
    )
    request.request_id, request.step_up_token = rid(), step_up.step_up_token
    assert (await identity.auth.ChangePassword(request, metadata=bearer(access))).revoked_session_count == 0


async def test_login_history_lists_outcomes_newest_first(identity: Identity) -> None:
    registered = await identity.register(email="history@example.com")
    # The REST gateway passes the client IP as x-forwarded-for.
    wrong = auth.LoginRequest(request_id=rid(), email="history@example.com", password="wrong password")
    forwarded = (("x-forwarded-for", "198.51.100.77"),)
    await refused(
        identity.auth.Login(wrong, metadata=forwarded), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"
    )
    access = (await identity.tokens("history@example.com")).access_token
    mine = await identity.auth.ListLoginAttempts(
        auth.ListLoginAttemptsRequest(page_size=1), metadata=bearer(access)
    )
    assert [attempt.outcome for attempt in mine.login_attempts] == [resources.LOGIN_OUTCOME_SUCCEEDED]
    rest = await identity.auth.ListLoginAttempts(
        auth.ListLoginAttemptsRequest(page_token=mine.next_page_token), metadata=bearer(access)
    )
    assert [(attempt.outcome, attempt.ip) for attempt in rest.login_attempts] == [
        (resources.LOGIN_OUTCOME_WRONG_PASSWORD, "198.51.100.77")
    ]
    support = await identity.auth.ListUserLoginAttempts(
        auth.ListUserLoginAttemptsRequest(user_id=registered.user_id)
    )
    assert len(support.login_attempts) == 2
    denied = identity.auth.ListUserLoginAttempts(
        auth.ListUserLoginAttemptsRequest(user_id=registered.user_id), metadata=bearer(access)
    )
    await refused(denied, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


async def test_a_security_freeze_ends_every_session(identity: Identity) -> None:
    registered = await identity.register(email="takeover@example.com")
    first = await identity.tokens("takeover@example.com")
    await identity.tokens("takeover@example.com")
    await identity.users.FreezeUser(
        user.FreezeUserRequest(
            request_id=rid(), user_id=registered.user_id, reason=user.STATUS_REASON_SECURITY, note="takeover"
        )
    )
    listing = auth.ListUserSessionsRequest(user_id=registered.user_id, include_inactive=True)
    async with asyncio.timeout(10):
        while True:
            sessions = (await identity.auth.ListUserSessions(listing)).sessions
            if all(session.state == resources.SESSION_STATE_REVOKED for session in sessions):
                break
            await asyncio.sleep(0.05)
    assert {session.revoke_reason for session in sessions} == {resources.REVOKE_REASON_USER_STATUS}
    assert len(sessions) == 2
    refresh = auth.RefreshTokenRequest(request_id=rid(), refresh_token=first.refresh_token)
    await refused(identity.auth.RefreshToken(refresh), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
