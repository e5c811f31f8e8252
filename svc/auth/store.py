"""The auth service's tables and queries (SQLAlchemy Core).

Schema (migrations/versions/auth_0001_initial.py). Every secret is stored as a hash (refresh
tokens, challenges, step-up tokens: SHA-256 of 256 random bits; recovery codes: HMAC under a
service key; passwords: argon2id) or sealed with AES-256-GCM when it must be read back (signing
private keys, TOTP seeds, API-key secrets, token responses kept for a retry).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from svc.auth.domain import (
    ApiKey,
    ApiKeyState,
    Counter,
    KeyState,
    Method,
    RefreshToken,
    RevokeReason,
    Session,
    SessionState,
    SigningKey,
    TokenState,
)

metadata = MetaData()

credentials = Table(
    "auth_credentials",
    metadata,
    Column("user_id", String(36), primary_key=True),
    Column("password_hash", String(256), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
)
counters = Table(
    "auth_counters",
    metadata,
    Column("key", String(80), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_start_us", BigInteger, nullable=False),
    Column("locked_until_us", BigInteger, nullable=False),
)
login_attempts = Table(
    "auth_login_attempts",
    metadata,
    Column("login_attempt_id", String(36), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("identifier_hash", String(64), nullable=False),
    Column("outcome", SmallInteger, nullable=False),
    Column("ip", String(45), nullable=False),
    Column("user_agent", String(256), nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("new_device_or_ip", Boolean, nullable=False),
    Column("session_id", String(36), nullable=False),
    Column("attempt_time_us", BigInteger, nullable=False),
)
sessions = Table(
    "auth_sessions",
    metadata,
    Column("session_id", String(36), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("device_name", String(128), nullable=False),
    Column("platform", SmallInteger, nullable=False),
    Column("login_ip", String(45), nullable=False),
    Column("last_ip", String(45), nullable=False),
    Column("user_agent", String(256), nullable=False),
    Column("methods", String(32), nullable=False),
    Column("roles", String(32), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("last_refresh_time_us", BigInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
    Column("revoke_time_us", BigInteger, nullable=True),
    Column("revoke_reason", SmallInteger, nullable=True),
)
refresh_tokens = Table(
    "auth_refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("session_id", String(36), nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("issue_time_us", BigInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
    Column("rotate_time_us", BigInteger, nullable=True),
)
replays = Table(
    "auth_replays",
    metadata,
    Column("method", String(100), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("sealed_response", LargeBinary, nullable=True),
    Column("expire_time_us", BigInteger, nullable=False),
)
signing_keys = Table(
    "auth_signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(8), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("private_sealed", LargeBinary, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("activate_time_us", BigInteger, nullable=True),
    Column("retire_time_us", BigInteger, nullable=True),
    Column("remove_time_us", BigInteger, nullable=True),
)
totp = Table(
    "auth_totp",
    metadata,
    Column("user_id", String(36), primary_key=True),
    Column("state", SmallInteger, nullable=False),
    Column("enrollment_id", String(36), nullable=False),
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
    Column("confirm_time_us", BigInteger, nullable=True),
    Column("last_step", BigInteger, nullable=False),
)
recovery_codes = Table(
    "auth_recovery_codes",
    metadata,
    Column("user_id", String(36), primary_key=True),
    Column("code_hash", String(64), primary_key=True),
    Column("used_time_us", BigInteger, nullable=True),
)
challenges = Table(
    "auth_challenges",
    metadata,
    Column("challenge_hash", String(64), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("identifier_hash", String(64), nullable=False),
    Column("ip", String(45), nullable=False),
    Column("user_agent", String(256), nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("device_name", String(128), nullable=False),
    Column("platform", SmallInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("used", Boolean, nullable=False),
)
step_ups = Table(
    "auth_step_ups",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("session_id", String(36), nullable=False),
    Column("purpose", SmallInteger, nullable=False),
    Column("operation_digest", String(64), nullable=False),
    Column("factor", SmallInteger, nullable=False),
    Column("verify_time_us", BigInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
    Column("redeem_request_id", String(128), nullable=True),
)
api_keys = Table(
    "auth_api_keys",
    metadata,
    Column("api_key_id", String(27), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("display_name", String(64), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("allowed_ip_ranges", Text, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("secret_fingerprint", String(16), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("last_used_time_us", BigInteger, nullable=True),
    Column("last_used_ip", String(45), nullable=False),
    Column("revoke_time_us", BigInteger, nullable=True),
)
role_assignments = Table(
    "auth_role_assignments",
    metadata,
    Column("role_assignment_id", String(36), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("role", SmallInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("justification", String(2000), nullable=False),
    Column("requested_by", String(64), nullable=False),
    Column("decided_by", String(64), nullable=False),
    Column("revoked_by", String(64), nullable=False),
    Column("decision_note", String(2000), nullable=False),
    Column("expire_time_us", BigInteger, nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
    Column("decide_time_us", BigInteger, nullable=True),
    Column("revoke_time_us", BigInteger, nullable=True),
)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def _text(values: Sequence[int]) -> str:
    return ",".join(str(int(value)) for value in values)


async def _one(session: AsyncSession, query: Any, *, lock: bool = False) -> Any:
    return (await session.execute(query.with_for_update() if lock else query)).first()


# Credentials and lockout counters


async def password_hash(session: AsyncSession, user_id: str) -> str | None:
    row = await _one(session, select(credentials.c.password_hash).where(credentials.c.user_id == user_id))
    return row.password_hash if row is not None else None


async def insert_credential(session: AsyncSession, user_id: str, hashed: str, now_us: int) -> None:
    """Adds the first password of a user; a second raises IntegrityError."""
    await session.execute(
        insert(credentials).values(
            user_id=user_id, password_hash=hashed, create_time_us=now_us, update_time_us=now_us
        )
    )


async def update_password_hash(session: AsyncSession, user_id: str, hashed: str, now_us: int) -> None:
    await session.execute(
        update(credentials)
        .where(credentials.c.user_id == user_id)
        .values(password_hash=hashed, update_time_us=now_us)
    )


async def counter(session: AsyncSession, key: str, *, lock: bool = False) -> Counter:
    row = await _one(session, select(counters).where(counters.c.key == key), lock=lock)
    return Counter(**dict(row._mapping)) if row is not None else Counter(key=key)


async def save_counter(session: AsyncSession, value: Counter) -> None:
    """Writes a counter; a concurrent first write of the same key raises IntegrityError."""
    values = {
        "failures": value.failures,
        "window_start_us": value.window_start_us,
        "locked_until_us": value.locked_until_us,
    }
    result = await session.execute(update(counters).where(counters.c.key == value.key).values(**values))
    if getattr(result, "rowcount", 0) == 0:
        await session.execute(insert(counters).values(key=value.key, **values))


async def clear_counter(session: AsyncSession, key: str) -> bool:
    """Forgets a counter; whether it was locking at the time is the caller's concern."""
    result = await session.execute(delete(counters).where(counters.c.key == key))
    return bool(getattr(result, "rowcount", 0))


