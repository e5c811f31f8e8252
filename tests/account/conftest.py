"""The account service and a real ledger, both served by the kit (no TLS) in this process on each
backend, sharing one in-process bus so that the ledger's entry events reach the account's consumer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from finmesh.account.v1 import account_service_pb2 as service
from finmesh.account.v1 import account_service_pb2_grpc as service_grpc
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as ledger_grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import select

from svc.account import main as account_main
from svc.account.config import AccountSettings
from svc.kit import catalog
from svc.kit.bus import InProcessBus
from svc.kit.client import channel
from svc.kit.config import KitSettings
from svc.kit.server import ServiceApp
from svc.kit.tables import outbox
from svc.ledger import main as ledger_main

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_MIGRATIONS = ROOT / "svc" / "account" / "migrations" / "versions"
LEDGER_MIGRATIONS = ROOT / "svc" / "ledger" / "migrations" / "versions"
ASSET = "ethereum:ETH"
CUSTODY = "assets:custody:hot:account-tests:ethereum:ETH"
WAIT_S = 10.0
POLL_INTERVAL_S = 0.02


@dataclass
class Mesh:
    """A running ledger and account service, and stubs to call them."""

    ledger_app: ServiceApp
    account_app: ServiceApp
    ledger: ledger_grpc.LedgerServiceStub
    accounts: service_grpc.AccountServiceStub
    custody_id: str
    channels: tuple[grpc.aio.Channel, ...]

    async def stop(self) -> None:
        """Stops the account service, then the ledger."""
        for connection in self.channels:
            await connection.close()
        await self.account_app.stop(0)
        await self.ledger_app.stop(0)

    async def open(self, user: str = "u1", **fields: Any) -> service.OpenAccountResponse:
        """Opens the MAIN ETH account of `user` (fields override the request's)."""
        values: dict[str, Any] = {
            "request_id": f"open-{uuid.uuid4().hex}",
            "user_id": user,
            "asset": ASSET,
            "kind": 1,
        }
        values.update(fields)
        return await self.accounts.OpenAccount(service.OpenAccountRequest(**values))

    async def post(
        self, debit: str, credit: str, amount: int, *, kind: int = 1, category: str = "transfer.internal"
    ) -> ledger_resources.JournalEntry:
        """One two-posting entry made directly at the ledger (ids); returns the committed entry."""
        entry_id = f"test.{uuid.uuid4().hex}"
        response = await self.ledger.CreateJournalEntry(
            ledger_service.CreateJournalEntryRequest(
                request_id=entry_id,
                entry=ledger_resources.JournalEntry(
                    entry_id=entry_id,
                    kind=kind,  # type: ignore[arg-type]
                    category=category,
                    postings=[
                        ledger_resources.Posting(account_id=debit, side=1, asset=ASSET, amount=str(amount)),
                        ledger_resources.Posting(account_id=credit, side=2, asset=ASSET, amount=str(amount)),
                    ],
                ),
            )
        )
        return response.entry

    async def deposit(self, ledger_account_id: str, amount: int) -> ledger_resources.JournalEntry:
        """Credits a user's ledger account from custody."""
        return await self.post(self.custody_id, ledger_account_id, amount, category="deposit.credit")

    async def balance(self, account_id: str, min_sequence: int = 0) -> service.GetAccountBalanceResponse:
        """The account's balance through the account service."""
        return await self.accounts.GetAccountBalance(
            service.GetAccountBalanceRequest(account_id=account_id, min_sequence=min_sequence)
        )

    async def events(self, event_type: type[Message]) -> list[Any]:
        """Every event of a type in the account service's outbox, oldest first."""
        async with self.account_app.database.transaction() as session:
            rows = await session.execute(
                select(outbox.c.payload)
                .where(outbox.c.event_type == event_type.DESCRIPTOR.full_name)
                .order_by(outbox.c.id)
            )
            return [event_type.FromString(row.payload) for row in rows]


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S) -> None:
    """Waits until `check()` holds (for what the consumer does in the background)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await check():
                return
            await asyncio.sleep(POLL_INTERVAL_S)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a gRPC error."""
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


async def refused(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> error_details_pb2.ErrorInfo:
    """Awaits a call that must fail with `code` and ErrorInfo `reason`; returns the ErrorInfo."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value
    info = error_info(caught.value)
    assert info.reason == reason, info
    return info


def account_database_url(database_url: str, tmp_path: Path) -> str:
    """The account service's own database: a second SQLite file, or (PostgreSQL) its own schema."""
    if database_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / 'account.db'}"
    return database_url


async def start_mesh(database_url: str, tmp_path: Path, redis_url: str = "") -> Mesh:
    """Starts the ledger and the account service through the kit, sharing one in-process bus;
    stops whatever started if a later step fails (a server left running would hang the session)."""
    services = catalog.default()
    bus = InProcessBus()
    ledger_settings = KitSettings(port=0, pki_dir=tmp_path / "pki", tls=False, database_url=database_url)
    ledger_app = ServiceApp(services.service("ledger"), ledger_settings, catalog=services, bus=bus)
    ledger_main.build(ledger_app)
    started: list[Any] = [ledger_app]
    try:
        await ledger_app.start(migrations=LEDGER_MIGRATIONS, migrate_database=True)
        account_settings = AccountSettings(
            port=0,
            pki_dir=tmp_path / "pki",
            tls=False,
            database_url=account_database_url(database_url, tmp_path),
            endpoints={"ledger": f"127.0.0.1:{ledger_app.port}"},
            redis_url=redis_url,
        )
        account_app = ServiceApp(services.service("account"), account_settings, catalog=services, bus=bus)
        account_main.build(account_app)
        started.insert(0, account_app)
        await account_app.start(migrations=ACCOUNT_MIGRATIONS, migrate_database=True)
        channels = (channel(f"127.0.0.1:{ledger_app.port}"), channel(f"127.0.0.1:{account_app.port}"))
        started[:0] = channels
        ledger = ledger_grpc.LedgerServiceStub(channels[0])
        custody = await ledger.CreateLedgerAccount(
            ledger_service.CreateLedgerAccountRequest(
                request_id="custody-account",
                account=ledger_resources.LedgerAccount(code=CUSTODY, type=1, asset=ASSET, constraint=1),
            )
        )
    except BaseException:
        for resource in started:
            await (resource.close() if isinstance(resource, grpc.aio.Channel) else resource.stop(0))
        raise
    accounts = service_grpc.AccountServiceStub(channels[1])
    return Mesh(ledger_app, account_app, ledger, accounts, custody.account.account_id, channels)


@pytest.fixture
async def mesh(database_url: str, tmp_path: Path) -> AsyncIterator[Mesh]:
    """Ledger and account service on a fresh database of each backend, with the in-memory cache."""
    running = await start_mesh(database_url, tmp_path)
    yield running
    await running.stop()
