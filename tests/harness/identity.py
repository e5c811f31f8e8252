"""The user and auth services for tests, served by the kit (no TLS) in this process, each
calling the other: registration stores the password at auth, login resolves the identifier at
user. The user service verifies the auth service's real tokens (its JWKS exported as PEM)."""

from __future__ import annotations

import base64
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.auth.v1 import auth_service_pb2_grpc as auth_grpc
from finmesh.auth.v1.auth_service_pb2 import LoginResponse
from finmesh.user.v1 import user_service_pb2 as user
from finmesh.user.v1 import user_service_pb2_grpc as user_grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import select

from svc.auth import keys, totp
from svc.auth import main as auth_main
from svc.auth.config import AuthSettings
from svc.auth.keyring import KeyRing
from svc.kit import catalog, migrate
from svc.kit.bus import EventBus, InProcessBus, KafkaBus
from svc.kit.client import channel
from svc.kit.config import KitSettings
from svc.kit.db import Database
from svc.kit.server import ServiceApp
from svc.kit.tables import outbox
from svc.user import main as user_main
from svc.user.domain import user_id_for
from tests.harness.servers import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
AUTH_MIGRATIONS = ROOT / "svc" / "auth" / "migrations" / "versions"
USER_MIGRATIONS = ROOT / "svc" / "user" / "migrations" / "versions"
PASSWORD = "correct horse battery staple"
# The bootstrap admin: user ids derive from the registration's request_id, so it is known upfront.
ADMIN_REGISTRATION = "register-bootstrap-admin"
ADMIN_ID = user_id_for(ADMIN_REGISTRATION)
ADMIN_EMAIL = "admin@finmesh.example"
CHECKER_REGISTRATION = "register-bootstrap-checker"
CHECKER_ID = user_id_for(CHECKER_REGISTRATION)
CHECKER_EMAIL = "checker@finmesh.example"
CLIENT_IP = "203.0.113.7"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kafka_bus(bootstrap_servers: str, prefix: str, client_id: str) -> KafkaBus:
    """A service's bus on the harness's Kafka broker, its topics under a prefix of the test's own
    (so that a test reads only its own events)."""
    return KafkaBus(
        bootstrap_servers,
        client_id=client_id,
        request_timeout_ms=5_000,
        publish_timeout_ms=5_000,
        topic_partitions=1,
        topic_prefix=prefix,
    )


def rid(prefix: str = "req") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def bearer(token: str, ip: str = CLIENT_IP) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"), ("x-finmesh-client-ip", ip))


def from_ip(ip: str = CLIENT_IP) -> tuple[tuple[str, str], ...]:
    return (("x-finmesh-client-ip", ip),)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