async def insert_login_attempt(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(login_attempts).values(**values))


async def list_login_attempts(
    session: AsyncSession,
    user_id: str,
    *,
    start_us: int | None,
    end_us: int | None,
    before: tuple[int, str] | None,
    limit: int,
) -> list[Any]:
    """A user's login attempts newest first, in [start, end), after the cursor."""
    query = select(login_attempts).where(login_attempts.c.user_id == user_id)
    if start_us is not None:
        query = query.where(login_attempts.c.attempt_time_us >= start_us)
    if end_us is not None:
        query = query.where(login_attempts.c.attempt_time_us < end_us)
    key = tuple_(login_attempts.c.attempt_time_us, login_attempts.c.login_attempt_id)
    if before is not None:
        query = query.where(key < tuple_(*before))
    order = (login_attempts.c.attempt_time_us.desc(), login_attempts.c.login_attempt_id.desc())
    return list((await session.execute(query.order_by(*order).limit(limit))).all())


async def identifier_hashes_of(session: AsyncSession, user_id: str) -> list[str]:
    """The identifier hashes a user's login attempts were made with (their lockout counters)."""
    query = select(login_attempts.c.identifier_hash).where(login_attempts.c.user_id == user_id).distinct()
    return [row.identifier_hash for row in await session.execute(query)]


async def seen_before(session: AsyncSession, user_id: str, ip: str, device_id: str) -> bool:
    """Whether a successful login of this user came from this IP (and device, if one is given)."""
    query = select(func.count()).where(
        login_attempts.c.user_id == user_id,
        login_attempts.c.outcome.in_([1, 2]),
        login_attempts.c.ip == ip,
    )
    if device_id:
        query = query.where(login_attempts.c.device_id == device_id)
    return bool((await session.execute(query)).scalar_one())


# Sessions and refresh tokens


def _session_of(row: Any) -> Session:
    values = dict(row._mapping)
    values["state"] = SessionState(values["state"])
    values["methods"] = tuple(Method(value) for value in _ints(values["methods"]))
    values["roles"] = _ints(values["roles"])
    reason = values["revoke_reason"]
    values["revoke_reason"] = RevokeReason(reason) if reason is not None else None
    return Session(**values)


