"""AuthService: translates the contract's messages to the domain and back, and sequences the
calls to the user service and the local transaction of each operation.

Responses that carry a secret (tokens, TOTP seeds, recovery codes, step-up tokens) are never
kept in the kit's idempotency table: a retry within a short window replays them from a sealed
copy (`_replayed`/`_remember`), after which the request_id is only remembered, not replayed.

Failures that must leave a trace (a wrong password counts towards the lockout, a reused refresh
token revokes its family) commit that trace first and raise afterwards, so that the refusal
never rolls back its own consequence.

Client metadata set by the edge: `x-finmesh-client-ip` or `x-forwarded-for` (the client's IP
as the gateway determined it; the first entry) and `x-finmesh-user-agent`; without them (an
internal caller) the peer address is the IP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import time
import uuid
from collections.abc import Sequence
from typing import Any

import jwt
from finmesh.auth.v1 import auth_resources_pb2 as resources
from finmesh.auth.v1 import auth_service_pb2 as service
from finmesh.auth.v1 import auth_service_pb2_grpc as service_grpc
from finmesh.common.v1 import enums_pb2
from finmesh.events.v1 import auth_events_pb2 as auth_events
from google.protobuf.message import Message
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.auth import convert, domain, events, rbac, resets, signatures, store, totp
from svc.auth.domain import (
    ApiKey,
    ApiKeyState,
    AssignmentState,
    Counter,
    Factor,
    KeyState,
    Method,
    Outcome,
    RefreshToken,
    RevokeReason,
    Session,
    SessionState,
    SignatureFailure,
    TokenState,
)
from svc.auth.keyring import KeyRing
from svc.auth.nonces import NonceStore
from svc.auth.passwords import Passwords
from svc.auth.rbac import Role
from svc.auth.resets import ResetNotices
from svc.auth.users import UserRecord, Users
from svc.kit import errors, idempotency, identifiers, paging
from svc.kit.context import EndUser, call
from svc.kit.db import Database
from svc.kit.sealing import Sealer

SERVICE = "/finmesh.auth.v1.AuthService/"
CLIENT_IP_METADATA = "x-finmesh-client-ip"
# What the REST gateway sends: the client IP it determined (first entry).
FORWARDED_FOR_METADATA = "x-forwarded-for"
USER_AGENT_METADATA = "x-finmesh-user-agent"
ISSUER = "finmesh-auth"
AUDIENCE = "finmesh"
INTROSPECT_LEEWAY_S = 30
REFRESH_PREFIX = "rt_"
CHALLENGE_PREFIX = "lc_"
STEP_UP_PREFIX = "su_"
SECRET_REPLAY_US = 60 * domain.S_US
ENROLLMENT_REPLAY_US = domain.ENROLLMENT_TTL_US
STAFF = frozenset(rbac.STAFF_ROLES)


def _now_us() -> int:
    return time.time_ns() // 1000


def _metadata(context: Any, key: str) -> str:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


def _client_ip(context: Any) -> str:
    """The client's IP from the edge's metadata, else the peer's address."""
    forwarded = _metadata(context, FORWARDED_FOR_METADATA).split(",")[0].strip()
    sent = _metadata(context, CLIENT_IP_METADATA) or forwarded
    candidate = sent or context.peer().split(":", 1)[-1].rsplit(":", 1)[0].strip("[]")
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        if sent:
            raise errors.InvalidArgument(
                [errors.FieldViolation(CLIENT_IP_METADATA, "not an IP address", "format")]
            ) from None
        return "0.0.0.0"


def _user_agent(context: Any) -> str:
    return _metadata(context, USER_AGENT_METADATA)[: domain.USER_AGENT_CHARS_MAX]


def _end_user() -> EndUser | None:
    served = call()
    return served.user if served is not None else None


def _me() -> EndUser:
    user = _end_user()
    if user is None:
        raise errors.Unauthenticated("this method acts on the calling user: send an access token")
    return user


def _token_roles(user: EndUser) -> set[Role]:
    return {role for role in Role if role.claim in user.roles}


def _require_role(*allowed: Role) -> None:
    """End users need one of the roles; internal callers (no end-user token) pass."""
    user = _end_user()
    if user is not None and not _token_roles(user) & set(allowed):
        names = ", ".join(role.claim for role in allowed)
        raise errors.PermissionDenied(
            f"requires one of the roles: {names}", metadata={"required_roles": names}
        )


def _require_internal() -> None:
    if _end_user() is not None:
        raise errors.PermissionDenied("an internal method: platform services only")


def _identifier(request: Any) -> tuple[str, str]:
    if request.HasField("email"):
        return identifiers.normal_email(request.email), ""
    return "", identifiers.normal_phone(request.phone)


class _WrongResetFactor(errors.Unauthenticated):
    """A reset of a user with TOTP without a valid second factor."""


