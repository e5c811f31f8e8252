"""The wallet service and its real peers, served by the kit (no TLS) in this process on each
backend: ledger and account (sharing a bus, so the account's cache follows the ledger), custody
(software envelope keys) with a DEPOSIT_ROOT wallet, the chain gateway on its embedded EVM (and
its DISABLED public chains), user and auth, and the wallet service calling them. The wallet
service verifies the same test-signed end-user tokens as custody."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from finmesh.account.v1 import account_resources_pb2 as account_resources
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.account.v1 import account_service_pb2_grpc as account_grpc
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc as chain_grpc
from finmesh.common.v1 import money_pb2
from finmesh.custody.v1 import custody_resources_pb2 as custody_resources
from finmesh.custody.v1 import custody_service_pb2 as custody_service
from finmesh.custody.v1 import custody_service_pb2_grpc as custody_grpc
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as ledger_grpc
from finmesh.user.v1 import user_service_pb2 as user_service
from finmesh.wallet.v1 import wallet_service_pb2 as service
from finmesh.wallet.v1 import wallet_service_pb2_grpc as service_grpc
from google.protobuf.message import Message
from sqlalchemy import select

from svc.account import main as account_main
from svc.account.config import AccountSettings
from svc.chain_gateway import main as gateway_main
from svc.chain_gateway.config import EMBEDDED_CHAIN_ID, ChainGatewaySettings
from svc.custody import main as custody_main
from svc.custody.config import ChainAssets, CustodySettings
from svc.kit import catalog
from svc.kit.bus import BusMessage, InProcessBus
from svc.kit.client import channel
from svc.kit.config import KitSettings
from svc.kit.outbox import (
    CONTENT_TYPE_PROTOBUF,
    HEADER_CONTENT_TYPE,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    event_topic,
)
from svc.kit.server import ServiceApp
from svc.kit.tables import outbox
from svc.ledger import main as ledger_main
from svc.wallet import main as wallet_main
from svc.wallet.config import WalletSettings
from tests.harness.identity import Identity, identity_templates, start_identity
from tests.harness.process import free_port
from tests.harness.tokens import TokenIssuer

__all__ = ["identity_templates"]

ROOT = Path(__file__).resolve().parents[2]
CHAIN = "local"
DISABLED_CHAIN = "ethereum"
NATIVE = f"{CHAIN}:ETH"
CUSTODY_CODE = "assets:custody:hot:wallet-tests:local:ETH"
STEP_UP = "step-up-token-from-auth"


def migrations(name: str) -> Path:
    return ROOT / "svc" / name / "migrations" / "versions"


def own_database(database_url: str, tmp_path: Path, name: str) -> str:
    """A service's own database: an SQLite file of its own, or (PostgreSQL) its own schema."""
    if database_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / name}.db"
    return database_url