def _session_values(value: Session) -> dict[str, Any]:
    return {
        "session_id": value.session_id,
        "user_id": value.user_id,
        "state": int(value.state),
        "device_id": value.device_id,
        "device_name": value.device_name,
        "platform": value.platform,
        "login_ip": value.login_ip,
        "last_ip": value.last_ip,
        "user_agent": value.user_agent,
        "methods": _text(value.methods),
        "roles": _text(value.roles),
        "create_time_us": value.create_time_us,
        "last_refresh_time_us": value.last_refresh_time_us,
        "expire_time_us": value.expire_time_us,
        "revoke_time_us": value.revoke_time_us,
        "revoke_reason": int(value.revoke_reason) if value.revoke_reason is not None else None,
    }


async def insert_session(session: AsyncSession, value: Session) -> None:
    await session.execute(insert(sessions).values(**_session_values(value)))


async def update_session(session: AsyncSession, value: Session) -> None:
    await session.execute(
        update(sessions).where(sessions.c.session_id == value.session_id).values(**_session_values(value))
    )


async def session_by_id(session: AsyncSession, session_id: str, *, lock: bool = False) -> Session | None:
    row = await _one(session, select(sessions).where(sessions.c.session_id == session_id), lock=lock)
    return _session_of(row) if row is not None else None


async def active_sessions(session: AsyncSession, user_id: str) -> list[Session]:
    query = select(sessions).where(
        sessions.c.user_id == user_id, sessions.c.state == int(SessionState.ACTIVE)
    )
    return [_session_of(row) for row in await session.execute(query.with_for_update())]


async def list_sessions(
    session: AsyncSession,
    user_id: str,
    *,
    include_inactive: bool,
    after: tuple[int, int, str] | None,
    limit: int,
) -> list[Session]:
    """Sessions active first, then newest first: ordered by (state, -create time, id)."""
    query = select(sessions).where(sessions.c.user_id == user_id)
    if not include_inactive:
        query = query.where(sessions.c.state == int(SessionState.ACTIVE))
    key = tuple_(sessions.c.state, -sessions.c.create_time_us, sessions.c.session_id)
    if after is not None:
        query = query.where(key > tuple_(*after))
    order = (sessions.c.state, sessions.c.create_time_us.desc(), sessions.c.session_id)
    return [_session_of(row) for row in await session.execute(query.order_by(*order).limit(limit))]


def _refresh_of(row: Any) -> RefreshToken:
    values = dict(row._mapping)
    values["state"] = TokenState(values["state"])
    return RefreshToken(**values)


async def insert_refresh_token(session: AsyncSession, token: RefreshToken) -> None:
    await session.execute(
        insert(refresh_tokens).values(
            token_hash=token.token_hash,
            session_id=token.session_id,
            user_id=token.user_id,
            state=int(token.state),
            issue_time_us=token.issue_time_us,
            expire_time_us=token.expire_time_us,
            rotate_time_us=token.rotate_time_us,
        )
    )


async def refresh_token(session: AsyncSession, hashed: str) -> RefreshToken | None:
    row = await _one(session, select(refresh_tokens).where(refresh_tokens.c.token_hash == hashed), lock=True)
    return _refresh_of(row) if row is not None else None


async def rotate_refresh_token(session: AsyncSession, hashed: str, now_us: int) -> None:
    result = await session.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.token_hash == hashed, refresh_tokens.c.state == int(TokenState.ACTIVE))
        .values(state=int(TokenState.ROTATED), rotate_time_us=now_us)
    )
    # The caller locked the row and saw it ACTIVE.
    assert getattr(result, "rowcount", 0) == 1, hashed


async def revoke_family(session: AsyncSession, session_id: str) -> None:
    """Revokes every refresh token of a session that is still ACTIVE."""
    await session.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.session_id == session_id, refresh_tokens.c.state == int(TokenState.ACTIVE))
        .values(state=int(TokenState.REVOKED))
    )


# Responses kept for a retry (sealed)


async def replay(session: AsyncSession, method: str, request_id: str) -> Any:
    return await _one(
        session, select(replays).where(replays.c.method == method, replays.c.request_id == request_id)
    )


async def insert_replay(
    session: AsyncSession, method: str, request_id: str, fingerprint: str, sealed: bytes, expire_us: int
) -> None:
    await session.execute(
        insert(replays).values(
            method=method,
            request_id=request_id,
            fingerprint=fingerprint,
            sealed_response=sealed,
            expire_time_us=expire_us,
        )
    )


# Signing keys