class AuthServicer(service_grpc.AuthServiceServicer):
    """The auth service's gRPC surface."""

    def __init__(
        self,
        database: Database,
        users: Users,
        keyring: KeyRing,
        sealer: Sealer,
        passwords: Passwords,
        nonces: NonceStore,
        identifier_key: bytes,
        bootstrap_admins: Sequence[str] = (),
        reset_notices: ResetNotices | None = None,
    ) -> None:
        self.reset_notices = reset_notices
        self.database = database
        self.users = users
        self.keyring = keyring
        self.sealer = sealer
        self.passwords = passwords
        self.nonces = nonces
        self.identifier_key = identifier_key
        self.bootstrap_admins = frozenset(bootstrap_admins)

    # Sealed replays of secret-bearing responses

    async def _replayed(
        self, session: AsyncSession, method: str, request: Any, response_type: type[Any]
    ) -> Any | None:
        row = await store.replay(session, method, request.request_id)
        if row is None:
            return None
        if row.fingerprint != idempotency.fingerprint(request):
            raise errors.IdempotencyKeyReused(
                "request_id was already used with a different request",
                metadata={"request_id": request.request_id, "method": method},
            )
        if row.expire_time_us < _now_us() or row.sealed_response is None:
            raise errors.InvalidState(
                "this request_id was served and its response can no longer be replayed: use a new one",
                metadata={"request_id": request.request_id},
            )
        aad = f"{method}:{request.request_id}".encode()
        return response_type.FromString(self.sealer.open(row.sealed_response, aad=aad))

    async def _remember(
        self, session: AsyncSession, method: str, request: Any, response: Message, keep_us: int
    ) -> None:
        aad = f"{method}:{request.request_id}".encode()
        await store.insert_replay(
            session,
            method,
            request.request_id,
            idempotency.fingerprint(request),
            self.sealer.seal(response.SerializeToString(), aad=aad),
            _now_us() + keep_us,
        )

    # Roles, sessions and tokens

    async def _roles(self, session: AsyncSession, user_id: str, now_us: int) -> set[Role]:
        roles = {Role.USER} | {Role(value) for value in await store.active_roles(session, user_id, now_us)}
        if user_id in self.bootstrap_admins:
            roles.add(Role.ADMIN)
        return roles

    async def _access_token(
        self,
        *,
        user_id: str,
        roles: set[Role],
        scopes: Sequence[str],
        session_id: str,
        methods: Sequence[Method],
        auth_time_us: int,
        ttl_s: int,
        now_us: int,
        api_key_id: str = "",
    ) -> tuple[str, int]:
        now_s = now_us // domain.S_US
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": user_id,
            "aud": AUDIENCE,
            "iat": now_s,
            "nbf": now_s,
            "exp": now_s + ttl_s,
            "jti": str(uuid.uuid4()),
            "auth_time": auth_time_us // domain.S_US,
            "amr": sorted({method.amr for method in methods}),
            "roles": [role.claim for role in sorted(roles)],
            "scope": " ".join(scopes),
        }
        if session_id:
            claims["sid"] = session_id
        if api_key_id:
            claims["api_key_id"] = api_key_id
        token, _kid = self.keyring.sign(claims)
        return token, (now_s + ttl_s) * domain.S_US

    async def _issue(self, session: AsyncSession, login: Session, now_us: int) -> resources.TokenPair:
        """A new refresh token in the session's family and an access token with today's roles."""
        refresh = domain.new_token(REFRESH_PREFIX)
        refresh_expire_us = min(now_us + domain.REFRESH_IDLE_US, login.expire_time_us)
        await store.insert_refresh_token(
            session,
            RefreshToken(
                token_hash=domain.token_hash(refresh),
                session_id=login.session_id,
                user_id=login.user_id,
                state=TokenState.ACTIVE,
                issue_time_us=now_us,
                expire_time_us=refresh_expire_us,
            ),
        )
        roles = await self._roles(session, login.user_id, now_us)
        access, access_expire_us = await self._access_token(
            user_id=login.user_id,
            roles=roles,
            scopes=rbac.user_scopes(roles),
            session_id=login.session_id,
            methods=login.methods,
            auth_time_us=login.create_time_us,
            ttl_s=domain.ACCESS_TOKEN_TTL_S,
            now_us=now_us,
        )
        return resources.TokenPair(
            access_token=access,
            token_type="Bearer",
            access_token_expire_time=convert.timestamp(access_expire_us),
            refresh_token=refresh,
            refresh_token_expire_time=convert.timestamp(refresh_expire_us),
            session_id=login.session_id,
        )

    async def _open_session(
        self,
        session: AsyncSession,
        user_id: str,
        methods: Sequence[Method],
        ip: str,
        user_agent: str,
        device: resources.DeviceInfo,
        now_us: int,
        identifier_hash: str,
    ) -> resources.TokenPair:
        """Creates a session, its first tokens, the attempt record and LoginSucceeded."""
        new_place = not await store.seen_before(session, user_id, ip, device.device_id)
        login = Session(
            session_id=str(uuid.uuid4()),
            user_id=user_id,
            state=SessionState.ACTIVE,
            device_id=device.device_id,
            device_name=device.device_name,
            platform=int(device.platform),
            login_ip=ip,
            last_ip=ip,
            user_agent=user_agent,
            methods=tuple(methods),
            roles=tuple(sorted(await self._roles(session, user_id, now_us))),
            create_time_us=now_us,
            last_refresh_time_us=now_us,
            expire_time_us=now_us + domain.SESSION_ABSOLUTE_US,
        )
        await store.insert_session(session, login)
        tokens = await self._issue(session, login, now_us)
        await self._attempt(
            session,
            user_id,
            identifier_hash,
            Outcome.SUCCEEDED,
            ip,
            user_agent,
            device.device_id,
            now_us,
            session_id=login.session_id,
            new_place=new_place,
        )
        await events.publish(
            session,
            auth_events.LoginSucceeded,
            login.session_id,
            user_id=user_id,
            session_id=login.session_id,
            ip=ip,
            device=device,
            auth_methods=[int(method) for method in methods],
            new_device_or_ip=new_place,
        )
        return tokens

    async def _attempt(
        self,
        session: AsyncSession,
        user_id: str,
        identifier_hash: str,
        outcome: Outcome,
        ip: str,
        user_agent: str,
        device_id: str,
        now_us: int,
        *,
        session_id: str = "",
        new_place: bool = False,
    ) -> None:
        await store.insert_login_attempt(
            session,
            login_attempt_id=str(uuid.uuid4()),
            user_id=user_id,
            identifier_hash=identifier_hash,
            outcome=int(outcome),
            ip=ip,
            user_agent=user_agent,
            device_id=device_id,
            new_device_or_ip=new_place,
            session_id=session_id,
            attempt_time_us=now_us,
        )

    async def _revoke(
        self, session: AsyncSession, login: Session, reason: RevokeReason, by: str, now_us: int
    ) -> Session:
        return await events.revoke_session(session, login, reason, by, now_us)

    # Lockout

    def _identifier_hash(self, email: str, phone: str) -> str:
        return domain.keyed_hash(self.identifier_key, email or phone)

    async def _locked(self, identifier_hash: str, ip: str, now_us: int) -> domain.RateLimited | None:
        async with self.database.transaction() as session:
            by_identifier = await store.counter(session, "id:" + identifier_hash)
            by_ip = await store.counter(session, "ip:" + ip)
            wait_s = max(by_identifier.retry_after_s(now_us), by_ip.retry_after_s(now_us))
            if not wait_s:
                return None
            await events.publish(
                session,
                auth_events.LoginFailed,
                identifier_hash,
                identifier_hash=identifier_hash,
                ip=ip,
                outcome=int(Outcome.LOCKED_OUT),
                consecutive_failures=by_identifier.failures,
            )
        return domain.RateLimited("too many failed logins: try again later", retry_after_s=wait_s)

    async def _count_failure(
        self,
        identifier_hash: str,
        ip: str,
        user: UserRecord | None,
        outcome: Outcome,
        user_agent: str,
        device_id: str,
        now_us: int,
    ) -> None:
        """Counts one failure against the identifier and the IP, known identifier or not."""
        for attempt in range(2):
            try:
                async with self.database.transaction() as session:
                    await self._count_failure_in(
                        session, identifier_hash, ip, user, outcome, user_agent, device_id, now_us
                    )
                return
            except IntegrityError:
                # Two first failures of one counter raced to insert it; the second pass updates.
                if attempt:
                    raise

    async def _count_failure_in(
        self,
        session: AsyncSession,
        identifier_hash: str,
        ip: str,
        user: UserRecord | None,
        outcome: Outcome,
        user_agent: str,
        device_id: str,
        now_us: int,
    ) -> None:
        before: dict[str, Counter] = {
            "id": await store.counter(session, "id:" + identifier_hash, lock=True),
            "ip": await store.counter(session, "ip:" + ip, lock=True),
        }
        after = {
            "id": domain.identifier_failed(before["id"], now_us),
            "ip": domain.ip_failed(before["ip"], now_us),
        }
        for counted in after.values():
            await store.save_counter(session, counted)
        user_id = user.user_id if user is not None else ""
        if user is not None:
            await self._attempt(session, user_id, identifier_hash, outcome, ip, user_agent, device_id, now_us)
        await events.publish(
            session,
            auth_events.LoginFailed,
            user_id or identifier_hash,
            user_id=user_id,
            identifier_hash=identifier_hash,
            ip=ip,
            outcome=int(outcome),
            consecutive_failures=after["id"].failures,
        )
        for kind, counted in after.items():
            if counted.locked_until_us > max(before[kind].locked_until_us, now_us):
                await events.publish(
                    session,
                    auth_events.LoginLockedOut,
                    user_id or identifier_hash,
                    user_id=user_id if kind == "id" else "",
                    identifier_hash=identifier_hash if kind == "id" else "",
                    ip=ip,
                    ip_lockout=kind == "ip",
                    locked_until=convert.timestamp(counted.locked_until_us),
                    failure_count=counted.failures,
                )

    # Login

    async def CreatePasswordCredential(
        self, request: service.CreatePasswordCredentialRequest, context: Any
    ) -> Any:
        """Stores the first password of a new user (argon2id). Internal: the user service."""
        _require_internal()
        method = SERVICE + "CreatePasswordCredential"
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(
                session, method, request, service.CreatePasswordCredentialResponse
            )
        if replay is not None:
            return replay
        hashed = await asyncio.to_thread(self.passwords.hash, request.password)

        async def work(session: AsyncSession) -> service.CreatePasswordCredentialResponse:
            if await store.password_hash(session, request.user_id) is not None:
                raise errors.AlreadyExists(
                    "the user already has a password", metadata={"user_id": request.user_id}
                )
            now_us = _now_us()
            await store.insert_credential(session, request.user_id, hashed, now_us)
            await events.publish(
                session, auth_events.PasswordCredentialCreated, request.user_id, user_id=request.user_id
            )
            return service.CreatePasswordCredentialResponse(create_time=convert.timestamp(now_us))

        return await idempotency.run_once(
            self.database, method, request, service.CreatePasswordCredentialResponse, work
        )

    async def Login(self, request: service.LoginRequest, context: Any) -> Any:
        """Password step: tokens, or a TOTP challenge; the same refusal for every wrong identifier."""
        await self.keyring.current()  # loaded before any transaction: signing never reloads
        method = SERVICE + "Login"
        async with self.database.transaction() as session:
            replay = await self._replayed(session, method, request, service.LoginResponse)
        if replay is not None:
            return replay
        email, phone = _identifier(request)
        ip, user_agent = _client_ip(context), _user_agent(context)
        identifier_hash = self._identifier_hash(email, phone)
        now_us = _now_us()
        locked = await self._locked(identifier_hash, ip, now_us)
        if locked is not None:
            raise locked
        user = await self.users.lookup(email=email, phone=phone)
        stored = None
        if user is not None:
            async with self.database.transaction() as session:
                stored = await store.password_hash(session, user.user_id)
        # An unknown identifier is verified against a dummy hash: the same work, the same answer.
        matched = await asyncio.to_thread(self.passwords.verify, stored, request.password)
        if user is None or not matched:
            await self._count_failure(
                identifier_hash,
                ip,
                user,
                Outcome.WRONG_PASSWORD,
                user_agent,
                request.device.device_id,
                now_us,
            )
            raise domain.wrong_credentials()
        async with self.database.transaction() as session:
            await store.clear_counter(session, "id:" + identifier_hash)
            if not user.active:
                await self._attempt(
                    session,
                    user.user_id,
                    identifier_hash,
                    Outcome.USER_NOT_ACTIVE,
                    ip,
                    user_agent,
                    request.device.device_id,
                    now_us,
                )
        if not user.active:
            raise domain.UserNotActive("the user is frozen or closed")
        async with self.database.transaction() as session:
            authenticator = await store.totp_of(session, user.user_id)
            if authenticator is not None and authenticator.state == int(domain.TotpState.ENABLED):
                response = await self._challenge(
                    session, user, identifier_hash, ip, user_agent, request, now_us
                )
            else:
                tokens = await self._open_session(
                    session,
                    user.user_id,
                    (Method.PASSWORD,),
                    ip,
                    user_agent,
                    request.device,
                    now_us,
                    identifier_hash,
                )
                response = service.LoginResponse(tokens=tokens)
            await self._remember(session, method, request, response, SECRET_REPLAY_US)
        return response

    async def _challenge(
        self,
        session: AsyncSession,
        user: UserRecord,
        identifier_hash: str,
        ip: str,
        user_agent: str,
        request: service.LoginRequest,
        now_us: int,
    ) -> service.LoginResponse:
        token = domain.new_token(CHALLENGE_PREFIX)
        expire_us = now_us + domain.CHALLENGE_TTL_US
        await store.insert_challenge(
            session,
            challenge_hash=domain.token_hash(token),
            user_id=user.user_id,
            identifier_hash=identifier_hash,
            ip=ip,
            user_agent=user_agent,
            device_id=request.device.device_id,
            device_name=request.device.device_name,
            platform=int(request.device.platform),
            expire_time_us=expire_us,
            failures=0,
            used=False,
        )
        await self._attempt(
            session,
            user.user_id,
            identifier_hash,
            Outcome.CHALLENGED,
            ip,
            user_agent,
            request.device.device_id,
            now_us,
        )
        return service.LoginResponse(
            challenge=service.LoginChallenge(
                challenge_token=token,
                allowed_factors=[service.SECOND_FACTOR_TOTP, service.SECOND_FACTOR_RECOVERY_CODE],
                expire_time=convert.timestamp(expire_us),
            )
        )

    async def _second_factor(
        self, session: AsyncSession, user_id: str, totp_code: str, recovery_code: str, now_us: int
    ) -> Factor | None:
        """Checks and spends a TOTP code (its step never again) or a recovery code."""
        if totp_code:
            row = await store.totp_of(session, user_id, lock=True)
            if row is None or row.state != int(domain.TotpState.ENABLED):
                return None
            secret = self.sealer.open(row.secret_sealed, aad=f"auth.totp:{user_id}".encode())
            step = totp.matching_step(secret, totp_code, now_us / domain.S_US, last_used_step=row.last_step)
            if step is None:
                return None
            await store.update_totp(session, user_id, last_step=step)
            return Factor.TOTP
        hashed = domain.keyed_hash(self.identifier_key, domain.normal_recovery_code(recovery_code))
        if not await store.spend_recovery_code(session, user_id, hashed, now_us):
            return None
        left = await store.recovery_codes_left(session, user_id)
        await events.publish(session, auth_events.RecoveryCodeUsed, user_id, user_id=user_id, remaining=left)
        return Factor.RECOVERY_CODE

    async def CompleteLogin(self, request: service.CompleteLoginRequest, context: Any) -> Any:
        """Second-factor step: tokens for a right code; five wrong ones void the challenge."""
        await self.keyring.current()  # loaded before any transaction: signing never reloads
        method = SERVICE + "CompleteLogin"
        async with self.database.transaction() as session:
            replay = await self._replayed(session, method, request, service.CompleteLoginResponse)
        if replay is not None:
            return replay
        hashed = domain.token_hash(request.challenge_token)
        now_us = _now_us()
        async with self.database.transaction() as session:
            pending = await store.challenge(session, hashed)
        if pending is None or pending.used or pending.expire_time_us <= now_us:
            raise errors.Unauthenticated("the login challenge is unknown, used or expired: log in again")
        await self.users.require_active(pending.user_id)
        refusal: errors.DomainError | None = None
        response = service.CompleteLoginResponse()
        async with self.database.transaction() as session:
            pending = await store.challenge(session, hashed)
            assert pending is not None
            if pending.used:
                raise errors.Unauthenticated("the login challenge is unknown, used or expired: log in again")
            factor = await self._second_factor(
                session, pending.user_id, request.totp_code, request.recovery_code, now_us
            )
            device = resources.DeviceInfo(
                device_id=pending.device_id, device_name=pending.device_name, platform=pending.platform
            )
            if factor is None:
                failures = pending.failures + 1
                await store.update_challenge(
                    session, hashed, failures=failures, used=failures >= domain.CHALLENGE_FAILURES_MAX
                )
                refusal = errors.Unauthenticated("the second factor is wrong")
            else:
                await store.update_challenge(session, hashed, used=True)
                second = Method.TOTP if factor is Factor.TOTP else Method.RECOVERY_CODE
                tokens = await self._open_session(
                    session,
                    pending.user_id,
                    (Method.PASSWORD, second),
                    pending.ip,
                    pending.user_agent,
                    device,
                    now_us,
                    pending.identifier_hash,
                )
                response = service.CompleteLoginResponse(
                    tokens=tokens,
                    recovery_codes_remaining=await store.recovery_codes_left(session, pending.user_id),
                )
                await self._remember(session, method, request, response, SECRET_REPLAY_US)
        if refusal is not None:
            # A wrong second factor counts towards the account's lockout like a wrong password.
            user = UserRecord(pending.user_id, True, "")
            await self._count_failure(
                pending.identifier_hash,
                pending.ip,
                user,
                Outcome.WRONG_SECOND_FACTOR,
                pending.user_agent,
                pending.device_id,
                now_us,
            )
            raise refusal
        return response

    async def RefreshToken(self, request: service.RefreshTokenRequest, context: Any) -> Any:
        """Rotates a refresh token; a spent one presented again revokes its whole family."""
        await self.keyring.current()  # loaded before any transaction: signing never reloads
        method = SERVICE + "RefreshToken"
        async with self.database.transaction() as session:
            replay = await self._replayed(session, method, request, service.RefreshTokenResponse)
        if replay is not None:
            return replay
        hashed = domain.token_hash(request.refresh_token)
        ip = _client_ip(context)
        async with self.database.transaction() as session:
            presented = await store.refresh_token(session, hashed)
        if presented is None:
            raise errors.Unauthenticated("the refresh token is not valid")
        user = await self.users.get(presented.user_id)
        now_us = _now_us()
        refusal: errors.DomainError | None = None
        async with self.database.transaction() as session:
            presented = await store.refresh_token(session, hashed)
            assert presented is not None
            login = await store.session_by_id(session, presented.session_id, lock=True)
            assert login is not None, presented
            if presented.state is TokenState.ROTATED and login.state is SessionState.ACTIVE:
                await self._revoke(session, login, RevokeReason.REFRESH_TOKEN_REUSE, "system", now_us)
                await events.publish(
                    session,
                    auth_events.RefreshTokenReuseDetected,
                    login.session_id,
                    user_id=login.user_id,
                    session_id=login.session_id,
                    ip=ip,
                    rotate_time=convert.timestamp(presented.rotate_time_us or now_us),
                )
                refusal = errors.Unauthenticated(
                    "the refresh token was already used: the session is revoked", metadata={"reuse": "true"}
                )
            elif (
                presented.state is not TokenState.ACTIVE
                or login.state is not SessionState.ACTIVE
                or presented.expire_time_us <= now_us
            ):
                refusal = errors.Unauthenticated("the refresh token is not valid")
            elif not user.active:
                await self._revoke(session, login, RevokeReason.USER_STATUS, "system", now_us)
                refusal = domain.UserNotActive("the user is frozen or closed")
            else:
                await store.rotate_refresh_token(session, hashed, now_us)
                login = dataclasses.replace(login, last_ip=ip, last_refresh_time_us=now_us)
                await store.update_session(session, login)
                response = service.RefreshTokenResponse(tokens=await self._issue(session, login, now_us))
                await self._remember(session, method, request, response, domain.REFRESH_RETRY_WINDOW_US)
        if refusal is not None:
            raise refusal
        return response

    async def Logout(self, request: service.LogoutRequest, context: Any) -> Any:
        """Revokes the caller's current session."""
        me = _me()

        async def work(session: AsyncSession) -> service.LogoutResponse:
            login = await self._own_session(session, me, me.session_id)
            if login.state is SessionState.ACTIVE:
                login = await self._revoke(session, login, RevokeReason.LOGOUT, me.subject, _now_us())
            return service.LogoutResponse(session=convert.session_message(login, me.session_id))

        return await idempotency.run_once(
            self.database, SERVICE + "Logout", request, service.LogoutResponse, work
        )

    async def _own_session(self, session: AsyncSession, me: EndUser, session_id: str) -> Session:
        login = await store.session_by_id(session, session_id, lock=True) if session_id else None
        if login is None or login.user_id != me.subject:
            raise errors.NotFound(f"no session {session_id}", metadata={"session_id": session_id})
        return login

    async def RevokeSession(self, request: service.RevokeSessionRequest, context: Any) -> Any:
        """Revokes one of the caller's sessions."""
        me = _me()

        async def work(session: AsyncSession) -> service.RevokeSessionResponse:
            login = await self._own_session(session, me, request.session_id)
            if login.state is SessionState.ACTIVE:
                login = await self._revoke(session, login, RevokeReason.USER_REVOKED, me.subject, _now_us())
            return service.RevokeSessionResponse(session=convert.session_message(login, me.session_id))

        return await idempotency.run_once(
            self.database, SERVICE + "RevokeSession", request, service.RevokeSessionResponse, work
        )

    async def RevokeOtherSessions(self, request: service.RevokeOtherSessionsRequest, context: Any) -> Any:
        """Revokes every session of the caller but the current one."""
        me = _me()

        async def work(session: AsyncSession) -> service.RevokeOtherSessionsResponse:
            count = await self._revoke_all(
                session, me.subject, RevokeReason.USER_REVOKED, me.subject, me.session_id
            )
            return service.RevokeOtherSessionsResponse(revoked_count=count)

        return await idempotency.run_once(
            self.database, SERVICE + "RevokeOtherSessions", request, service.RevokeOtherSessionsResponse, work
        )

    async def _revoke_all(
        self, session: AsyncSession, user_id: str, reason: RevokeReason, by: str, keep: str = ""
    ) -> int:
        now_us = _now_us()
        revoked = 0
        for login in await store.active_sessions(session, user_id):
            if login.session_id != keep:
                await self._revoke(session, login, reason, by, now_us)
                revoked += 1
        return revoked

    async def ListSessions(self, request: service.ListSessionsRequest, context: Any) -> Any:
        """The caller's sessions, active first, then newest first."""
        me = _me()
        sessions, token = await self._sessions(
            me.subject, request.include_inactive, request.page_size, request.page_token
        )
        return service.ListSessionsResponse(
            sessions=[convert.session_message(login, me.session_id) for login in sessions],
            next_page_token=token,
        )

    async def ListUserSessions(self, request: service.ListUserSessionsRequest, context: Any) -> Any:
        """A user's sessions, for support."""
        _require_role(*STAFF)
        sessions, token = await self._sessions(
            request.user_id, request.include_inactive, request.page_size, request.page_token
        )
        return service.ListUserSessionsResponse(
            sessions=[convert.session_message(login) for login in sessions], next_page_token=token
        )

    async def _sessions(
        self, user_id: str, include_inactive: bool, page_size: int, page_token: str
    ) -> tuple[list[Session], str]:
        position = _position(page_token, user_id)
        limit = paging.page_size(page_size)
        after = (int(position["s"]), -int(position["t"]), str(position["i"])) if position else None
        async with self.database.transaction() as session:
            found = await store.list_sessions(
                session, user_id, include_inactive=include_inactive, after=after, limit=limit + 1
            )
        page = found[:limit]
        token = ""
        if len(found) > limit:
            last = page[-1]
            token = _token(
                {"s": int(last.state), "t": last.create_time_us, "i": last.session_id, "f": user_id}
            )
        return page, token

    async def RevokeUserSessions(self, request: service.RevokeUserSessionsRequest, context: Any) -> Any:
        """Revokes all (or the named) sessions of a user. Operator and above."""
        _require_role(Role.OPERATOR, Role.ADMIN)
        by = (_end_user() or EndUser(subject="system")).subject
        named = set(request.session_ids)

        async def work(session: AsyncSession) -> service.RevokeUserSessionsResponse:
            now_us = _now_us()
            count = 0
            for login in await store.active_sessions(session, request.user_id):
                if not named or login.session_id in named:
                    await self._revoke(session, login, RevokeReason.ADMIN_REVOKED, by, now_us)
                    count += 1
            return service.RevokeUserSessionsResponse(revoked_count=count)

        return await idempotency.run_once(
            self.database, SERVICE + "RevokeUserSessions", request, service.RevokeUserSessionsResponse, work
        )

    async def ClearLoginLockout(self, request: service.ClearLoginLockoutRequest, context: Any) -> Any:
        """Clears the lockout of the identifiers a user logged in with. Operator and above."""
        _require_role(Role.OPERATOR, Role.ADMIN)
        by = (_end_user() or EndUser(subject="system")).subject

        async def work(session: AsyncSession) -> service.ClearLoginLockoutResponse:
            now_us = _now_us()
            hashes = await store.identifier_hashes_of(session, request.user_id)
            was_locked = False
            for identifier_hash in hashes:
                counted = await store.counter(session, "id:" + identifier_hash, lock=True)
                was_locked = was_locked or counted.locked_until_us > now_us
                await store.clear_counter(session, "id:" + identifier_hash)
            await events.publish(
                session,
                auth_events.LoginLockoutCleared,
                request.user_id,
                user_id=request.user_id,
                cleared_by=by,
            )
            return service.ClearLoginLockoutResponse(was_locked=was_locked)

        return await idempotency.run_once(
            self.database, SERVICE + "ClearLoginLockout", request, service.ClearLoginLockoutResponse, work
        )

    async def ChangePassword(self, request: service.ChangePasswordRequest, context: Any) -> Any:
        """A new password with the current one (and a step-up with TOTP); other sessions end."""
        me = _me()
        method = SERVICE + "ChangePassword"
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, request, service.ChangePasswordResponse)
        if replay is not None:
            return replay
        await self._check_password(me.subject, request.current_password)
        if request.new_password == request.current_password:
            raise errors.InvalidArgument(
                [errors.FieldViolation("new_password", "must differ from the current password", "unchanged")]
            )
        hashed = await asyncio.to_thread(self.passwords.hash, request.new_password)
        ip = _client_ip(context)

        async def work(session: AsyncSession) -> service.ChangePasswordResponse:
            authenticator = await store.totp_of(session, me.subject)
            if authenticator is not None and authenticator.state == int(domain.TotpState.ENABLED):
                if not request.step_up_token:
                    raise domain.StepUpRequired(
                        "with TOTP enabled, changing the password needs a step-up token"
                    )
                await self._redeem(
                    session,
                    request.step_up_token,
                    me.subject,
                    me.session_id,
                    domain.StepUpPurpose.PASSWORD_CHANGE,
                    request.request_id,
                    "",
                )
            await store.update_password_hash(session, me.subject, hashed, _now_us())
            count = await self._revoke_all(
                session, me.subject, RevokeReason.PASSWORD_CHANGED, me.subject, me.session_id
            )
            await events.publish(
                session,
                auth_events.PasswordChanged,
                me.subject,
                user_id=me.subject,
                via_reset=False,
                revoked_session_count=count,
                ip=ip,
            )
            return service.ChangePasswordResponse(revoked_session_count=count)

        return await idempotency.run_once(
            self.database, method, request, service.ChangePasswordResponse, work
        )

    # Password reset

    async def RequestPasswordReset(self, request: service.RequestPasswordResetRequest, context: Any) -> Any:
        """A reset code to an active user's identifier; the same empty answer whoever asks."""
        method = SERVICE + "RequestPasswordReset"
        response = service.RequestPasswordResetResponse()
        async with self.database.transaction() as session:
            if await idempotency.lookup(session, method, request, service.RequestPasswordResetResponse):
                return response
        email, phone = _identifier(request)
        ip = _client_ip(context)
        user = await self.users.lookup(email=email, phone=phone)
        now_us = _now_us()
        code = domain.new_token(resets.CODE_PREFIX)
        async with self.database.transaction() as session:
            # The count runs for unknown identifiers too: the same queries whoever asks.
            recent = await resets.recent_count(session, user.user_id if user is not None else "", now_us)
            send = user is not None and user.active and recent < resets.RESETS_PER_HOUR_MAX
            if send and user is not None:
                await resets.insert_reset(session, domain.token_hash(code), user.user_id, ip, now_us)
                await events.publish(
                    session,
                    auth_events.PasswordResetRequested,
                    user.user_id,
                    causation_id=request.request_id,
                    user_id=user.user_id,
                    ip=ip,
                )
            await idempotency.record(session, method, request, response)
        if send and user is not None and self.reset_notices is not None:
            self.reset_notices.send(f"auth.reset.{request.request_id}"[:128], user.user_id, code, bool(phone))
        return response

    async def ResetPassword(self, request: service.ResetPasswordRequest, context: Any) -> Any:
        """A new password with a reset code (and the second factor when TOTP is on); every
        session ends. Wrong codes count against the client IP like wrong passwords."""
        method = SERVICE + "ResetPassword"
        async with self.database.transaction() as session:
            replay = await idempotency.lookup(session, method, request, service.ResetPasswordResponse)
        if replay is not None:
            return replay
        ip, user_agent = _client_ip(context), _user_agent(context)
        hashed = domain.token_hash(request.reset_token)
        now_us = _now_us()
        async with self.database.transaction() as session:
            found = await resets.reset_by_hash(session, hashed)
        # A code's own counter: a wrong code is counted against the IP, never against a user.
        counter_key = domain.keyed_hash(self.identifier_key, "reset:" + (found.user_id if found else hashed))
        locked = await self._locked(counter_key, ip, now_us)
        if locked is not None:
            raise locked
        refusal = errors.Unauthenticated("the reset code is unknown, used or expired: ask for a new one")
        if found is None or not found.usable(now_us):
            await self._count_failure(counter_key, ip, None, Outcome.WRONG_PASSWORD, user_agent, "", now_us)
            raise refusal
        user = await self.users.require_active(found.user_id)
        new_hash = await asyncio.to_thread(self.passwords.hash, request.new_password)
        user_id = user.user_id

        async def work(session: AsyncSession) -> service.ResetPasswordResponse:
            current = await resets.reset_by_hash(session, hashed)
            if current is None or not current.usable(_now_us()):
                raise refusal  # spent by a concurrent reset
            authenticator = await store.totp_of(session, user_id)
            if authenticator is not None and authenticator.state == int(domain.TotpState.ENABLED):
                factor = await self._second_factor(
                    session, user_id, request.totp_code, request.recovery_code, _now_us()
                )
                if factor is None:
                    raise _WrongResetFactor(
                        "with TOTP enabled, a reset needs a current TOTP code or an unused recovery code"
                    )
            await resets.spend(session, user_id, _now_us())
            await store.update_password_hash(session, user_id, new_hash, _now_us())
            count = await self._revoke_all(session, user_id, RevokeReason.PASSWORD_CHANGED, user_id)
            await events.publish(
                session,
                auth_events.PasswordChanged,
                user_id,
                causation_id=request.request_id,
                user_id=user_id,
                via_reset=True,
                revoked_session_count=count,
                ip=ip,
            )
            return service.ResetPasswordResponse(revoked_session_count=count)

        try:
            return await idempotency.run_once(
                self.database, method, request, service.ResetPasswordResponse, work
            )
        except _WrongResetFactor:
            await self._count_failure(
                counter_key, ip, None, Outcome.WRONG_SECOND_FACTOR, user_agent, "", now_us
            )
            raise

    async def ListLoginAttempts(self, request: service.ListLoginAttemptsRequest, context: Any) -> Any:
        """Login attempts on the caller's account, newest first."""
        me = _me()
        attempts, token = await self._attempts(me.subject, None, None, request.page_size, request.page_token)
        return service.ListLoginAttemptsResponse(login_attempts=attempts, next_page_token=token)

    async def ListUserLoginAttempts(self, request: service.ListUserLoginAttemptsRequest, context: Any) -> Any:
        """Login attempts on a user's account, newest first, in a time range. Support and above."""
        _require_role(*STAFF)
        start = request.attempt_time_from.ToMicroseconds() if request.HasField("attempt_time_from") else None
        end = request.attempt_time_to.ToMicroseconds() if request.HasField("attempt_time_to") else None
        attempts, token = await self._attempts(
            request.user_id, start, end, request.page_size, request.page_token
        )
        return service.ListUserLoginAttemptsResponse(login_attempts=attempts, next_page_token=token)

    async def _attempts(
        self, user_id: str, start_us: int | None, end_us: int | None, page_size: int, page_token: str
    ) -> tuple[list[resources.LoginAttempt], str]:
        position = _position(page_token, user_id)
        limit = paging.page_size(page_size)
        after = (int(position["t"]), str(position["i"])) if position else None
        async with self.database.transaction() as session:
            found = await store.list_login_attempts(
                session, user_id, start_us=start_us, end_us=end_us, before=after, limit=limit + 1
            )
        page = found[:limit]
        token = ""
        if len(found) > limit:
            token = _token({"t": page[-1].attempt_time_us, "i": page[-1].login_attempt_id, "f": user_id})
        return [convert.attempt_message(row) for row in page], token

    # The caller

    async def GetMe(self, request: service.GetMeRequest, context: Any) -> Any:
        """The caller as authenticated, with every permission they hold now and their 2FA status."""
        me = _me()
        async with self.database.transaction() as session:
            roles = await self._roles(session, me.subject, _now_us())
            two_factor = await self._two_factor(session, me.subject)
        principal = resources.Principal(
            type=resources.PRINCIPAL_TYPE_USER,
            user_id=me.subject,
            roles=[int(role) for role in sorted(roles)],  # type: ignore[misc]
            scopes=sorted(me.scopes),
            session_id=me.session_id,
        )
        return service.GetMeResponse(
            principal=principal, permissions=rbac.permissions_of(roles), two_factor=two_factor
        )

    async def _two_factor(self, session: AsyncSession, user_id: str) -> resources.TwoFactorStatus:
        row = await store.totp_of(session, user_id)
        if row is not None and row.state == int(domain.TotpState.PENDING) and row.expire_time_us <= _now_us():
            row = None
        return convert.two_factor_message(row, await store.recovery_codes_left(session, user_id))

    # Signing keys and tokens

    async def GetJwks(self, request: service.GetJwksRequest, context: Any) -> Any:
        """The published keys (PENDING, ACTIVE, RETIRED) as a JWKS document."""
        loaded = await self.keyring.current()
        return service.GetJwksResponse(keys=[convert.jwk_message(jwk) for jwk in loaded.published])

    async def IntrospectToken(self, request: service.IntrospectTokenRequest, context: Any) -> Any:
        """Full verification of an access token, including session and user status."""
        try:
            header = jwt.get_unverified_header(request.access_token)
        except jwt.PyJWTError:
            raise errors.Unauthenticated("not a JWT") from None
        kid, algorithm = str(header.get("kid", "")), str(header.get("alg", ""))
        loaded = await self.keyring.current()
        if kid not in loaded.verifying:
            self.keyring.invalidate()
            loaded = await self.keyring.current()
        known = loaded.verifying.get(kid)
        if known is None or algorithm != known[0]:
            raise errors.Unauthenticated(
                "the token's key is unknown, retired or revoked, or its algorithm is not the key's"
            )
        try:
            claims = jwt.decode(
                request.access_token,
                known[1],
                algorithms=[known[0]],
                issuer=ISSUER,
                audience=AUDIENCE,
                leeway=INTROSPECT_LEEWAY_S,
                options={"require": ["sub", "exp", "iat", "nbf", "jti"]},
            )
        except jwt.PyJWTError as error:
            raise errors.Unauthenticated(f"invalid access token: {error}") from None
        user_id, session_id = str(claims["sub"]), str(claims.get("sid", ""))
        if session_id:
            async with self.database.transaction() as session:
                login = await store.session_by_id(session, session_id)
            if login is None or login.state is not SessionState.ACTIVE or login.user_id != user_id:
                raise errors.Unauthenticated("the token's session has ended")
        await self.users.require_active(user_id)
        roles = [role for role in Role if role.claim in claims.get("roles", [])]
        methods = {"pwd": Method.PASSWORD, "otp": Method.TOTP, "hmac": Method.API_KEY_SIGNATURE}
        api_key_id = str(claims.get("api_key_id", ""))
        principal = resources.Principal(
            type=resources.PRINCIPAL_TYPE_API_KEY if api_key_id else resources.PRINCIPAL_TYPE_USER,
            user_id=user_id,
            roles=[int(role) for role in roles],  # type: ignore[misc]
            scopes=str(claims.get("scope", "")).split(),
            session_id=session_id,
            api_key_id=api_key_id,
            auth_methods=[int(methods[amr]) for amr in claims.get("amr", []) if amr in methods],  # type: ignore[misc]
            auth_time=convert.timestamp(int(claims.get("auth_time", claims["iat"])) * domain.S_US),
            expire_time=convert.timestamp(int(claims["exp"]) * domain.S_US),
        )
        return service.IntrospectTokenResponse(principal=principal, kid=kid)

    async def ListSigningKeys(self, request: service.ListSigningKeysRequest, context: Any) -> Any:
        """Every signing key, newest first. Admin."""
        _require_role(Role.ADMIN)
        states = {KeyState(state) for state in request.states}
        async with self.database.transaction() as session:
            stored = await self.keyring.advance(session, _now_us())
        listed = [key for key in stored if not states or key.state in states]
        position = _position(request.page_token, "keys")
        start = int(position["o"]) if position else 0
        limit = paging.page_size(request.page_size)
        page = listed[start : start + limit]
        token = _token({"o": start + limit, "f": "keys"}) if len(listed) > start + limit else ""
        return service.ListSigningKeysResponse(
            signing_keys=[convert.signing_key_message(key) for key in page], next_page_token=token
        )

    async def RotateSigningKey(self, request: service.RotateSigningKeyRequest, context: Any) -> Any:
        """A new PENDING key, published at once, signing after the activation delay. Admin."""
        _require_role(Role.ADMIN)
        delay_us = (
            request.activation_delay.ToMicroseconds()
            if request.HasField("activation_delay")
            else domain.SIGNING_ACTIVATION_DELAY_DEFAULT_US
        )

        async def work(session: AsyncSession) -> service.RotateSigningKeyResponse:
            created, previous = await self.keyring.rotate(session, request.algorithm, delay_us)
            await events.publish(
                session,
                auth_events.SigningKeyRotated,
                created.kid,
                kid=created.kid,
                algorithm=created.algorithm,
                previous_kid=previous,
                activate_time=convert.timestamp(created.activate_time_us or 0),
            )
            return service.RotateSigningKeyResponse(signing_key=convert.signing_key_message(created))

        response = await idempotency.run_once(
            self.database, SERVICE + "RotateSigningKey", request, service.RotateSigningKeyResponse, work
        )
        self.keyring.invalidate()
        return response

    async def RevokeSigningKey(self, request: service.RevokeSigningKeyRequest, context: Any) -> Any:
        """Withdraws a key at once; tokens it signed are refused. Admin."""
        _require_role(Role.ADMIN)

        async def work(session: AsyncSession) -> service.RevokeSigningKeyResponse:
            revoked, active = await self.keyring.revoke(session, request.kid)
            await events.publish(
                session, auth_events.SigningKeyRevoked, revoked.kid, kid=revoked.kid, active_kid=active.kid
            )
            return service.RevokeSigningKeyResponse(
                signing_key=convert.signing_key_message(revoked),
                active_key=convert.signing_key_message(active),
            )

        response = await idempotency.run_once(
            self.database, SERVICE + "RevokeSigningKey", request, service.RevokeSigningKeyResponse, work
        )
        self.keyring.invalidate()
        return response

    # Second factor

    async def GetTwoFactorStatus(self, request: service.GetTwoFactorStatusRequest, context: Any) -> Any:
        """The caller's second-factor settings."""
        me = _me()
        async with self.database.transaction() as session:
            return service.GetTwoFactorStatusResponse(two_factor=await self._two_factor(session, me.subject))

    async def _check_password(self, user_id: str, password: str) -> None:
        async with self.database.transaction() as session:
            stored = await store.password_hash(session, user_id)
        if not await asyncio.to_thread(self.passwords.verify, stored, password):
            raise errors.Unauthenticated("the current password is wrong")

    async def EnrollTotp(self, request: service.EnrollTotpRequest, context: Any) -> Any:
        """A new TOTP secret, shown once, waiting for ConfirmTotp."""
        me = _me()
        method = SERVICE + "EnrollTotp"
        async with self.database.transaction() as session:
            replay = await self._replayed(session, method, request, service.EnrollTotpResponse)
        if replay is not None:
            return replay
        await self._check_password(me.subject, request.current_password)
        user = await self.users.require_active(me.subject)
        now_us = _now_us()
        secret = totp.new_secret()
        enrollment_id = str(uuid.uuid4())
        async with self.database.transaction() as session:
            existing = await store.totp_of(session, me.subject, lock=True)
            if existing is not None and existing.state == int(domain.TotpState.ENABLED):
                raise errors.InvalidState("TOTP is already enabled: disable it first")
            expire_us = now_us + domain.ENROLLMENT_TTL_US
            await store.put_totp(
                session,
                me.subject,
                state=int(domain.TotpState.PENDING),
                enrollment_id=enrollment_id,
                secret_sealed=self.sealer.seal(secret, aad=f"auth.totp:{me.subject}".encode()),
                create_time_us=now_us,
                expire_time_us=expire_us,
                confirm_time_us=None,
                last_step=-1,
            )
            response = service.EnrollTotpResponse(
                enrollment_id=enrollment_id,
                secret_base32=totp.base32(secret),
                otpauth_uri=totp.otpauth_uri(secret, user.account or me.subject),
                expire_time=convert.timestamp(expire_us),
            )
            await self._remember(session, method, request, response, ENROLLMENT_REPLAY_US)
        return response

    async def _new_recovery_codes(self, session: AsyncSession, user_id: str) -> list[str]:
        codes = [domain.new_recovery_code() for _ in range(domain.RECOVERY_CODES_PER_USER)]
        hashes = [domain.keyed_hash(self.identifier_key, domain.normal_recovery_code(code)) for code in codes]
        await store.replace_recovery_codes(session, user_id, hashes)
        return codes

    async def ConfirmTotp(self, request: service.ConfirmTotpRequest, context: Any) -> Any:
        """Enables TOTP with a code from the authenticator; returns 10 recovery codes, once."""
        me = _me()
        method = SERVICE + "ConfirmTotp"
        now_us = _now_us()
        async with self.database.transaction() as session:
            replay = await self._replayed(session, method, request, service.ConfirmTotpResponse)
            if replay is not None:
                return replay
            row = await store.totp_of(session, me.subject, lock=True)
            if (
                row is None
                or row.enrollment_id != request.enrollment_id
                or row.state != int(domain.TotpState.PENDING)
                or row.expire_time_us <= now_us
            ):
                raise errors.NotFound(
                    "no pending enrollment with this id", metadata={"enrollment_id": request.enrollment_id}
                )
            secret = self.sealer.open(row.secret_sealed, aad=f"auth.totp:{me.subject}".encode())
            step = totp.matching_step(secret, request.totp_code, now_us / domain.S_US, last_used_step=-1)
            if step is None:
                raise errors.InvalidArgument(
                    [errors.FieldViolation("totp_code", "does not match the authenticator's current code")]
                )
            await store.update_totp(
                session,
                me.subject,
                state=int(domain.TotpState.ENABLED),
                confirm_time_us=now_us,
                last_step=step,
            )
            codes = await self._new_recovery_codes(session, me.subject)
            await events.publish(session, auth_events.TwoFactorEnabled, me.subject, user_id=me.subject)
            response = service.ConfirmTotpResponse(
                two_factor=await self._two_factor(session, me.subject), recovery_codes=codes
            )
            await self._remember(session, method, request, response, SECRET_REPLAY_US)
        return response

    async def DisableTotp(self, request: service.DisableTotpRequest, context: Any) -> Any:
        """Removes TOTP with a step-up token; every other session is revoked. Not for staff."""
        me = _me()

        async def work(session: AsyncSession) -> service.DisableTotpResponse:
            await self._redeem(
                session,
                request.step_up_token,
                me.subject,
                me.session_id,
                domain.StepUpPurpose.TWO_FACTOR_CHANGE,
                request.request_id,
                "",
            )
            if await self._roles(session, me.subject, _now_us()) & STAFF:
                raise errors.PermissionDenied("staff must keep two-factor authentication")
            await store.delete_totp(session, me.subject)
            await self._revoke_all(
                session, me.subject, RevokeReason.TWO_FACTOR_CHANGED, me.subject, me.session_id
            )
            await events.publish(session, auth_events.TwoFactorDisabled, me.subject, user_id=me.subject)
            return service.DisableTotpResponse(two_factor=resources.TwoFactorStatus())

        return await idempotency.run_once(
            self.database, SERVICE + "DisableTotp", request, service.DisableTotpResponse, work
        )

    async def RegenerateRecoveryCodes(
        self, request: service.RegenerateRecoveryCodesRequest, context: Any
    ) -> Any:
        """Ten new recovery codes with a step-up token; the old ones stop working."""
        me = _me()
        method = SERVICE + "RegenerateRecoveryCodes"
        async with self.database.transaction() as session:
            replay = await self._replayed(session, method, request, service.RegenerateRecoveryCodesResponse)
            if replay is not None:
                return replay
            await self._redeem(
                session,
                request.step_up_token,
                me.subject,
                me.session_id,
                domain.StepUpPurpose.TWO_FACTOR_CHANGE,
                request.request_id,
                "",
            )
            codes = await self._new_recovery_codes(session, me.subject)
            await events.publish(
                session, auth_events.RecoveryCodesRegenerated, me.subject, user_id=me.subject
            )
            response = service.RegenerateRecoveryCodesResponse(recovery_codes=codes)
            await self._remember(session, method, request, response, SECRET_REPLAY_US)
        return response

    async def ResetTwoFactor(self, request: service.ResetTwoFactorRequest, context: Any) -> Any:
        """Removes a user's second factor after support verified them; every session ends.
        Internal: the admin service calls it once its maker-checker approval is complete."""
        _require_internal()

        async def work(session: AsyncSession) -> service.ResetTwoFactorResponse:
            await store.delete_totp(session, request.user_id)
            await self._revoke_all(session, request.user_id, RevokeReason.TWO_FACTOR_CHANGED, "support")
            await events.publish(
                session,
                auth_events.TwoFactorDisabled,
                request.user_id,
                user_id=request.user_id,
                reset_by_support=True,
                approval_id=request.approval_id,
            )
            return service.ResetTwoFactorResponse(two_factor=resources.TwoFactorStatus())

        return await idempotency.run_once(
            self.database, SERVICE + "ResetTwoFactor", request, service.ResetTwoFactorResponse, work
        )

    async def VerifyStepUp(self, request: service.VerifyStepUpRequest, context: Any) -> Any:
        """A fresh second factor of the caller becomes a single-use token for one purpose."""
        me = _me()
        method = SERVICE + "VerifyStepUp"
        now_us = _now_us()
        async with self.database.transaction() as session:
            replay = await self._replayed(session, method, request, service.VerifyStepUpResponse)
            if replay is not None:
                return replay
            row = await store.totp_of(session, me.subject)
            if row is None or row.state != int(domain.TotpState.ENABLED):
                raise domain.TwoFactorRequired("sensitive actions require TOTP: enroll it first")
            factor = await self._second_factor(
                session, me.subject, request.totp_code, request.recovery_code, now_us
            )
            if factor is None:
                raise errors.Unauthenticated("the second factor is wrong or was already used")
            token = domain.new_token(STEP_UP_PREFIX)
            expire_us = now_us + domain.STEP_UP_TTL_US
            await store.insert_step_up(
                session,
                token_hash=domain.token_hash(token),
                user_id=me.subject,
                session_id=me.session_id,
                purpose=int(request.purpose),
                operation_digest=request.operation_digest,
                factor=int(factor),
                verify_time_us=now_us,
                expire_time_us=expire_us,
                redeem_request_id=None,
            )
            response = service.VerifyStepUpResponse(
                step_up_token=token, expire_time=convert.timestamp(expire_us)
            )
            await self._remember(session, method, request, response, SECRET_REPLAY_US)
        return response

    async def _redeem(
        self,
        session: AsyncSession,
        token: str,
        user_id: str,
        session_id: str,
        purpose: int,
        request_id: str,
        operation_digest: str,
    ) -> Any:
        """Spends a step-up token for one operation; the same request_id may redeem it again."""
        hashed = domain.token_hash(token)
        row = await store.step_up(session, hashed)
        refused = domain.StepUpRequired("the step-up token is not valid for this action")
        if (
            row is None
            or row.user_id != user_id
            or (session_id and row.session_id != session_id)
            or row.purpose != purpose
            or row.operation_digest != operation_digest
            or row.expire_time_us <= _now_us()
            or (row.redeem_request_id is not None and row.redeem_request_id != request_id)
        ):
            raise refused
        await store.redeem_step_up(session, hashed, request_id)
        return row

    async def RedeemStepUpToken(self, request: service.RedeemStepUpTokenRequest, context: Any) -> Any:
        """Checks and spends a step-up token presented to another service. Internal."""
        _require_internal()
        async with self.database.transaction() as session:
            row = await self._redeem(
                session,
                request.step_up_token,
                request.user_id,
                request.session_id,
                int(request.purpose),
                request.request_id,
                request.operation_digest,
            )
        return service.RedeemStepUpTokenResponse(
            verify_time=convert.timestamp(row.verify_time_us),
            factor=row.factor,
        )

    # API keys

    async def CreateApiKey(self, request: service.CreateApiKeyRequest, context: Any) -> Any:
        """A new key; its secret is in this response only (a repeat returns the key without it)."""
        me = _me()
        method = SERVICE + "CreateApiKey"
        now_us = _now_us()
        secret = domain.new_api_secret()
        try:
            async with self.database.transaction() as session:
                replay = await idempotency.lookup(session, method, request, service.CreateApiKeyResponse)
                if replay is not None:
                    return replay
                await self._redeem(
                    session,
                    request.step_up_token,
                    me.subject,
                    me.session_id,
                    domain.StepUpPurpose.API_KEY_CREATE,
                    request.request_id,
                    "",
                )
                roles = await self._roles(session, me.subject, now_us)
                grantable = set(rbac.user_scopes(roles))
                beyond = sorted(set(request.scopes) - grantable)
                if beyond:
                    raise errors.PermissionDenied(
                        f"scopes beyond the caller's roles: {', '.join(beyond)}",
                        metadata={"scopes": ",".join(beyond)},
                    )
                if (
                    await store.active_api_key_count(session, me.subject, now_us)
                    >= domain.API_KEYS_ACTIVE_PER_USER_MAX
                ):
                    raise errors.LimitExceeded(
                        f"at most {domain.API_KEYS_ACTIVE_PER_USER_MAX} active API keys per user",
                        metadata={"limit": str(domain.API_KEYS_ACTIVE_PER_USER_MAX)},
                    )
                api_key_id = domain.new_api_key_id()
                key = ApiKey(
                    api_key_id=api_key_id,
                    user_id=me.subject,
                    display_name=request.display_name,
                    scopes=tuple(sorted(request.scopes)),
                    allowed_ip_ranges=tuple(
                        str(ipaddress.ip_network(text, strict=False)) for text in request.allowed_ip_ranges
                    ),
                    expire_time_us=request.expire_time.ToMicroseconds(),
                    state=ApiKeyState.ACTIVE,
                    secret_sealed=self.sealer.seal(
                        secret.encode(), aad=f"auth.api_key:{api_key_id}".encode()
                    ),
                    secret_fingerprint=hashlib.sha256(secret.encode()).hexdigest()[:16],
                    create_time_us=now_us,
                )
                await store.insert_api_key(session, key)
                await events.publish(
                    session,
                    auth_events.ApiKeyCreated,
                    api_key_id,
                    api_key_id=api_key_id,
                    user_id=me.subject,
                    scopes=list(key.scopes),
                    allowed_ip_ranges=list(key.allowed_ip_ranges),
                    expire_time=request.expire_time,
                )
                stored = service.CreateApiKeyResponse(api_key=convert.api_key_message(key, now_us))
                await idempotency.record(session, method, request, stored)
        except IntegrityError:
            async with self.database.transaction() as session:
                replay = await idempotency.lookup(session, method, request, service.CreateApiKeyResponse)
            if replay is None:
                raise
            return replay
        return service.CreateApiKeyResponse(api_key=stored.api_key, secret=secret)

    async def _own_api_key(
        self, session: AsyncSession, user_id: str, api_key_id: str, *, lock: bool = False
    ) -> ApiKey:
        key = await store.api_key_by_id(session, api_key_id, lock=lock)
        if key is None or key.user_id != user_id:
            raise errors.NotFound(f"no API key {api_key_id}", metadata={"api_key_id": api_key_id})
        return key

    async def GetApiKey(self, request: service.GetApiKeyRequest, context: Any) -> Any:
        """One of the caller's keys."""
        me = _me()
        async with self.database.transaction() as session:
            key = await self._own_api_key(session, me.subject, request.api_key_id)
        return service.GetApiKeyResponse(api_key=convert.api_key_message(key, _now_us()))

    async def ListApiKeys(self, request: service.ListApiKeysRequest, context: Any) -> Any:
        """The caller's keys, newest first."""
        me = _me()
        keys, token = await self._api_keys(me.subject, request.states, request.page_size, request.page_token)
        return service.ListApiKeysResponse(api_keys=keys, next_page_token=token)

    async def ListUserApiKeys(self, request: service.ListUserApiKeysRequest, context: Any) -> Any:
        """A user's keys, for support."""
        _require_role(*STAFF)
        keys, token = await self._api_keys(
            request.user_id, request.states, request.page_size, request.page_token
        )
        return service.ListUserApiKeysResponse(api_keys=keys, next_page_token=token)

    async def _api_keys(
        self, user_id: str, states: Sequence[int], page_size: int, page_token: str
    ) -> tuple[list[resources.ApiKey], str]:
        position = _position(page_token, user_id)
        limit = paging.page_size(page_size)
        now_us = _now_us()
        wanted = set(states)
        listed: list[resources.ApiKey] = []
        after = (int(position["t"]), str(position["i"])) if position else None
        token = ""
        # Expiry is derived at read time, so the state filter applies after the query.
        async with self.database.transaction() as session:
            while len(listed) <= limit:
                batch = await store.list_api_keys(session, user_id, after=after, limit=limit + 1)
                for key in batch:
                    if not wanted or int(key.effective_state(now_us)) in wanted:
                        if len(listed) == limit:
                            last = listed[-1]
                            token = _token(
                                {"t": last.create_time.ToMicroseconds(), "i": last.api_key_id, "f": user_id}
                            )
                            return listed, token
                        listed.append(convert.api_key_message(key, now_us))
                if len(batch) <= limit:
                    break
                after = (batch[-1].create_time_us, batch[-1].api_key_id)
        return listed, token

    async def _revoke_api_key(self, session: AsyncSession, key: ApiKey, by: str) -> resources.ApiKey:
        now_us = _now_us()
        if key.effective_state(now_us) is ApiKeyState.ACTIVE:
            key = dataclasses.replace(key, state=ApiKeyState.REVOKED, revoke_time_us=now_us)
            await store.update_api_key(session, key)
            await events.publish(
                session,
                auth_events.ApiKeyRevoked,
                key.api_key_id,
                api_key_id=key.api_key_id,
                user_id=key.user_id,
                state=int(ApiKeyState.REVOKED),
                revoked_by=by,
            )
        return convert.api_key_message(key, now_us)

    async def UpdateApiKey(self, request: service.UpdateApiKeyRequest, context: Any) -> Any:
        """Renames a key or replaces its IP allow-list (with a step-up); scopes and expiry stay."""
        me = _me()
        paths = list(request.update_mask.paths)
        allowed = {"display_name", "allowed_ip_ranges"}
        if not paths or set(paths) - allowed:
            raise errors.InvalidArgument(
                [errors.FieldViolation("update_mask", "paths must be among display_name, allowed_ip_ranges")]
            )
        if "allowed_ip_ranges" in paths and not request.api_key.allowed_ip_ranges:
            raise errors.InvalidArgument(
                [
                    errors.FieldViolation(
                        "api_key.allowed_ip_ranges", "a key needs at least one range", "required"
                    )
                ]
            )
        if "display_name" in paths and not request.api_key.display_name:
            raise errors.InvalidArgument(
                [errors.FieldViolation("api_key.display_name", "a key needs a name", "required")]
            )

        async def work(session: AsyncSession) -> service.UpdateApiKeyResponse:
            now_us = _now_us()
            key = await self._own_api_key(session, me.subject, request.api_key.api_key_id, lock=True)
            if key.effective_state(now_us) is not ApiKeyState.ACTIVE:
                raise errors.InvalidState(
                    "only an ACTIVE key can be updated", metadata={"api_key_id": key.api_key_id}
                )
            if "allowed_ip_ranges" in paths:
                await self._redeem(
                    session,
                    request.step_up_token,
                    me.subject,
                    me.session_id,
                    domain.StepUpPurpose.API_KEY_UPDATE,
                    request.request_id,
                    "",
                )
                ranges = tuple(
                    str(ipaddress.ip_network(text, strict=False))
                    for text in request.api_key.allowed_ip_ranges
                )
                key = dataclasses.replace(key, allowed_ip_ranges=ranges)
            if "display_name" in paths:
                key = dataclasses.replace(key, display_name=request.api_key.display_name)
            await store.update_api_key(session, key)
            await events.publish(
                session,
                auth_events.ApiKeyUpdated,
                key.api_key_id,
                api_key_id=key.api_key_id,
                user_id=key.user_id,
                updated_fields=sorted(paths),
                allowed_ip_ranges=list(key.allowed_ip_ranges),
            )
            return service.UpdateApiKeyResponse(api_key=convert.api_key_message(key, now_us))

        return await idempotency.run_once(
            self.database, SERVICE + "UpdateApiKey", request, service.UpdateApiKeyResponse, work
        )

    async def RevokeApiKey(self, request: service.RevokeApiKeyRequest, context: Any) -> Any:
        """ACTIVE -> REVOKED for one of the caller's keys."""
        me = _me()

        async def work(session: AsyncSession) -> service.RevokeApiKeyResponse:
            key = await self._own_api_key(session, me.subject, request.api_key_id, lock=True)
            return service.RevokeApiKeyResponse(api_key=await self._revoke_api_key(session, key, me.subject))

        return await idempotency.run_once(
            self.database, SERVICE + "RevokeApiKey", request, service.RevokeApiKeyResponse, work
        )

    async def RevokeUserApiKey(self, request: service.RevokeUserApiKeyRequest, context: Any) -> Any:
        """Revokes a user's key (a reported leak). Operator and above."""
        _require_role(Role.OPERATOR, Role.ADMIN)
        by = (_end_user() or EndUser(subject="system")).subject

        async def work(session: AsyncSession) -> service.RevokeUserApiKeyResponse:
            key = await self._own_api_key(session, request.user_id, request.api_key_id, lock=True)
            return service.RevokeUserApiKeyResponse(api_key=await self._revoke_api_key(session, key, by))

        return await idempotency.run_once(
            self.database, SERVICE + "RevokeUserApiKey", request, service.RevokeUserApiKeyResponse, work
        )

    async def VerifyRequestSignature(
        self, request: service.VerifyRequestSignatureRequest, context: Any
    ) -> Any:
        """Verifies a partner's signed request (see signatures.py for the canonical request)."""
        _require_internal()
        await self.keyring.current()  # loaded before any transaction: signing never reloads
        method = SERVICE + "VerifyRequestSignature"
        async with self.database.transaction() as session:
            replay = await self._replayed(session, method, request, service.VerifyRequestSignatureResponse)
        if replay is not None:
            return replay
        now_us = _now_us()
        async with self.database.transaction() as session:
            key = await store.api_key_by_id(session, request.api_key_id)
        failure = await self._signature_failure(request, key, now_us)
        if failure is not None:
            async with self.database.transaction() as session:
                await events.publish(
                    session,
                    auth_events.SignedRequestRejected,
                    request.api_key_id,
                    api_key_id=request.api_key_id,
                    user_id=key.user_id if key is not None else "",
                    failure=int(failure[0]),
                    ip=request.client_ip,
                    route=f"{request.method} {request.path}",
                )
            raise failure[0].error(failure[1])
        assert key is not None
        token, expire_us = await self._access_token(
            user_id=key.user_id,
            roles={Role.USER},
            scopes=key.scopes,
            session_id="",
            methods=(Method.API_KEY_SIGNATURE,),
            auth_time_us=now_us,
            ttl_s=domain.API_ACCESS_TOKEN_TTL_S,
            now_us=now_us,
            api_key_id=key.api_key_id,
        )
        response = service.VerifyRequestSignatureResponse(
            principal=resources.Principal(
                type=resources.PRINCIPAL_TYPE_API_KEY,
                user_id=key.user_id,
                roles=[enums_pb2.ROLE_USER],
                scopes=list(key.scopes),
                api_key_id=key.api_key_id,
                auth_methods=[resources.AUTH_METHOD_API_KEY_SIGNATURE],
                auth_time=convert.timestamp(now_us),
                expire_time=convert.timestamp(expire_us),
            ),
            access_token=token,
        )
        async with self.database.transaction() as session:
            used = await store.api_key_by_id(session, key.api_key_id, lock=True)
            assert used is not None
            await store.update_api_key(
                session, dataclasses.replace(used, last_used_time_us=now_us, last_used_ip=request.client_ip)
            )
            await self._remember(session, method, request, response, SECRET_REPLAY_US)
        return response

    async def _signature_failure(
        self, request: service.VerifyRequestSignatureRequest, key: ApiKey | None, now_us: int
    ) -> tuple[SignatureFailure, str] | None:
        """Why a signed request is refused, checked in this order, or None when it is accepted.

        The nonce is claimed only once the signature is proven, so that nobody without the secret
        can burn a partner's nonces.
        """
        if key is None:
            return SignatureFailure.UNKNOWN_KEY, "unknown API key"
        if key.effective_state(now_us) is not ApiKeyState.ACTIVE:
            return SignatureFailure.KEY_NOT_ACTIVE, "the API key is revoked or expired"
        if not signatures.timestamp_in_window(request.timestamp, now_us / domain.S_US):
            return SignatureFailure.TIMESTAMP_OUT_OF_WINDOW, "the timestamp is outside the replay window"
        secret = self.sealer.open(key.secret_sealed, aad=f"auth.api_key:{key.api_key_id}".encode()).decode()
        text = signatures.string_to_sign(
            request.method,
            request.path,
            request.canonical_query,
            request.body_sha256,
            request.timestamp,
            request.nonce,
        )
        if not signatures.signature_matches(secret, text, request.signature):
            return SignatureFailure.BAD_SIGNATURE, "the signature does not match"
        if not await self.nonces.claim(key.api_key_id, request.nonce, signatures.REPLAY_WINDOW_S):
            return SignatureFailure.NONCE_REUSED, "the nonce was already used with this key"
        address = ipaddress.ip_address(request.client_ip)
        if not any(
            address in ipaddress.ip_network(allowed, strict=False) for allowed in key.allowed_ip_ranges
        ):
            return SignatureFailure.IP_NOT_ALLOWED, "the client IP is outside the key's allow-list"
        if request.required_scope and request.required_scope not in key.scopes:
            return SignatureFailure.SCOPE_NOT_GRANTED, f"the key lacks the scope {request.required_scope}"
        owner = await self.users.get(key.user_id)
        if not owner.active:
            return SignatureFailure.KEY_NOT_ACTIVE, "the key's owner is frozen or closed"
        return None

    # Role assignments (maker-checker)

    async def _assignment(self, session: AsyncSession, assignment_id: str) -> Any:
        row = await store.assignment(session, assignment_id)
        if row is None:
            raise errors.NotFound(
                f"no role assignment {assignment_id}", metadata={"role_assignment_id": assignment_id}
            )
        return row

    async def _expire_if_due(self, session: AsyncSession, row: Any, now_us: int) -> bool:
        """PENDING_APPROVAL -> EXPIRED once not approved in time; whether it expired."""
        if row.state != int(AssignmentState.PENDING_APPROVAL):
            return False
        if now_us < row.create_time_us + domain.ASSIGNMENT_APPROVAL_US:
            return False
        await store.update_assignment(
            session, row.role_assignment_id, state=int(AssignmentState.EXPIRED), decide_time_us=now_us
        )
        await events.publish(
            session,
            auth_events.RoleAssignmentRejected,
            row.role_assignment_id,
            role_assignment_id=row.role_assignment_id,
            user_id=row.user_id,
            role=row.role,
            state=int(AssignmentState.EXPIRED),
            rejected_by="system",
        )
        return True

    async def ListRoleAssignments(self, request: service.ListRoleAssignmentsRequest, context: Any) -> Any:
        """Assignments with filters, newest first. Admin and auditor."""
        _require_role(Role.ADMIN, Role.AUDITOR)
        fingerprint = f"{request.user_id}:{int(request.role)}:{sorted(request.states)}"
        position = _position(request.page_token, fingerprint)
        limit = paging.page_size(request.page_size)
        before = (int(position["t"]), str(position["i"])) if position else None
        async with self.database.transaction() as session:
            found = await store.list_assignments(
                session,
                user_id=request.user_id,
                role=int(request.role),
                states=[int(state) for state in request.states],
                before=before,
                limit=limit + 1,
            )
        page = found[:limit]
        token = ""
        if len(found) > limit:
            token = _token({"t": page[-1].create_time_us, "i": page[-1].role_assignment_id, "f": fingerprint})
        return service.ListRoleAssignmentsResponse(
            role_assignments=[convert.assignment_message(row) for row in page], next_page_token=token
        )

    async def CreateRoleAssignment(self, request: service.CreateRoleAssignmentRequest, context: Any) -> Any:
        """The maker's request for a staff role; PENDING_APPROVAL until a second admin approves."""
        _require_role(Role.ADMIN)
        maker = (_end_user() or EndUser(subject="system")).subject
        if maker == request.user_id:
            raise errors.PermissionDenied("nobody may request a role for themselves")
        grantee = await self.users.require_active(request.user_id)

        async def work(session: AsyncSession) -> service.CreateRoleAssignmentResponse:
            now_us = _now_us()
            authenticator = await store.totp_of(session, grantee.user_id)
            if authenticator is None or authenticator.state != int(domain.TotpState.ENABLED):
                raise errors.InvalidState("staff roles require TOTP: the grantee has none enabled")
            role = Role(request.role)
            for row in await store.open_assignments(session, grantee.user_id, int(role)):
                if not await self._expire_if_due(session, row, now_us):
                    raise errors.InvalidState(
                        f"the user already holds or awaits {role.claim}",
                        metadata={"role_assignment_id": row.role_assignment_id},
                    )
            values = {
                "role_assignment_id": str(uuid.uuid4()),
                "user_id": grantee.user_id,
                "role": int(role),
                "state": int(AssignmentState.PENDING_APPROVAL),
                "justification": request.justification,
                "requested_by": maker,
                "decided_by": "",
                "revoked_by": "",
                "decision_note": "",
                "expire_time_us": request.expire_time.ToMicroseconds()
                if request.HasField("expire_time")
                else None,
                "create_time_us": now_us,
                "decide_time_us": None,
                "revoke_time_us": None,
            }
            await store.insert_assignment(session, **values)
            await events.publish(
                session,
                auth_events.RoleAssignmentRequested,
                str(values["role_assignment_id"]),
                role_assignment_id=values["role_assignment_id"],
                user_id=grantee.user_id,
                role=int(role),
                requested_by=maker,
            )
            created = await self._assignment(session, str(values["role_assignment_id"]))
            return service.CreateRoleAssignmentResponse(role_assignment=convert.assignment_message(created))

        return await idempotency.run_once(
            self.database,
            SERVICE + "CreateRoleAssignment",
            request,
            service.CreateRoleAssignmentResponse,
            work,
        )

    async def ApproveRoleAssignment(self, request: service.ApproveRoleAssignmentRequest, context: Any) -> Any:
        """The checker's approval: another admin than the maker and the grantee, with a step-up."""
        _require_role(Role.ADMIN)
        checker = _me()

        async def work(session: AsyncSession) -> service.ApproveRoleAssignmentResponse:
            now_us = _now_us()
            row = await self._assignment(session, request.role_assignment_id)
            if checker.subject in (row.requested_by, row.user_id):
                raise errors.PermissionDenied("the checker must be neither the maker nor the grantee")
            await self._redeem(
                session,
                request.step_up_token,
                checker.subject,
                checker.session_id,
                int(resources.STEP_UP_PURPOSE_STAFF_APPROVAL),
                request.request_id,
                "",
            )
            if await self._expire_if_due(session, row, now_us):
                return service.ApproveRoleAssignmentResponse(
                    role_assignment=convert.assignment_message(
                        await self._assignment(session, row.role_assignment_id)
                    )
                )
            domain.check_assignment_transition(AssignmentState(row.state), AssignmentState.ACTIVE)
            await store.update_assignment(
                session,
                row.role_assignment_id,
                state=int(AssignmentState.ACTIVE),
                decided_by=checker.subject,
                decision_note=request.note,
                decide_time_us=now_us,
            )
            approved = await self._assignment(session, row.role_assignment_id)
            event_fields: dict[str, Any] = {}
            if approved.expire_time_us is not None:
                event_fields["expire_time"] = convert.timestamp(approved.expire_time_us)
            await events.publish(
                session,
                auth_events.RoleAssignmentApproved,
                row.role_assignment_id,
                role_assignment_id=row.role_assignment_id,
                user_id=row.user_id,
                role=row.role,
                requested_by=row.requested_by,
                approved_by=checker.subject,
                **event_fields,
            )
            return service.ApproveRoleAssignmentResponse(role_assignment=convert.assignment_message(approved))

        return await idempotency.run_once(
            self.database,
            SERVICE + "ApproveRoleAssignment",
            request,
            service.ApproveRoleAssignmentResponse,
            work,
        )

    async def RejectRoleAssignment(self, request: service.RejectRoleAssignmentRequest, context: Any) -> Any:
        """PENDING_APPROVAL -> REJECTED by an admin other than the grantee (the maker may withdraw)."""
        _require_role(Role.ADMIN)
        checker = (_end_user() or EndUser(subject="system")).subject

        async def work(session: AsyncSession) -> service.RejectRoleAssignmentResponse:
            now_us = _now_us()
            row = await self._assignment(session, request.role_assignment_id)
            if checker == row.user_id:
                raise errors.PermissionDenied("the grantee cannot decide on their own role")
            domain.check_assignment_transition(AssignmentState(row.state), AssignmentState.REJECTED)
            await store.update_assignment(
                session,
                row.role_assignment_id,
                state=int(AssignmentState.REJECTED),
                decided_by=checker,
                decision_note=request.note,
                decide_time_us=now_us,
            )
            await events.publish(
                session,
                auth_events.RoleAssignmentRejected,
                row.role_assignment_id,
                role_assignment_id=row.role_assignment_id,
                user_id=row.user_id,
                role=row.role,
                state=int(AssignmentState.REJECTED),
                rejected_by=checker,
            )
            rejected = await self._assignment(session, row.role_assignment_id)
            return service.RejectRoleAssignmentResponse(role_assignment=convert.assignment_message(rejected))

        return await idempotency.run_once(
            self.database,
            SERVICE + "RejectRoleAssignment",
            request,
            service.RejectRoleAssignmentResponse,
            work,
        )

    async def RevokeRoleAssignment(self, request: service.RevokeRoleAssignmentRequest, context: Any) -> Any:
        """ACTIVE -> REVOKED and the holder's sessions end; never the last admin."""
        _require_role(Role.ADMIN)
        by = (_end_user() or EndUser(subject="system")).subject

        async def work(session: AsyncSession) -> service.RevokeRoleAssignmentResponse:
            now_us = _now_us()
            row = await self._assignment(session, request.role_assignment_id)
            domain.check_assignment_transition(AssignmentState(row.state), AssignmentState.REVOKED)
            if row.role == int(Role.ADMIN):
                remaining = (await store.active_holders(session, int(Role.ADMIN)) | self.bootstrap_admins) - {
                    row.user_id
                }
                if not remaining:
                    raise errors.InvalidState("the last active admin cannot be revoked")
            await store.update_assignment(
                session,
                row.role_assignment_id,
                state=int(AssignmentState.REVOKED),
                revoked_by=by,
                decision_note=request.note,
                revoke_time_us=now_us,
            )
            await self._revoke_all(session, row.user_id, RevokeReason.ADMIN_REVOKED, by)
            await events.publish(
                session,
                auth_events.RoleAssignmentRevoked,
                row.role_assignment_id,
                role_assignment_id=row.role_assignment_id,
                user_id=row.user_id,
                role=row.role,
                revoked_by=by,
            )
            revoked = await self._assignment(session, row.role_assignment_id)
            return service.RevokeRoleAssignmentResponse(role_assignment=convert.assignment_message(revoked))

        return await idempotency.run_once(
            self.database,
            SERVICE + "RevokeRoleAssignment",
            request,
            service.RevokeRoleAssignmentResponse,
            work,
        )

    # Roles and permissions

    async def ListRoles(self, request: service.ListRolesRequest, context: Any) -> Any:
        """Every role with its permissions. Admin and auditor."""
        _require_role(Role.ADMIN, Role.AUDITOR)
        return service.ListRolesResponse(
            roles=[
                resources.RolePermissions(
                    role=int(role),  # type: ignore[arg-type]
                    permissions=list(rbac.PERMISSIONS[role]),
                    grantable_scopes=list(rbac.GRANTABLE_SCOPES[role]),
                    requires_two_factor=role in STAFF,
                )
                for role in Role
            ]
        )

    async def CheckPermission(self, request: service.CheckPermissionRequest, context: Any) -> Any:
        """Whether a user (and, with an API key, the key's scopes) holds a permission. Internal."""
        _require_internal()
        user = await self.users.get(request.user_id)
        if not user.active:
            return service.CheckPermissionResponse(allowed=False, denial_reason="user frozen")
        async with self.database.transaction() as session:
            roles = await self._roles(session, request.user_id, _now_us())
            key = await store.api_key_by_id(session, request.api_key_id) if request.api_key_id else None
        if request.api_key_id:
            if (
                key is None
                or key.user_id != request.user_id
                or key.effective_state(_now_us()) is not ApiKeyState.ACTIVE
            ):
                return service.CheckPermissionResponse(allowed=False, denial_reason="API key not active")
            if not any(rbac.scope_covers(scope, request.permission) for scope in key.scopes):
                return service.CheckPermissionResponse(allowed=False, denial_reason="scope not granted")
            roles = {Role.USER}
        role = rbac.granting_role(roles, request.permission)
        if role is None:
            return service.CheckPermissionResponse(allowed=False, denial_reason="no role grants it")
        return service.CheckPermissionResponse(allowed=True, granted_by=int(role))  # type: ignore[arg-type]


def _token(position: dict[str, Any]) -> str:
    return paging.encode_token(position)


def _position(token: str, fingerprint: str) -> dict[str, Any]:
    """The position of a page token, which must come from the same listing."""
    position = paging.decode_token(token)
    if position and position.get("f") != fingerprint:
        raise errors.InvalidArgument([errors.FieldViolation("page_token", "not a token from this listing")])
    return position