def rid(prefix: str = "req") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass
class Mesh:
    """The running services and stubs to call them."""

    apps: list[ServiceApp]
    channels: list[grpc.aio.Channel]
    identity: Identity
    jwt: TokenIssuer
    wallet_app: ServiceApp
    wallets: service_grpc.WalletServiceAsyncStub
    ledger: ledger_grpc.LedgerServiceAsyncStub
    accounts: account_grpc.AccountServiceAsyncStub
    custody: custody_grpc.CustodyServiceAsyncStub
    gateway: chain_grpc.ChainGatewayServiceAsyncStub
    bus: InProcessBus
    custody_account_id: str

    async def stop(self) -> None:
        for connection in self.channels:
            await connection.close()
        for app in self.apps:
            await app.stop(0)
        await self.identity.stop()

    def user(self, subject: str, *roles: str) -> tuple[tuple[str, str], ...]:
        """Metadata of an end user's call."""
        return self.jwt.metadata(subject, *roles)

    async def register(self, email: str = "", phone: str = "") -> user_service.User:
        """A new ACTIVE user at the user service."""
        return await self.identity.register(email=email, phone=phone)

    async def create_wallet(self, user_id: str, chain: str = CHAIN, request_id: str = "") -> Any:
        """CreateWallet as the user."""
        return await self.wallets.CreateWallet(
            service.CreateWalletRequest(request_id=request_id or rid("wallet"), user_id="me", chain=chain),
            metadata=self.user(user_id),
        )

    async def transfer(
        self,
        sender: str,
        amount: int,
        *,
        request_id: str = "",
        asset: str = NATIVE,
        memo: str = "",
        **recipient: str,
    ) -> Any:
        """CreateInternalTransfer as the sender, to `to_user_id`, `to_email` or `to_phone`."""
        return await self.wallets.CreateInternalTransfer(
            service.CreateInternalTransferRequest(
                request_id=request_id or rid("transfer"),
                user_id="me",
                chain=asset.partition(":")[0],
                amount=money_pb2.Money(asset=asset, amount=str(amount)),
                memo=memo,
                **recipient,
            ),
            metadata=self.user(sender),
        )

    async def balance(self, user_id: str, asset: str = NATIVE) -> Any:
        """The user's AssetBalance of an asset through ListBalances (zero if never held)."""
        response = await self.wallets.ListBalances(
            service.ListBalancesRequest(user_id=user_id, chain=asset.partition(":")[0], include_zero=True)
        )
        (found,) = [balance for balance in response.balances if balance.asset.id == asset]
        return found

    async def available(self, user_id: str, asset: str = NATIVE) -> int:
        return int((await self.balance(user_id, asset)).available)

    async def publish(self, event: Message, *, event_id: str = "") -> str:
        """Publishes an event on the bus as its producer's outbox relay does; returns its event id."""
        meta = getattr(event, "meta")  # noqa: B009 (every event message has meta)
        meta.event_id = event_id or meta.event_id or str(uuid.uuid4())
        meta.occurred_at.GetCurrentTime()
        await self.bus.publish(
            [
                BusMessage(
                    topic=event_topic(event),
                    key=meta.aggregate_id,
                    value=event.SerializeToString(),
                    headers={
                        HEADER_EVENT_TYPE: event.DESCRIPTOR.full_name,
                        HEADER_EVENT_ID: meta.event_id,
                        HEADER_CONTENT_TYPE: CONTENT_TYPE_PROTOBUF,
                    },
                )
            ]
        )
        return str(meta.event_id)

    async def events(self, event_type: type[Message]) -> list[Any]:
        """Every event of a type in the wallet service's outbox, oldest first."""
        async with self.wallet_app.database.transaction() as session:
            rows = await session.execute(
                select(outbox.c.payload)
                .where(outbox.c.event_type == event_type.DESCRIPTOR.full_name)
                .order_by(outbox.c.id)
            )
            return [event_type.FromString(row.payload) for row in rows]

    async def fund(self, user_id: str, amount: int, asset: str = NATIVE) -> str:
        """Opens the user's MAIN account and credits it from custody in the ledger; its ledger id."""
        account = (
            await self.accounts.OpenAccount(
                account_service.OpenAccountRequest(
                    request_id=rid("open"),
                    user_id=user_id,
                    asset=asset,
                    kind=account_resources.ACCOUNT_KIND_MAIN,
                )
            )
        ).account
        if amount:
            entry_id = f"test.{uuid.uuid4().hex}"
            await self.ledger.CreateJournalEntry(
                ledger_service.CreateJournalEntryRequest(
                    request_id=entry_id,
                    entry=ledger_resources.JournalEntry(
                        entry_id=entry_id,
                        kind=ledger_resources.ENTRY_KIND_STANDARD,
                        category="deposit.credit",
                        postings=[
                            ledger_resources.Posting(
                                account_id=self.custody_account_id,
                                side=ledger_resources.POSTING_SIDE_DEBIT,
                                asset=asset,
                                amount=str(amount),
                            ),
                            ledger_resources.Posting(
                                account_id=account.ledger_account_id,
                                side=ledger_resources.POSTING_SIDE_CREDIT,
                                asset=asset,
                                amount=str(amount),
                            ),
                        ],
                    ),
                )
            )
        return account.ledger_account_id


async def _start(app: ServiceApp, build: Any, name: str, started: list[ServiceApp]) -> ServiceApp:
    build(app)
    started.insert(0, app)
    await app.start(migrations=migrations(name), migrate_database=True)
    return app