async def refused(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    """Awaits a call that must fail with `code` and ErrorInfo `reason`; returns the error."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value
    info = error_info(caught.value)
    assert info.reason == reason, info
    return caught.value


@dataclass
class Identity:
    """A running user and auth service, and stubs to call them."""

    user_app: ServiceApp
    auth_app: ServiceApp
    users: user_grpc.UserServiceAsyncStub
    auth: auth_grpc.AuthServiceAsyncStub
    ring: KeyRing
    channels: tuple[grpc.aio.Channel, ...]

    async def stop(self) -> None:
        for connection in self.channels:
            await connection.close()
        # Auth first: its consumer reads the bus that both share, which the first app to stop
        # closes.
        await self.auth_app.stop(0)
        await self.user_app.stop(0)

    async def register(self, email: str = "", phone: str = "", **fields: Any) -> user.User:
        values: dict[str, Any] = {
            "request_id": rid("register"),
            "password": PASSWORD,
            "accepted_terms_version": "2024-06",
        }
        if phone:
            values["phone"] = phone
        else:
            values["email"] = email or f"u{uuid.uuid4().hex[:10]}@example.com"
        values.update(fields)
        response = await self.users.RegisterUser(user.RegisterUserRequest(**values))
        return response.user

    async def admin_token(self, email: str = ADMIN_EMAIL, registration: str = ADMIN_REGISTRATION) -> str:
        """An access token of a bootstrap admin (registered on first use; the first by default)."""
        try:
            await self.register(email=email, request_id=registration)
        except grpc.aio.AioRpcError as error:
            assert error.code() is grpc.StatusCode.ALREADY_EXISTS, error
        return str((await self.tokens(email)).access_token)

    async def login(
        self, email: str, password: str = PASSWORD, ip: str = CLIENT_IP, **fields: Any
    ) -> LoginResponse:
        request = auth.LoginRequest(request_id=rid("login"), email=email, password=password, **fields)
        return await self.auth.Login(request, metadata=from_ip(ip))

    async def tokens(self, email: str) -> Any:
        response = await self.login(email)
        assert response.HasField("tokens"), response
        return response.tokens

    async def enable_totp(self, access_token: str) -> tuple[bytes, list[str]]:
        """Enrolls and confirms TOTP; returns the secret and the recovery codes."""
        enrolled = await self.auth.EnrollTotp(
            auth.EnrollTotpRequest(request_id=rid("enroll"), current_password=PASSWORD),
            metadata=bearer(access_token),
        )
        secret = base32_decode(enrolled.secret_base32)
        confirmed = await self.auth.ConfirmTotp(
            auth.ConfirmTotpRequest(
                request_id=rid("confirm"),
                enrollment_id=enrolled.enrollment_id,
                totp_code=totp.totp(secret, time.time()),
            ),
            metadata=bearer(access_token),
        )
        return secret, list(confirmed.recovery_codes)

    async def events(self, app: ServiceApp, event_type: type[Message]) -> list[Any]:
        """Every event of a type in a service's outbox, oldest first."""
        async with app.database.transaction() as session:
            rows = await session.execute(
                select(outbox.c.payload)
                .where(outbox.c.event_type == event_type.DESCRIPTOR.full_name)
                .order_by(outbox.c.id)
            )
            return [event_type.FromString(row.payload) for row in rows]

    def export_public_keys(self, path: Path) -> None:
        """The auth service's published keys as the PEM file a service's verifier reads."""
        loaded = self.ring.loaded
        assert loaded is not None
        path.write_bytes(b"".join(keys.public_pem(jwk) for jwk in loaded.published))


def base32_decode(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


class Templates:
    """Both services' databases migrated once per session, copied for each test: an SQLite file
    per service, or a PostgreSQL database (a schema per service) used as CREATE DATABASE's
    template. Each test still starts the services through the kit, whose migration step then
    finds the schema current."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sqlite_ready = False
        self._postgres_template = ""

    @staticmethod
    async def _migrate(url: str, schemas: dict[str, Path]) -> None:
        for schema, versions in schemas.items():
            database = Database(url, schema=schema)
            try:
                await migrate.upgrade(database, versions)
            finally:
                await database.dispose()

    async def prepare(self, database_url: str, tmp_path: Path, postgres: PostgresServer | None) -> str:
        """The database URL a test passes to `start_identity`, already migrated."""
        if database_url.startswith("sqlite"):
            if not self._sqlite_ready:
                for name, versions in (("auth", AUTH_MIGRATIONS), ("user", USER_MIGRATIONS)):
                    await self._migrate(f"sqlite+aiosqlite:///{self.directory / name}.db", {name: versions})
                self._sqlite_ready = True
            for name in ("auth", "user"):
                shutil.copyfile(self.directory / f"{name}.db", tmp_path / f"{name}.db")
            return database_url
        assert postgres is not None
        if not self._postgres_template:
            name = f"identity_template_{uuid.uuid4().hex[:8]}"
            await self._migrate(
                postgres.create_database(name), {"auth": AUTH_MIGRATIONS, "user": USER_MIGRATIONS}
            )
            self._postgres_template = name
        copy = f"t_identity_{uuid.uuid4().hex[:16]}"
        # FILE_COPY: a small template is copied faster than through the WAL (the default).
        postgres.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{self._postgres_template}" STRATEGY FILE_COPY')
        return postgres.url(copy)


@pytest.fixture(scope="session")
def identity_templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    """Migrated databases of the user and auth services, for every test of the session."""
    return Templates(tmp_path_factory.mktemp("identity-templates"))


@pytest.fixture
async def identity(
    database_url: str, tmp_path: Path, identity_templates: Templates, request: pytest.FixtureRequest
) -> AsyncIterator[Identity]:
    """User and auth on a fresh database of each backend, nonces in memory."""
    postgres = None if database_url.startswith("sqlite") else request.getfixturevalue("postgres_server")
    url = await identity_templates.prepare(database_url, tmp_path, postgres)
    running = await start_identity(url, tmp_path)
    yield running
    await running.stop()


def _database(database_url: str, tmp_path: Path, name: str) -> str:
    if database_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / name}.db"
    return database_url


# argon2id cost of the tests: (time cost, memory KiB, parallelism), far below production's.
TEST_ARGON2 = (1, 8192, 1)


async def start_identity(
    database_url: str,
    tmp_path: Path,
    redis_url: str = "",
    *,
    argon2: tuple[int, int, int] = TEST_ARGON2,
    endpoints: dict[str, str] | None = None,
    bus: EventBus | None = None,
    user_port: int = 0,
) -> Identity:
    """Starts auth (first: the user service verifies its keys), then user; stops both on failure.

    `endpoints` are where both find the other services they call (account, notification),
    started after them on ports chosen beforehand; `bus` the bus they share (in process by
    default); `user_port` the user service's port when the others need it beforehand."""
    services = catalog.default()
    bus = bus or InProcessBus()
    auth_port, user_port = free_port(), user_port or free_port()
    others = dict(endpoints or {})
    auth_settings = AuthSettings(
        port=auth_port,
        tls=False,
        data_dir=tmp_path / "auth-data",
        pki_dir=tmp_path / "pki",
        database_url=_database(database_url, tmp_path, "auth"),
        endpoints={**others, "user": f"127.0.0.1:{user_port}"},
        redis_url=redis_url,
        argon2_time_cost=argon2[0],
        argon2_memory_kib=argon2[1],
        argon2_parallelism=argon2[2],
        bootstrap_admin_user_ids=[ADMIN_ID, CHECKER_ID],
    )
    auth_app = ServiceApp(services.service("auth"), auth_settings, catalog=services, bus=bus)
    ring = auth_main.wire(auth_app).keyring
    started: list[Any] = [auth_app]
    try:
        await auth_app.start(migrations=AUTH_MIGRATIONS, migrate_database=True)
        pem = tmp_path / "auth-public-keys.pem"
        loaded = ring.loaded
        assert loaded is not None
        pem.write_bytes(b"".join(keys.public_pem(jwk) for jwk in loaded.published))
        user_settings = KitSettings(
            port=user_port,
            tls=False,
            pki_dir=tmp_path / "pki",
            database_url=_database(database_url, tmp_path, "user"),
            endpoints={**others, "auth": f"127.0.0.1:{auth_port}"},
            jwt_public_keys_file=pem,
        )
        user_app = ServiceApp(services.service("user"), user_settings, catalog=services, bus=bus)
        user_main.build(user_app)
        started.append(user_app)
        await user_app.start(migrations=USER_MIGRATIONS, migrate_database=True)
        channels = (channel(f"127.0.0.1:{user_port}"), channel(f"127.0.0.1:{auth_port}"))
    except BaseException:
        for resource in started:
            await resource.stop(0)
        raise
    return Identity(
        user_app,
        auth_app,
        user_grpc.UserServiceStub(channels[0]),
        auth_grpc.AuthServiceStub(channels[1]),
        ring,
        channels,
    )