def _key_of(row: Any) -> SigningKey:
    values = dict(row._mapping)
    values["state"] = KeyState(values["state"])
    values["public_jwk"] = json.loads(values["public_jwk"])
    return SigningKey(**values)


async def insert_signing_key(session: AsyncSession, key: SigningKey) -> None:
    await session.execute(
        insert(signing_keys).values(
            kid=key.kid,
            algorithm=key.algorithm,
            state=int(key.state),
            public_jwk=json.dumps(key.public_jwk, sort_keys=True),
            private_sealed=key.private_sealed,
            create_time_us=key.create_time_us,
            activate_time_us=key.activate_time_us,
            retire_time_us=key.retire_time_us,
            remove_time_us=key.remove_time_us,
        )
    )


async def update_signing_key(session: AsyncSession, key: SigningKey) -> None:
    await session.execute(
        update(signing_keys)
        .where(signing_keys.c.kid == key.kid)
        .values(
            state=int(key.state),
            activate_time_us=key.activate_time_us,
            retire_time_us=key.retire_time_us,
            remove_time_us=key.remove_time_us,
        )
    )


async def signing_keys_all(session: AsyncSession, *, lock: bool = False) -> list[SigningKey]:
    """Every key, newest first."""
    query = select(signing_keys).order_by(signing_keys.c.create_time_us.desc(), signing_keys.c.kid)
    return [_key_of(row) for row in await session.execute(query.with_for_update() if lock else query)]


# TOTP, recovery codes, challenges and step-up tokens


async def totp_of(session: AsyncSession, user_id: str, *, lock: bool = False) -> Any:
    return await _one(session, select(totp).where(totp.c.user_id == user_id), lock=lock)


async def put_totp(session: AsyncSession, user_id: str, **values: Any) -> None:
    await session.execute(delete(totp).where(totp.c.user_id == user_id))
    await session.execute(insert(totp).values(user_id=user_id, **values))


async def update_totp(session: AsyncSession, user_id: str, **values: Any) -> None:
    await session.execute(update(totp).where(totp.c.user_id == user_id).values(**values))


async def delete_totp(session: AsyncSession, user_id: str) -> None:
    await session.execute(delete(totp).where(totp.c.user_id == user_id))
    await session.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))


async def replace_recovery_codes(session: AsyncSession, user_id: str, hashes: Sequence[str]) -> None:
    await session.execute(delete(recovery_codes).where(recovery_codes.c.user_id == user_id))
    await session.execute(
        insert(recovery_codes),
        [{"user_id": user_id, "code_hash": hashed, "used_time_us": None} for hashed in hashes],
    )


async def spend_recovery_code(session: AsyncSession, user_id: str, hashed: str, now_us: int) -> bool:
    """Marks an unused code used; False when there is no such unused code."""
    result = await session.execute(
        update(recovery_codes)
        .where(
            recovery_codes.c.user_id == user_id,
            recovery_codes.c.code_hash == hashed,
            recovery_codes.c.used_time_us.is_(None),
        )
        .values(used_time_us=now_us)
    )
    return getattr(result, "rowcount", 0) == 1


async def recovery_codes_left(session: AsyncSession, user_id: str) -> int:
    query = select(func.count()).where(
        recovery_codes.c.user_id == user_id, recovery_codes.c.used_time_us.is_(None)
    )
    return int((await session.execute(query)).scalar_one())


async def insert_challenge(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(challenges).values(**values))


async def challenge(session: AsyncSession, hashed: str) -> Any:
    return await _one(session, select(challenges).where(challenges.c.challenge_hash == hashed), lock=True)


async def update_challenge(session: AsyncSession, hashed: str, **values: Any) -> None:
    await session.execute(update(challenges).where(challenges.c.challenge_hash == hashed).values(**values))


async def insert_step_up(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(step_ups).values(**values))


async def step_up(session: AsyncSession, hashed: str) -> Any:
    return await _one(session, select(step_ups).where(step_ups.c.token_hash == hashed), lock=True)


async def redeem_step_up(session: AsyncSession, hashed: str, request_id: str) -> None:
    await session.execute(
        update(step_ups).where(step_ups.c.token_hash == hashed).values(redeem_request_id=request_id)
    )


# API keys


def _api_key_of(row: Any) -> ApiKey:
    values = dict(row._mapping)
    values["state"] = ApiKeyState(values["state"])
    values["scopes"] = tuple(json.loads(values["scopes"]))
    values["allowed_ip_ranges"] = tuple(json.loads(values["allowed_ip_ranges"]))
    return ApiKey(**values)


