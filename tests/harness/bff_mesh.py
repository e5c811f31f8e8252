"""The services behind the BFFs, real and served by the kit (no TLS) in this process: user and
auth, kyc, ledger and account (sharing a bus, so that the account's cache follows the ledger),
notification, and wallet, deposit and withdraw served as `make run` serves a service that does
not exist yet (the generated base servicer: UNIMPLEMENTED); a real withdraw service (approvals,
no execution: no custody or chain) is started on first use by the tests that need one. A stalling
peer (accepts every call,
never answers) stands in for a slow downstream; a closed port for a downstream that is down or
not deployed at all (UNAVAILABLE).

Every service verifies the auth service's real tokens. A BFF is started per test with the
endpoints it should see (`start_bff`), so that one test can point a section at a stalled or
missing peer while the rest of the mesh is shared by the module."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.account.v1 import account_service_pb2_grpc as account_grpc
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.auth.v1 import auth_service_pb2 as auth_service
from finmesh.common.v1 import money_pb2
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as ledger_grpc
from finmesh.notification.v1 import notification_service_pb2 as notification_service
from finmesh.notification.v1 import notification_service_pb2_grpc as notification_grpc
from finmesh.withdraw.v1 import withdraw_resources_pb2 as withdraw_resources
from finmesh.withdraw.v1 import withdraw_service_pb2 as withdraw_service
from finmesh.withdraw.v1 import withdraw_service_pb2_grpc as withdraw_grpc

from svc.account import main as account_main
from svc.account.config import AccountSettings
from svc.kit import catalog
from svc.kit.bus import InProcessBus
from svc.kit.client import channel
from svc.kit.config import KitSettings
from svc.kit.server import ServiceApp, unimplemented_builder
from svc.kyc import main as kyc_main
from svc.kyc.config import KycSettings
from svc.ledger import main as ledger_main
from svc.notification import main as notification_main
from svc.notification.config import NotificationSettings
from svc.withdraw import main as withdraw_main
from svc.withdraw.config import AssetPolicy, LevelLimits, WithdrawSettings
from tests.harness.calls import eventually
from tests.harness.identity import (
    CHECKER_EMAIL,
    CHECKER_REGISTRATION,
    Identity,
    bearer,
    free_port,
    rid,
    start_identity,
)

ROOT = Path(__file__).resolve().parents[2]


def migrations(service: str) -> Path:
    return ROOT / "svc" / service / "migrations" / "versions"


# Services that do not exist yet, served as `make run` serves them: every RPC UNIMPLEMENTED.
PLACEHOLDERS = ("wallet", "deposit", "withdraw")
IN_APP = 4
TRANSACTIONS = 3
CUSTODY_CODE = "assets:custody:hot:bff-tests:{asset}"
ETH = "ethereum:ETH"
ETHER = 10**18
# The real withdraw service's ETH policy: withdrawals of 1 ETH and more wait for 2 approvers.
WITHDRAWAL_FEE = 10**15
AUTO_APPROVAL = ETHER
REQUIRED_APPROVALS = 2
WITHDRAW_POLICY = AssetPolicy(
    fee=WITHDRAWAL_FEE,
    min_amount=10**12,
    limits={1: LevelLimits(max_amount=10 * ETHER, daily_limit=20 * ETHER)},
    auto_approval_threshold=AUTO_APPROVAL,
    review_amount=50 * ETHER,
    daily_review_amount=50 * ETHER,
)


@dataclass
class Person:
    """A registered user with TOTP enabled (recovery codes for step-ups) and a real access token."""

    user_id: str
    email: str
    access: str
    recovery_codes: list[str]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.access)


class StallingPeer:
    """A gRPC server that accepts every call and never answers (until stopped)."""

    def __init__(self) -> None:
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self.port = 0
        self._release = asyncio.Event()

        async def stall(_request: bytes, _context: Any) -> bytes:
            await self._release.wait()
            return b""

        class Everything(grpc.GenericRpcHandler):
            def service(self, _details: Any) -> grpc.RpcMethodHandler:
                return grpc.unary_unary_rpc_method_handler(stall)

        self.server.add_generic_rpc_handlers((Everything(),))

    async def start(self) -> None:
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self._release.set()
        await self.server.stop(0)


@dataclass
class Downstream:
    """The running services behind the BFFs, stubs to seed them, and where they listen."""

    identity: Identity
    apps: dict[str, ServiceApp]
    keys_file: Path
    stall: StallingPeer
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    custody: dict[str, str] = field(default_factory=dict)
    database_url: str = ""
    tmp: Path | None = None
    withdraw_app: ServiceApp | None = None
    _checker: Person | None = None

    @property
    def endpoints(self) -> dict[str, str]:
        """Where each running service listens (wallet, deposit, withdraw: their placeholders)."""
        found = {"user": self.identity.user_app.port, "auth": self.identity.auth_app.port}
        found.update({name: app.port for name, app in self.apps.items()})
        return {name: f"127.0.0.1:{port}" for name, port in found.items()}

    def _stub(self, service: str, stub_type: Callable[[grpc.aio.Channel], Any]) -> Any:
        connection = channel(f"127.0.0.1:{self.apps[service].port}")
        self.channels.append(connection)
        return stub_type(connection)

    @property
    def ledger(self) -> ledger_grpc.LedgerServiceStub:
        return self._stub("ledger", ledger_grpc.LedgerServiceStub)  # type: ignore[no-any-return]

    @property
    def accounts(self) -> account_grpc.AccountServiceStub:
        return self._stub("account", account_grpc.AccountServiceStub)  # type: ignore[no-any-return]

    @property
    def notifications(self) -> notification_grpc.NotificationServiceStub:
        return self._stub("notification", notification_grpc.NotificationServiceStub)  # type: ignore[no-any-return]

    async def deposit(self, user_id: str, asset: str, amount: int) -> Any:
        """Opens the user's MAIN account of `asset` (as a service) and credits it from custody at
        the ledger, as a credited deposit would; returns the account once its balance shows it."""
        accounts = self.accounts
        opened = await accounts.OpenAccount(
            account_service.OpenAccountRequest(
                request_id=f"open-{uuid.uuid4().hex}", user_id=user_id, asset=asset, kind=1
            )
        )
        account = opened.account
        ledger = self.ledger
        if asset not in self.custody:
            created = await ledger.CreateLedgerAccount(
                ledger_service.CreateLedgerAccountRequest(
                    request_id=f"custody-{asset}",
                    account=ledger_resources.LedgerAccount(
                        code=CUSTODY_CODE.format(asset=asset), type=1, asset=asset, constraint=1
                    ),
                )
            )
            self.custody[asset] = created.account.account_id
        entry_id = f"test.{uuid.uuid4().hex}"
        posted = await ledger.CreateJournalEntry(
            ledger_service.CreateJournalEntryRequest(
                request_id=entry_id,
                entry=ledger_resources.JournalEntry(
                    entry_id=entry_id,
                    kind=1,
                    category="deposit.credit",
                    description=f"Deposit of {asset}",
                    postings=[
                        ledger_resources.Posting(
                            account_id=self.custody[asset], side=1, asset=asset, amount=str(amount)
                        ),
                        ledger_resources.Posting(
                            account_id=account.ledger_account_id, side=2, asset=asset, amount=str(amount)
                        ),
                    ],
                ),
            )
        )
        balance = await accounts.GetAccountBalance(
            account_service.GetAccountBalanceRequest(
                account_id=account.account_id, min_sequence=posted.entry.sequence
            )
        )
        return balance

    async def notify(self, user_id: str, amount: str) -> None:
        """An in-app message to the user, sent as a service sends it."""
        await self.notifications.SendNotification(
            notification_service.SendNotificationRequest(
                request_id=f"send-{uuid.uuid4().hex}",
                user_id=user_id,
                event_key="deposit.credited",
                category=TRANSACTIONS,  # type: ignore[arg-type]
                variables={
                    "amount": amount,
                    "asset": "ethereum:ETH",
                    "tx_hash": "0xabc",
                    "deposit_id": "d-1",
                },
                channels=[IN_APP],  # type: ignore[list-item]
            )
        )

    async def inbox_holds(self, metadata: tuple[tuple[str, str], ...], count: int) -> None:
        """Waits until the caller's inbox holds `count` messages (delivery runs in the background)."""
        stub = self.notifications

        async def delivered() -> bool:
            listed = await stub.ListInboxMessages(
                notification_service.ListInboxMessagesRequest(page_size=100), metadata=metadata
            )
            return len(listed.inbox_messages) >= count

        await eventually(delivered)

    async def withdraw_endpoint(self) -> str:
        """Where the real withdraw service listens (started on first use; it stays up with the
        mesh): ETH withdrawals held at the ledger and waiting for approvers, never executed."""
        if self.withdraw_app is None:
            assert self.tmp is not None
            services = catalog.default()
            endpoints = {
                name: address for name, address in self.endpoints.items() if name not in PLACEHOLDERS
            }
            settings = WithdrawSettings(
                tls=False,
                pki_dir=self.tmp / "pki",
                jwt_public_keys_file=self.keys_file,
                port=free_port(),
                data_dir=self.tmp / "withdraw-data",
                database_url=_database(self.database_url, self.tmp, "withdraw"),
                endpoints=endpoints,
                withdrawal_assets={ETH: WITHDRAW_POLICY},
                custody_account_code=CUSTODY_CODE,
                address_cool_down_s=0,
                required_approvals=REQUIRED_APPROVALS,
                execution_enabled=False,
            )
            app = ServiceApp(services.service("withdraw"), settings, catalog=services, bus=InProcessBus())
            withdraw_main.build(app)
            try:
                await app.start(migrations=migrations("withdraw"), migrate_database=True)
            except BaseException:
                await app.stop(0)
                raise
            self.withdraw_app = app
        return f"127.0.0.1:{self.withdraw_app.port}"

    async def withdrawals(self) -> withdraw_grpc.WithdrawServiceAsyncStub:
        connection = channel(await self.withdraw_endpoint())
        self.channels.append(connection)
        return withdraw_grpc.WithdrawServiceStub(connection)

    async def person(self) -> Person:
        """A registered user with TOTP enabled."""
        email = f"p{uuid.uuid4().hex[:10]}@example.com"
        registered = await self.identity.register(email=email)
        tokens = await self.identity.tokens(email)
        _, codes = await self.identity.enable_totp(tokens.access_token)
        return Person(registered.user_id, email, tokens.access_token, codes)

    async def step_up(self, person: Person, purpose: int) -> str:
        verified = await self.identity.auth.VerifyStepUp(
            auth_service.VerifyStepUpRequest(
                request_id=rid("step-up"),
                purpose=purpose,  # type: ignore[arg-type]
                recovery_code=person.recovery_codes.pop(),
            ),
            metadata=person.metadata,
        )
        return str(verified.step_up_token)

    async def staff_member(self, role: int) -> Person:
        """A user granted `role` by maker-checker at auth (the bootstrap admin the maker, the
        bootstrap checker the checker), logged in again so that the role is in the token."""
        person = await self.person()
        maker = await self.identity.admin_token()
        created = await self.identity.auth.CreateRoleAssignment(
            auth_service.CreateRoleAssignmentRequest(
                request_id=rid("grant"),
                user_id=person.user_id,
                role=role,  # type: ignore[arg-type]
                justification="bff tests",
            ),
            metadata=bearer(maker),
        )
        if self._checker is None:
            access = await self.identity.admin_token(CHECKER_EMAIL, CHECKER_REGISTRATION)
            _, codes = await self.identity.enable_totp(access)
            self._checker = Person("", CHECKER_EMAIL, access, codes)
        await self.identity.auth.ApproveRoleAssignment(
            auth_service.ApproveRoleAssignmentRequest(
                request_id=rid("grant-ok"),
                role_assignment_id=created.role_assignment.role_assignment_id,
                step_up_token=await self.step_up(
                    self._checker, auth_resources.STEP_UP_PURPOSE_STAFF_APPROVAL
                ),
            ),
            metadata=self._checker.metadata,
        )
        challenge = (await self.identity.login(person.email)).challenge.challenge_token
        completed = await self.identity.auth.CompleteLogin(
            auth_service.CompleteLoginRequest(
                request_id=rid("login-2fa"),
                challenge_token=challenge,
                recovery_code=person.recovery_codes.pop(),
            )
        )
        person.access = completed.tokens.access_token
        return person

    async def whitelist(
        self, person: Person, address: str, label: str
    ) -> withdraw_resources.WithdrawalAddress:
        """An ACTIVE whitelist entry of the person's (no cool-down on this mesh)."""
        stub = await self.withdrawals()
        created = await stub.CreateWithdrawalAddress(
            withdraw_service.CreateWithdrawalAddressRequest(
                request_id=rid("address"),
                address={"chain": "ethereum", "address": address},
                label=label,
                step_up_token=await self.step_up(
                    person, auth_resources.STEP_UP_PURPOSE_WITHDRAWAL_ADDRESS_ADD
                ),
            ),
            metadata=person.metadata,
        )
        return created.address

    async def withdraw(self, person: Person, address_id: str, amount: int) -> withdraw_resources.Withdrawal:
        """A withdrawal of `amount` wei of ETH requested by the person, once it has left the risk
        check (AWAITING_APPROVAL from AUTO_APPROVAL on)."""
        stub = await self.withdrawals()
        created = await stub.CreateWithdrawal(
            withdraw_service.CreateWithdrawalRequest(
                request_id=rid("withdraw"),
                amount=money_pb2.Money(asset=ETH, amount=str(amount)),
                destination_address_id=address_id,
                step_up_token=await self.step_up(person, auth_resources.STEP_UP_PURPOSE_WITHDRAWAL),
            ),
            metadata=person.metadata,
        )
        return created.withdrawal

    async def stop(self) -> None:
        for connection in self.channels:
            await connection.close()
        await self.stall.stop()
        if self.withdraw_app is not None:
            await self.withdraw_app.stop(0)
        # The account before the ledger it calls.
        for name in (*PLACEHOLDERS, "notification", "kyc", "account", "ledger"):
            if name in self.apps:
                await self.apps[name].stop(0)
        await self.identity.stop()


