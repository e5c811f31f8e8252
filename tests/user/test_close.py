"""Closing a user through the gRPC contract, with the real account and ledger services answering
the holdings check: CloseUser (platform) and CloseMyAccount (the holder, with a step-up token);
the event, the sessions ended at auth, the login refused like an unknown identifier, and the
identifier free to register again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.events.v1 import user_events_pb2
from finmesh.user.v1 import user_service_pb2 as user

from svc.account import main as account_main
from svc.account.config import AccountSettings
from svc.kit import catalog
from svc.kit.bus import InProcessBus
from svc.kit.config import KitSettings
from svc.kit.server import ServiceApp
from svc.ledger import main as ledger_main
from tests.harness.bff_mesh import Downstream, StallingPeer, migrations
from tests.harness.calls import eventually
from tests.harness.identity import Identity, bearer, free_port, refused, rid, start_identity

CLOSED, ACTIVE, FROZEN = user.USER_STATUS_CLOSED, user.USER_STATUS_ACTIVE, user.USER_STATUS_FROZEN
COMPLIANCE, USER_REQUEST = user.STATUS_REASON_COMPLIANCE, user.STATUS_REASON_USER_REQUEST
ETH = "ethereum:ETH"


@dataclass
class Closing:
    identity: Identity
    ledger: ServiceApp
    account: ServiceApp
    # The bff harness's seeding (open an account, credit it from custody at the ledger).
    seeding: Downstream

    async def stop(self) -> None:
        for connection in self.seeding.channels:
            await connection.close()
        await self.account.stop(0)
        await self.ledger.stop(0)
        await self.identity.stop()


def _database(database_url: str, tmp: Path, name: str) -> str:
    return f"sqlite+aiosqlite:///{tmp / name}.db" if database_url.startswith("sqlite") else database_url


@pytest.fixture
async def closing(database_url: str, tmp_path: Path) -> AsyncIterator[Closing]:
    services = catalog.default()
    account_port, user_port = free_port(), free_port()
    identity = await start_identity(
        database_url, tmp_path, endpoints={"account": f"127.0.0.1:{account_port}"}, user_port=user_port
    )
    keys = tmp_path / "auth-public-keys.pem"
    common = {"tls": False, "pki_dir": tmp_path / "pki", "jwt_public_keys_file": keys}
    accounting = InProcessBus()
    ledger = ServiceApp(
        services.service("ledger"),
        KitSettings(**common, port=free_port(), database_url=_database(database_url, tmp_path, "ledger")),
        catalog=services,
        bus=accounting,
    )
    ledger_main.build(ledger)
    account = ServiceApp(
        services.service("account"),
        AccountSettings(
            **common,
            port=account_port,
            database_url=_database(database_url, tmp_path, "account"),
            endpoints={"ledger": f"127.0.0.1:{ledger.port}", "user": f"127.0.0.1:{user_port}"},
        ),
        catalog=services,
        bus=accounting,
    )
    account_main.build(account)
    try:
        await ledger.start(migrations=migrations("ledger"), migrate_database=True)
        await account.start(migrations=migrations("account"), migrate_database=True)
    except BaseException:
        await account.stop(0)
        await ledger.stop(0)
        await identity.stop()
        raise
    seeding = Downstream(identity, {"ledger": ledger, "account": account}, keys, StallingPeer())
    running = Closing(identity, ledger, account, seeding)
    yield running
    await running.stop()


def _close(user_id: str, **fields: object) -> user.CloseUserRequest:
    values: dict[str, object] = {
        "request_id": rid("close"),
        "user_id": user_id,
        "reason": COMPLIANCE,
        "note": "account closed after the compliance review",
        "approval_id": "action-1",
    }
    values.update(fields)
    return user.CloseUserRequest(**values)  # type: ignore[arg-type]


async def test_close_user_ends_sessions_and_logins(closing: Closing) -> None:
    identity = closing.identity
    registered = await identity.register(email="leaving@example.com")
    tokens = await identity.tokens("leaving@example.com")
    request = _close(registered.user_id)
    closed = (await identity.users.CloseUser(request)).user
    assert (closed.status, list(closed.status_reasons)) == (CLOSED, [COMPLIANCE])
    assert closed.HasField("close_time") and closed.version == registered.version + 1
    assert (await identity.users.CloseUser(request)).user == closed  # a replay, not a second close
    changes = await identity.users.ListUserStatusChanges(
        user.ListUserStatusChangesRequest(user_id=registered.user_id)
    )
    [change] = changes.status_changes
    assert (change.previous_status, change.new_status, change.reason) == (ACTIVE, CLOSED, COMPLIANCE)
    assert (change.approval_id, change.actor_type) == ("action-1", user.ACTOR_TYPE_SYSTEM)
    [event] = await identity.events(identity.user_app, user_events_pb2.UserStatusChanged)
    assert (event.user_id, event.new_status, event.reason) == (registered.user_id, CLOSED, COMPLIANCE)
    assert event.revoke_sessions

    # Auth refuses the closed user exactly as it refuses an identifier nobody holds.
    closed_login = await refused(
        identity.login("leaving@example.com"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"
    )
    unknown_login = await refused(
        identity.login("nobody@example.com"), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"
    )
    assert closed_login.details() == unknown_login.details()

    async def session_ended() -> bool:
        try:
            await identity.auth.IntrospectToken(auth.IntrospectTokenRequest(access_token=tokens.access_token))
        except grpc.aio.AioRpcError as error:
            return error.code() is grpc.StatusCode.UNAUTHENTICATED
        return False

    await eventually(session_ended)
    await refused(
        identity.auth.RefreshToken(
            auth.RefreshTokenRequest(request_id=rid("refresh"), refresh_token=tokens.refresh_token)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    # Closing is terminal; the identifier may be registered again, by a new user.
    await refused(
        identity.users.CloseUser(_close(registered.user_id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    again = await identity.register(email="leaving@example.com")
    assert again.user_id != registered.user_id and again.status == ACTIVE


async def test_close_is_refused_while_assets_are_held(closing: Closing) -> None:
    identity = closing.identity
    holder = await identity.register(email="holder@example.com")
    await closing.seeding.deposit(holder.user_id, ETH, 1_000)
    error = await refused(
        identity.users.CloseUser(_close(holder.user_id)), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE"
    )
    assert "holds assets" in (error.details() or "")
    after = (await identity.users.GetUser(user.GetUserRequest(user_id=holder.user_id))).user
    assert (after.status, after.version) == (ACTIVE, holder.version)
    assert await identity.events(identity.user_app, user_events_pb2.UserStatusChanged) == []
    # An account opened but never funded holds nothing: its holder may close.
    empty = await identity.register(email="empty@example.com")
    await closing.seeding.accounts.OpenAccount(
        account_service.OpenAccountRequest(request_id=rid("open"), user_id=empty.user_id, asset=ETH, kind=1)
    )
    assert (await identity.users.CloseUser(_close(empty.user_id))).user.status == CLOSED


async def test_staff_close_needs_an_approval(closing: Closing) -> None:
    identity = closing.identity
    target = await identity.register(email="target@example.com")
    admin = bearer(await identity.admin_token())
    await refused(
        identity.users.CloseUser(_close(target.user_id, approval_id=""), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    holder = bearer((await identity.tokens("target@example.com")).access_token)
    await refused(
        identity.users.CloseUser(_close(target.user_id), metadata=holder),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )


async def _step_up(identity: Identity, metadata: tuple[tuple[str, str], ...], recovery: str) -> str:
    verified = await identity.auth.VerifyStepUp(
        auth.VerifyStepUpRequest(
            request_id=rid("step-up"),
            purpose=auth_resources.STEP_UP_PURPOSE_ACCOUNT_CLOSE,
            recovery_code=recovery,
        ),
        metadata=metadata,
    )
    return str(verified.step_up_token)


async def test_close_my_account_with_a_step_up(closing: Closing) -> None:
    identity = closing.identity
    me = await identity.register(email="self@example.com")
    access = (await identity.tokens("self@example.com")).access_token
    metadata = bearer(access)
    _, recovery = await identity.enable_totp(access)
    request = user.CloseMyAccountRequest(
        request_id=rid("close-me"), step_up_token="not-a-token", feedback="bye"
    )
    await refused(
        identity.users.CloseMyAccount(request, metadata=metadata),
        grpc.StatusCode.PERMISSION_DENIED,
        "STEP_UP_REQUIRED",
    )
    # A token for another purpose is no token for closing.
    other = await identity.auth.VerifyStepUp(
        auth.VerifyStepUpRequest(
            request_id=rid("step-up"),
            purpose=auth_resources.STEP_UP_PURPOSE_WITHDRAWAL,
            recovery_code=recovery.pop(),
        ),
        metadata=metadata,
    )
    wrong = user.CloseMyAccountRequest(request_id=rid("close-me"), step_up_token=other.step_up_token)
    await refused(
        identity.users.CloseMyAccount(wrong, metadata=metadata),
        grpc.StatusCode.PERMISSION_DENIED,
        "STEP_UP_REQUIRED",
    )
    request = user.CloseMyAccountRequest(
        request_id=rid("close-me"),
        step_up_token=await _step_up(identity, metadata, recovery.pop()),
        feedback="bye",
    )
    closed = (await identity.users.CloseMyAccount(request, metadata=metadata)).user
    assert (closed.user_id, closed.status, list(closed.status_reasons)) == (
        me.user_id,
        CLOSED,
        [USER_REQUEST],
    )
    [change] = (
        await identity.users.ListUserStatusChanges(user.ListUserStatusChangesRequest(user_id=me.user_id))
    ).status_changes
    assert (change.actor_type, change.actor_id, change.note) == (user.ACTOR_TYPE_USER, me.user_id, "bye")
    assert (await identity.users.CloseMyAccount(request, metadata=metadata)).user == closed


async def test_a_frozen_user_cannot_close_their_own_account(closing: Closing) -> None:
    identity = closing.identity
    me = await identity.register(email="frozen-self@example.com")
    access = (await identity.tokens("frozen-self@example.com")).access_token
    metadata = bearer(access)
    _, recovery = await identity.enable_totp(access)
    token = await _step_up(identity, metadata, recovery.pop())
    await identity.users.FreezeUser(
        user.FreezeUserRequest(
            request_id=rid("freeze"), user_id=me.user_id, reason=COMPLIANCE, note="hold", approval_id="a-1"
        )
    )
    await refused(
        identity.users.CloseMyAccount(
            user.CloseMyAccountRequest(request_id=rid("close-me"), step_up_token=token), metadata=metadata
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    found = (await identity.users.GetUser(user.GetUserRequest(user_id=me.user_id))).user
    assert found.status == FROZEN