def _api_key_values(key: ApiKey) -> dict[str, Any]:
    return {
        "api_key_id": key.api_key_id,
        "user_id": key.user_id,
        "display_name": key.display_name,
        "scopes": json.dumps(list(key.scopes)),
        "allowed_ip_ranges": json.dumps(list(key.allowed_ip_ranges)),
        "expire_time_us": key.expire_time_us,
        "state": int(key.state),
        "secret_sealed": key.secret_sealed,
        "secret_fingerprint": key.secret_fingerprint,
        "create_time_us": key.create_time_us,
        "last_used_time_us": key.last_used_time_us,
        "last_used_ip": key.last_used_ip,
        "revoke_time_us": key.revoke_time_us,
    }


async def insert_api_key(session: AsyncSession, key: ApiKey) -> None:
    await session.execute(insert(api_keys).values(**_api_key_values(key)))


async def update_api_key(session: AsyncSession, key: ApiKey) -> None:
    await session.execute(
        update(api_keys).where(api_keys.c.api_key_id == key.api_key_id).values(**_api_key_values(key))
    )


async def api_key_by_id(session: AsyncSession, api_key_id: str, *, lock: bool = False) -> ApiKey | None:
    row = await _one(session, select(api_keys).where(api_keys.c.api_key_id == api_key_id), lock=lock)
    return _api_key_of(row) if row is not None else None


async def active_api_key_count(session: AsyncSession, user_id: str, now_us: int) -> int:
    query = select(func.count()).where(
        api_keys.c.user_id == user_id,
        api_keys.c.state == int(ApiKeyState.ACTIVE),
        api_keys.c.expire_time_us > now_us,
    )
    return int((await session.execute(query)).scalar_one())


async def list_api_keys(
    session: AsyncSession, user_id: str, *, after: tuple[int, str] | None, limit: int
) -> list[ApiKey]:
    """A user's keys newest first."""
    query = select(api_keys).where(api_keys.c.user_id == user_id)
    if after is not None:
        query = query.where(tuple_(api_keys.c.create_time_us, api_keys.c.api_key_id) < tuple_(*after))
    order = (api_keys.c.create_time_us.desc(), api_keys.c.api_key_id.desc())
    return [_api_key_of(row) for row in await session.execute(query.order_by(*order).limit(limit))]


# Roles


async def active_roles(session: AsyncSession, user_id: str, now_us: int) -> set[int]:
    """Roles of a user's ACTIVE assignments that have not run out."""
    query = select(role_assignments.c.role, role_assignments.c.expire_time_us).where(
        role_assignments.c.user_id == user_id, role_assignments.c.state == 2
    )
    return {
        row.role
        for row in await session.execute(query)
        if row.expire_time_us is None or row.expire_time_us > now_us
    }


async def insert_assignment(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(role_assignments).values(**values))


async def update_assignment(session: AsyncSession, assignment_id: str, **values: Any) -> None:
    await session.execute(
        update(role_assignments)
        .where(role_assignments.c.role_assignment_id == assignment_id)
        .values(**values)
    )


async def assignment(session: AsyncSession, assignment_id: str) -> Any:
    query = select(role_assignments).where(role_assignments.c.role_assignment_id == assignment_id)
    return await _one(session, query, lock=True)


async def open_assignments(session: AsyncSession, user_id: str, role: int) -> list[Any]:
    """A user's PENDING_APPROVAL and ACTIVE assignments of one role."""
    query = select(role_assignments).where(
        role_assignments.c.user_id == user_id,
        role_assignments.c.role == role,
        role_assignments.c.state.in_([1, 2]),
    )
    return list((await session.execute(query.with_for_update())).all())


async def active_holders(session: AsyncSession, role: int) -> set[str]:
    query = select(role_assignments.c.user_id).where(
        role_assignments.c.role == role, role_assignments.c.state == 2
    )
    return {row.user_id for row in await session.execute(query)}


async def list_assignments(
    session: AsyncSession,
    *,
    user_id: str,
    role: int,
    states: Sequence[int],
    before: tuple[int, str] | None,
    limit: int,
) -> list[Any]:
    """Assignments newest first, filtered."""
    query = select(role_assignments)
    if user_id:
        query = query.where(role_assignments.c.user_id == user_id)
    if role:
        query = query.where(role_assignments.c.role == role)
    if states:
        query = query.where(role_assignments.c.state.in_(list(states)))
    key = tuple_(role_assignments.c.create_time_us, role_assignments.c.role_assignment_id)
    if before is not None:
        query = query.where(key < tuple_(*before))
    order = (role_assignments.c.create_time_us.desc(), role_assignments.c.role_assignment_id.desc())
    return list((await session.execute(query.order_by(*order).limit(limit))).all())