async def start_mesh(database_url: str, tmp_path: Path, identity_url: str, **wallet_overrides: Any) -> Mesh:
    """Starts every peer, then the wallet service; stops whatever started if a step fails."""
    services = catalog.default()
    bus = InProcessBus()
    jwt = TokenIssuer(tmp_path / "jwt")
    pki = tmp_path / "pki"
    started: list[ServiceApp] = []
    channels: list[grpc.aio.Channel] = []
    identity = await start_identity(identity_url, tmp_path)
    try:

        def kit(name: str, **values: Any) -> dict[str, Any]:
            return {
                # A free port, not the catalog's (0 means the catalog's to the kit).
                "port": free_port(),
                "tls": False,
                "pki_dir": pki,
                "data_dir": tmp_path / f"{name}-data",
                "database_url": own_database(database_url, tmp_path, name),
                "jwt_public_keys_file": jwt.public_key_file,
                **values,
            }

        ledger = ServiceApp(
            services.service("ledger"), KitSettings(**kit("ledger")), catalog=services, bus=bus
        )
        await _start(ledger, ledger_main.build, "ledger", started)
        ledger_endpoint = f"127.0.0.1:{ledger.port}"
        account = ServiceApp(
            services.service("account"),
            AccountSettings(**kit("account", endpoints={"ledger": ledger_endpoint}, assets={NATIVE: 18})),
            catalog=services,
            bus=bus,
        )
        await _start(account, account_main.build, "account", started)
        gateway = ServiceApp(
            services.service("chain-gateway"),
            ChainGatewaySettings(**kit("chain-gateway")),
            catalog=services,
            bus=InProcessBus(),
        )
        await _start(gateway, gateway_main.build, "chain_gateway", started)
        gateway_endpoint = f"127.0.0.1:{gateway.port}"
        custody = ServiceApp(
            services.service("custody"),
            CustodySettings(
                **kit(
                    "custody",
                    endpoints={"chain-gateway": gateway_endpoint},
                    chains={CHAIN: ChainAssets(chain_id=EMBEDDED_CHAIN_ID, native_asset=NATIVE)},
                    movement_interval_s=3600.0,
                    rebalance_interval_s=3600.0,
                )
            ),
            catalog=services,
            bus=InProcessBus(),
        )
        await _start(custody, custody_main.build, "custody", started)
        user_endpoint = f"127.0.0.1:{identity.user_app.port}"
        wallet = ServiceApp(
            services.service("wallet"),
            WalletSettings(
                **kit(
                    "wallet",
                    endpoints={
                        "ledger": ledger_endpoint,
                        "account": f"127.0.0.1:{account.port}",
                        "chain-gateway": gateway_endpoint,
                        "custody": f"127.0.0.1:{custody.port}",
                        "user": user_endpoint,
                    },
                    **wallet_overrides,
                )
            ),
            catalog=services,
            bus=bus,
        )
        await _start(wallet, wallet_main.build, "wallet", started)
        for app in (wallet, ledger, account, custody, gateway):
            channels.append(channel(f"127.0.0.1:{app.port}"))
        custody_stub = custody_grpc.CustodyServiceStub(channels[3])
        await custody_stub.CreateCustodyWallet(
            custody_service.CreateCustodyWalletRequest(
                request_id=rid("root"),
                name="deposit-root",
                kind=custody_resources.WALLET_KIND_DEPOSIT_ROOT,
                chain_family=custody_resources.CHAIN_FAMILY_EVM,
                chains=[CHAIN],
                step_up_token=STEP_UP,
            ),
            metadata=jwt.metadata("admin-1", "admin"),
        )
        ledger_stub = ledger_grpc.LedgerServiceStub(channels[1])
        custody_account = await ledger_stub.CreateLedgerAccount(
            ledger_service.CreateLedgerAccountRequest(
                request_id="custody-account",
                account=ledger_resources.LedgerAccount(
                    code=CUSTODY_CODE,
                    type=ledger_resources.ACCOUNT_TYPE_ASSET,
                    asset=NATIVE,
                    constraint=ledger_resources.BALANCE_CONSTRAINT_NONE,
                ),
            )
        )
    except BaseException:
        for connection in channels:
            await connection.close()
        for app in started:
            await app.stop(0)
        await identity.stop()
        raise
    return Mesh(
        apps=started,
        channels=channels,
        identity=identity,
        jwt=jwt,
        wallet_app=wallet,
        wallets=service_grpc.WalletServiceStub(channels[0]),
        ledger=ledger_stub,
        accounts=account_grpc.AccountServiceStub(channels[2]),
        custody=custody_stub,
        gateway=chain_grpc.ChainGatewayServiceStub(channels[4]),
        bus=bus,
        custody_account_id=custody_account.account.account_id,
    )


@pytest.fixture
async def mesh(
    database_url: str, tmp_path: Path, identity_templates: Any, request: pytest.FixtureRequest
) -> AsyncIterator[Mesh]:
    """The wallet service and its peers on a fresh database of each backend."""
    postgres = None if database_url.startswith("sqlite") else request.getfixturevalue("postgres_server")
    identity_url = await identity_templates.prepare(database_url, tmp_path, postgres)
    running = await start_mesh(database_url, tmp_path, identity_url)
    yield running
    await running.stop()