def _database(database_url: str, tmp: Path, name: str) -> str:
    return f"sqlite+aiosqlite:///{tmp / name}.db" if database_url.startswith("sqlite") else database_url


async def start_downstream(database_url: str, tmp: Path) -> Downstream:
    """Starts every downstream service; stops whatever started if a later step fails."""
    services = catalog.default()
    identity = await start_identity(database_url, tmp)
    keys_file = tmp / "auth-public-keys.pem"
    identity.export_public_keys(keys_file)
    stall = StallingPeer()
    running = Downstream(identity, {}, keys_file, stall, database_url=database_url, tmp=tmp)
    common: dict[str, Any] = {"tls": False, "pki_dir": tmp / "pki", "jwt_public_keys_file": keys_file}
    user_endpoint = {"user": f"127.0.0.1:{identity.user_app.port}"}
    try:
        await stall.start()
        accounting = InProcessBus()
        ledger = ServiceApp(
            services.service("ledger"),
            KitSettings(**common, port=free_port(), database_url=_database(database_url, tmp, "ledger")),
            catalog=services,
            bus=accounting,
        )
        ledger_main.build(ledger)
        running.apps["ledger"] = ledger
        await ledger.start(migrations=migrations("ledger"), migrate_database=True)
        account = ServiceApp(
            services.service("account"),
            AccountSettings(
                **common,
                port=free_port(),
                database_url=_database(database_url, tmp, "account"),
                endpoints={"ledger": f"127.0.0.1:{ledger.port}", **user_endpoint},
            ),
            catalog=services,
            bus=accounting,
        )
        account_main.build(account)
        running.apps["account"] = account
        await account.start(migrations=migrations("account"), migrate_database=True)
        kyc = ServiceApp(
            services.service("kyc"),
            KycSettings(
                **common,
                port=free_port(),
                data_dir=tmp / "kyc-data",
                database_url=_database(database_url, tmp, "kyc"),
                endpoints={**user_endpoint, "auth": f"127.0.0.1:{identity.auth_app.port}"},
            ),
            catalog=services,
            bus=InProcessBus(),
        )
        kyc_main.build(kyc)
        running.apps["kyc"] = kyc
        await kyc.start(migrations=migrations("kyc"), migrate_database=True)
        notification = ServiceApp(
            services.service("notification"),
            NotificationSettings(
                **common,
                port=free_port(),
                data_dir=tmp / "notification-data",
                database_url=_database(database_url, tmp, "notification"),
                endpoints=user_endpoint,
                worker_poll_interval_ms=20,
            ),
            catalog=services,
            bus=InProcessBus(),
        )
        notification_main.build(notification)
        running.apps["notification"] = notification
        await notification.start(migrations=migrations("notification"), migrate_database=True)
        for name in PLACEHOLDERS:
            placeholder = ServiceApp(
                services.service(name), KitSettings(**common, port=free_port()), catalog=services
            )
            unimplemented_builder(services.service(name))(placeholder)
            running.apps[name] = placeholder
            await placeholder.start()
    except BaseException:
        await running.stop()
        raise
    return running


