"""The gateway over real services: auth and user (tests.harness.identity), a ledger and an account
service, each served by the kit in this process, and the gateway under uvicorn on a free loopback
port, reached over real HTTP with httpx.

The services trust the keys auth publishes (exported as the PEM file the kit reads). Tests that
need a caller auth would never issue a token to (any subject, staff roles without the
maker-checker grant, other claims) get one from `Mesh.issuer`, which signs with auth's own active
key; everything else registers and logs in for real."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.account.v1 import account_service_pb2_grpc as account_grpc
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as ledger_grpc

from gateway.app import Gateway, create_app
from gateway.config import GatewaySettings
from svc.account import main as account_main
from svc.account.config import AccountSettings
from svc.kit import catalog
from svc.kit.bus import InProcessBus
from svc.kit.client import channel
from svc.kit.config import KitSettings
from svc.kit.server import ServiceApp
from svc.ledger import main as ledger_main
from tests.gateway.issuer import Issuer, SigningKey
from tests.harness.identity import PASSWORD, Identity, start_identity

ROOT = Path(__file__).resolve().parents[2]
LEDGER_MIGRATIONS = ROOT / "svc" / "ledger" / "migrations" / "versions"
ACCOUNT_MIGRATIONS = ROOT / "svc" / "account" / "migrations" / "versions"
ASSET = "ethereum:ETH"
CUSTODY = "assets:custody:hot:gateway-tests:ethereum:ETH"


@dataclass
class Mesh:
    """Running services and stubs to set up their state directly over gRPC."""

    identity: Identity
    # Signs with auth's active key: tokens with claims auth would not grant (see the module doc).
    issuer: Issuer
    apps: dict[str, ServiceApp]  # ledger and account; auth and user are the identity's
    ledger: ledger_grpc.LedgerServiceStub
    accounts: account_grpc.AccountServiceStub
    channels: list[grpc.aio.Channel]
    custody_id: str
    tmp_path: Path

    @property
    def endpoints(self) -> dict[str, str]:
        apps = {"auth": self.identity.auth_app, "user": self.identity.user_app, **self.apps}
        return {name: f"127.0.0.1:{app.port}" for name, app in apps.items()}

    def bearer(self, subject: str, **claims: Any) -> dict[str, str]:
        """Authorization headers with a fresh token of this mesh's issuer."""
        return {"Authorization": f"Bearer {self.issuer.token(subject, **claims)}"}

    async def stop(self) -> None:
        for connection in self.channels:
            await connection.close()
        for app in reversed(list(self.apps.values())):
            await app.stop(0)
        await self.identity.stop()

    async def register(
        self, http: httpx.AsyncClient, *, email: str = "", request_id: str = ""
    ) -> tuple[str, str]:
        """A user registered at the user service through the gateway: their id and the e-mail
        address they log in with (`request_id` decides the id: the bootstrap admin's is known)."""
        email = email or f"u{uuid.uuid4().hex[:12]}@example.com"
        response = await http.post(
            "/v1/users",
            json={
                "requestId": request_id or f"register-{uuid.uuid4().hex}",
                "email": email,
                "password": PASSWORD,
                "acceptedTermsVersion": "2024-06",
            },
        )
        assert response.status_code == 200, response.text
        return str(response.json()["user"]["userId"]), email

    async def login(self, http: httpx.AsyncClient, email: str) -> str:
        """An access token auth issues at login through the gateway."""
        response = await http.post(
            "/v1/auth/login",
            json={"requestId": f"login-{uuid.uuid4().hex}", "email": email, "password": PASSWORD},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["tokens"]["accessToken"])

    async def signed_in(self, http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
        """A new user, registered and logged in through the gateway: their id and bearer headers."""
        user_id, email = await self.register(http)
        return user_id, {"Authorization": f"Bearer {await self.login(http, email)}"}

    async def open_account(self, user: str) -> Any:
        response = await self.accounts.OpenAccount(
            account_service.OpenAccountRequest(
                request_id=f"open-{uuid.uuid4().hex}", user_id=user, asset=ASSET, kind=1
            )
        )
        return response.account

    async def deposit(self, ledger_account_id: str, amount: int) -> ledger_resources.JournalEntry:
        entry_id = f"test.{uuid.uuid4().hex}"
        response = await self.ledger.CreateJournalEntry(
            ledger_service.CreateJournalEntryRequest(
                request_id=entry_id,
                entry=ledger_resources.JournalEntry(
                    entry_id=entry_id,
                    kind=1,  # type: ignore[arg-type]
                    category="deposit.credit",
                    postings=[
                        ledger_resources.Posting(
                            account_id=self.custody_id, side=1, asset=ASSET, amount=str(amount)
                        ),
                        ledger_resources.Posting(
                            account_id=ledger_account_id, side=2, asset=ASSET, amount=str(amount)
                        ),
                    ],
                ),
            )
        )
        return response.entry


def free_port() -> int:
    """A loopback port free now (port 0 would mean the catalog's port to the kit)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def kit_settings(tmp_path: Path, database_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "port": free_port(),
        "pki_dir": tmp_path / "pki",
        "tls": False,
        "database_url": database_url,
        **extra,
    }


async def start_ledger(
    mesh_dir: Path, keys_file: Path, bus: Any, port: int = 0, *, tls: bool = False
) -> ServiceApp:
    services = catalog.default()
    settings = KitSettings(
        **kit_settings(
            mesh_dir, f"sqlite+aiosqlite:///{mesh_dir / 'ledger.db'}", jwt_public_keys_file=keys_file
        )
        | ({"port": port} if port else {})
        | {"tls": tls}
    )
    app = ServiceApp(services.service("ledger"), settings, catalog=services, bus=bus)
    ledger_main.build(app)
    await app.start(migrations=LEDGER_MIGRATIONS, migrate_database=True)
    return app


async def start_mesh(tmp_path: Path, *, share_bus: bool = True) -> Mesh:
    """Auth and user, ledger and account on SQLite; stops what started if a step fails.

    Without `share_bus` the ledger has a bus of its own, so that a test can stop and restart it
    without stopping the account service's consumer.
    """
    services = catalog.default()
    bus = InProcessBus()
    identity = await start_identity(f"sqlite+aiosqlite:///{tmp_path / 'identity.db'}", tmp_path)
    keys_file = tmp_path / "jwt-keys.pem"
    identity.export_public_keys(keys_file)
    loaded = identity.ring.loaded
    assert loaded is not None
    issuer = Issuer(keys=[SigningKey(loaded.kid, loaded.private)])
    apps: dict[str, ServiceApp] = {}
    channels: list[grpc.aio.Channel] = []
    try:
        apps["ledger"] = await start_ledger(tmp_path, keys_file, bus if share_bus else InProcessBus())
        account_settings = AccountSettings(
            **kit_settings(
                tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'account.db'}", jwt_public_keys_file=keys_file
            ),
            endpoints={"ledger": f"127.0.0.1:{apps['ledger'].port}"},
        )
        account = ServiceApp(services.service("account"), account_settings, catalog=services, bus=bus)
        account_main.build(account)
        await account.start(migrations=ACCOUNT_MIGRATIONS, migrate_database=True)
        apps["account"] = account
        channels += [channel(f"127.0.0.1:{apps['ledger'].port}"), channel(f"127.0.0.1:{account.port}")]
        ledger = ledger_grpc.LedgerServiceStub(channels[0])
        custody = await ledger.CreateLedgerAccount(
            ledger_service.CreateLedgerAccountRequest(
                request_id="custody-account",
                account=ledger_resources.LedgerAccount(code=CUSTODY, type=1, asset=ASSET, constraint=1),
            )
        )
    except BaseException:
        for connection in channels:
            await connection.close()
        for app in reversed(list(apps.values())):
            await app.stop(0)
        await identity.stop()
        raise
    return Mesh(
        identity,
        issuer,
        apps,
        ledger,
        account_grpc.AccountServiceStub(channels[1]),
        channels,
        custody.account.account_id,
        tmp_path,
    )


class ManualClock:
    """A monotonic clock that tests move forward instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Edge:
    """A running gateway and an HTTP client to it."""

    gateway: Gateway
    http: httpx.AsyncClient
    url: str


@contextlib.asynccontextmanager
async def serve_gateway(settings: GatewaySettings, **options: Any) -> AsyncIterator[Edge]:
    """The gateway app under uvicorn on a free loopback port, until the block ends."""
    app = create_app(settings, **options)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield Edge(app.state.gateway, http, url)
    finally:
        server.should_exit = True
        await task
        listener.close()


@contextlib.asynccontextmanager
async def stalled_upstream() -> AsyncIterator[str]:
    """An upstream that accepts connections and never answers, like a hung process; its address."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def gateway_settings(mesh: Mesh, **overrides: Any) -> GatewaySettings:
    # Auth's answers get a deadline far above the 2 s default: on a loaded shared test machine a
    # signature check at auth can take longer, and no test is about that deadline.
    settings: dict[str, Any] = {"auth_timeout_s": 15.0, **overrides}
    return GatewaySettings(
        port=0, tls=False, pki_dir=mesh.tmp_path / "pki", endpoints=mesh.endpoints, **settings
    )


@pytest.fixture(scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    """One mesh per test module: the state tests create is keyed by fresh ids."""
    running = await start_mesh(tmp_path_factory.mktemp("mesh"))
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def edge(mesh: Mesh) -> AsyncIterator[Edge]:
    """The gateway with its default settings in front of the module's mesh."""
    async with serve_gateway(gateway_settings(mesh)) as running:
        yield running


@pytest.fixture
def bearer(mesh: Mesh) -> Callable[..., dict[str, str]]:
    """Authorization headers with a fresh token of the issuer."""

    def headers(subject: str, **claims: Any) -> dict[str, str]:
        return mesh.bearer(subject, **claims)

    return headers
