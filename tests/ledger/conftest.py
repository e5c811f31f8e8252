"""The ledger served by the real kit (no TLS) on each backend, and helpers to talk to it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from finmesh.ledger.v1 import ledger_resources_pb2 as resources
from finmesh.ledger.v1 import ledger_service_pb2 as service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as service_grpc
from google.rpc import error_details_pb2, status_pb2

from svc.kit import catalog
from svc.kit.client import channel
from svc.kit.config import KitSettings
from svc.kit.server import ServiceApp
from svc.ledger.main import SERVICE_NAME
from svc.ledger.server import LedgerServicer
from svc.ledger.writer import ExpirySweeper, Writer

# The versions folder itself: see the report on svc/kit/server.py builder_for.
MIGRATIONS = Path(__file__).resolve().parents[2] / "svc" / "ledger" / "migrations" / "versions"
ASSET = "ethereum:ETH"
SWEEP_INTERVAL_MS = 100


@dataclass
class Ledger:
    """A running ledger: its app, writer and a stub to call it."""

    app: ServiceApp
    writer: Writer
    sweeper: ExpirySweeper
    stub: service_grpc.LedgerServiceStub

    async def account(self, code: str, *, constrained: bool = True, owner: str = "") -> str:
        """Creates an account from its code (type from the root); returns its id."""
        root = code.split(":")[0]
        kind = {"assets": 1, "liabilities": 2, "equity": 3, "revenue": 4, "expenses": 5}[root]
        constraint = 1
        if constrained:
            constraint = 3 if kind in (1, 5) else 2
        response = await self.stub.CreateLedgerAccount(
            service.CreateLedgerAccountRequest(
                request_id=f"acct-{uuid.uuid4().hex}",
                account=resources.LedgerAccount(
                    code=code, type=kind, asset=":".join(code.split(":")[-2:]),
                    constraint=constraint, owner_user_id=owner,
                ),
            )
        )  # fmt: skip
        return response.account.account_id

    async def transfer(
        self, entry_id: str, debit: str, credit: str, amount: int, *, kind: int = 1, **fields: object
    ) -> service.CreateJournalEntryResponse:
        """One two-posting entry: debit `debit`, credit `credit` (account ids)."""
        return await self.stub.CreateJournalEntry(
            service.CreateJournalEntryRequest(
                request_id=f"req-{entry_id}",
                entry=entry(entry_id, debit, credit, amount, kind=kind, **fields),
            )
        )

    async def balance(self, account_id: str, **as_of: int) -> resources.LedgerBalance:
        """The account's balance now, or as of a sequence."""
        response = await self.stub.GetLedgerBalance(
            service.GetLedgerBalanceRequest(account_id=account_id, **as_of)
        )
        return response.balance

    async def trial_balanced(self) -> bool:
        """Whether every asset's trial balance is zero now."""
        response = await self.stub.GetTrialBalance(service.GetTrialBalanceRequest())
        return response.balanced and all(
            a.total_debits_posted == a.total_credits_posted
            and a.total_debits_pending == a.total_credits_pending
            for a in response.assets
        )


def entry(
    entry_id: str, debit: str, credit: str, amount: int | str, *, kind: int = 1, **fields: object
) -> resources.JournalEntry:
    """A JournalEntry debiting `debit` and crediting `credit` (ids) by `amount`."""
    fields.setdefault("category", "transfer.internal")
    return resources.JournalEntry(
        entry_id=entry_id,
        kind=kind,  # type: ignore[arg-type]
        postings=[
            resources.Posting(account_id=debit, side=1, asset=ASSET, amount=str(amount)),
            resources.Posting(account_id=credit, side=2, asset=ASSET, amount=str(amount)),
        ],
        **fields,  # type: ignore[arg-type]
    )


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a gRPC error."""
    status = status_pb2.Status.FromString(
        dict(error.trailing_metadata() or ())["grpc-status-details-bin"]  # type: ignore[arg-type]
    )
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


async def start_ledger(database_url: str, tmp_path: Path) -> tuple[Ledger, grpc.aio.Channel]:
    """Starts the ledger through the kit (migrations applied), with a fast expiry sweep."""
    settings = KitSettings(port=0, pki_dir=tmp_path / "pki", tls=False, database_url=database_url)
    app = ServiceApp(catalog.default().service("ledger"), settings, catalog=catalog.default())
    writer = Writer(app.database)
    app.add_servicer(
        service_grpc.add_LedgerServiceServicer_to_server, LedgerServicer(app.database, writer), SERVICE_NAME
    )
    await app.start(migrations=MIGRATIONS, migrate_database=True)
    sweeper = ExpirySweeper(app.database, writer, interval_ms=SWEEP_INTERVAL_MS)
    sweeper.start()
    connection = channel(f"127.0.0.1:{app.port}", identity=None, ca=None)
    return Ledger(app, writer, sweeper, service_grpc.LedgerServiceStub(connection)), connection


async def stop_ledger(ledger: Ledger, connection: grpc.aio.Channel) -> None:
    """Stops sweeper, writer, channel and app."""
    await ledger.sweeper.stop()
    await ledger.writer.stop()
    await connection.close()
    await ledger.app.stop(0)


@pytest.fixture
async def ledger(database_url: str, tmp_path: Path) -> AsyncIterator[Ledger]:
    """A ledger on a fresh database of each backend."""
    running, connection = await start_ledger(database_url, tmp_path)
    yield running
    await stop_ledger(running, connection)