async def start_bff(
    name: str,
    build: Callable[[ServiceApp], None],
    settings_type: type[KitSettings],
    downstream: Downstream,
    tmp: Path,
    **overrides: Any,
) -> tuple[ServiceApp, grpc.aio.Channel]:
    """A BFF served by the kit, seeing the downstream endpoints (with `endpoints` overrides)."""
    services = catalog.default()
    endpoints = {**downstream.endpoints, **overrides.pop("endpoints", {})}
    settings = settings_type(
        port=free_port(),
        tls=False,
        pki_dir=tmp / "pki",
        jwt_public_keys_file=downstream.keys_file,
        endpoints=endpoints,
        **overrides,
    )
    app = ServiceApp(services.service(name), settings, catalog=services)
    build(app)
    try:
        await app.start()
    except BaseException:
        await app.stop(0)
        raise
    return app, channel(f"127.0.0.1:{app.port}")


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="module", params=BACKENDS)
async def downstream(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Downstream]:
    """The services behind the BFFs on each backend, shared by the tests of a module (each test
    registers its own users)."""
    tmp = tmp_path_factory.mktemp(f"bff-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'service.db'}"
    else:
        url = str(request.getfixturevalue("postgres_server").create_database(f"t_{uuid.uuid4().hex[:16]}"))
    running = await start_downstream(url, tmp)
    yield running
    await running.stop()


@dataclass
class Caller:
    """A registered end user with a real access token from the auth service."""

    user_id: str
    email: str
    metadata: tuple[tuple[str, str], ...]


async def register_caller(downstream: Downstream, display_name: str = "Erika") -> Caller:
    registered = await downstream.identity.register(
        email=f"b{uuid.uuid4().hex[:10]}@example.com", profile={"display_name": display_name}
    )
    tokens = await downstream.identity.tokens(registered.email)
    return Caller(registered.user_id, registered.email, bearer(tokens.access_token))


class BffStarter:
    """Starts BFFs of one kind for a test (settings as keyword overrides, `endpoints` merged over
    the mesh's) and returns a stub to each; `close()` stops them all."""

    def __init__(
        self,
        name: str,
        build: Callable[[ServiceApp], None],
        settings_type: type[KitSettings],
        stub_type: Callable[[grpc.aio.Channel], Any],
        downstream: Downstream,
        tmp: Path,
    ) -> None:
        self._args = (name, build, settings_type)
        self._stub_type = stub_type
        self._downstream = downstream
        self._tmp = tmp
        self._started: list[tuple[ServiceApp, grpc.aio.Channel]] = []

    async def __call__(self, **overrides: Any) -> Any:
        name, build, settings_type = self._args
        started = await start_bff(name, build, settings_type, self._downstream, self._tmp, **overrides)
        self._started.append(started)
        return self._stub_type(started[1])

    async def close(self) -> None:
        for app, connection in self._started:
            await connection.close()
            await app.stop(0)
