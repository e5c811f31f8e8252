"""What the auth service publishes, through the outbox in the transaction of each change
(finmesh.events.v1 auth events: sessions, login attempts, credentials, API keys, signing keys).
No event carries a password, token, secret, code or raw login identifier."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from finmesh.events.v1 import auth_events_pb2 as auth_events
from finmesh.events.v1 import event_meta_pb2, user_events_pb2
from finmesh.user.v1 import user_service_pb2 as user_service
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.auth import store
from svc.auth.domain import RevokeReason, Session, SessionState
from svc.kit.bus import ReceivedMessage
from svc.kit.outbox import add_event

PRODUCER = "auth"
CONSUMER = "auth-user-status"
USERS_TOPIC = "finmesh.user.v1.users"
AGGREGATES: dict[type[Message], str] = {
    auth_events.LoginSucceeded: "session",
    auth_events.SessionRevoked: "session",
    auth_events.RefreshTokenReuseDetected: "session",
    auth_events.LoginFailed: "login_attempts",
    auth_events.LoginLockedOut: "login_attempts",
    auth_events.LoginLockoutCleared: "login_attempts",
    auth_events.PasswordCredentialCreated: "credentials",
    auth_events.PasswordChanged: "credentials",
    auth_events.PasswordResetRequested: "credentials",
    auth_events.TwoFactorEnabled: "credentials",
    auth_events.TwoFactorDisabled: "credentials",
    auth_events.RecoveryCodesRegenerated: "credentials",
    auth_events.RecoveryCodeUsed: "credentials",
    auth_events.ApiKeyCreated: "api_key",
    auth_events.ApiKeyUpdated: "api_key",
    auth_events.ApiKeyRevoked: "api_key",
    auth_events.SignedRequestRejected: "api_key",
    auth_events.RoleAssignmentRequested: "role_assignment",
    auth_events.RoleAssignmentApproved: "role_assignment",
    auth_events.RoleAssignmentRejected: "role_assignment",
    auth_events.RoleAssignmentRevoked: "role_assignment",
    auth_events.SigningKeyRotated: "signing_key",
    auth_events.SigningKeyRevoked: "signing_key",
}


async def publish(
    session: AsyncSession,
    event_type: type[Message],
    aggregate_id: str,
    *,
    causation_id: str = "",
    **fields: Any,
) -> None:
    """One event of `event_type` about `aggregate_id` (the Kafka key), in the caller's transaction."""
    meta = event_meta_pb2.EventMeta(
        aggregate_type=AGGREGATES[event_type], aggregate_id=aggregate_id, causation_id=causation_id
    )
    await add_event(session, event_type(meta=meta, **fields), producer=PRODUCER)


async def revoke_session(
    session: AsyncSession, login: Session, reason: RevokeReason, by: str, now_us: int
) -> Session:
    """ACTIVE -> REVOKED with every refresh token of the family, and SessionRevoked."""
    assert login.state is SessionState.ACTIVE, login
    revoked = dataclasses.replace(
        login, state=SessionState.REVOKED, revoke_time_us=now_us, revoke_reason=reason
    )
    await store.update_session(session, revoked)
    await store.revoke_family(session, login.session_id)
    await publish(
        session,
        auth_events.SessionRevoked,
        login.session_id,
        user_id=login.user_id,
        session_id=login.session_id,
        reason=int(reason),
        revoked_by=by,
    )
    return revoked


async def on_user_event(session: AsyncSession, event: Message, message: ReceivedMessage) -> None:
    """Ends every session of a user who was closed, or frozen with `revoke_sessions`.

    Login and refresh already refuse a user who is not ACTIVE; this makes a security freeze take
    effect for sessions at once instead of at their next refresh.
    """
    if not isinstance(event, user_events_pb2.UserStatusChanged):
        return
    closed = event.new_status == user_service.USER_STATUS_CLOSED
    frozen = event.new_status == user_service.USER_STATUS_FROZEN
    if not (closed or (frozen and event.revoke_sessions)):
        return
    now_us = time.time_ns() // 1000
    for login in await store.active_sessions(session, event.user_id):
        await revoke_session(session, login, RevokeReason.USER_STATUS, event.actor_id or "system", now_us)
