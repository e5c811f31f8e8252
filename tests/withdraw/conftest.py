"""The withdraw service with every real peer it calls, served by the kit (no TLS) in this process
on each backend: user and auth (real users, TOTP, step-up tokens, the approver role granted by
maker-checker), ledger and account, the chain gateway on a real Hardhat node, and custody with a
SoftHSM2 token whose hot wallet pays the withdrawals; custody trusts the withdraw service's
Ed25519 approval key."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.account.v1 import account_service_pb2_grpc as account_grpc
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.common.v1 import enums_pb2, money_pb2
from finmesh.custody.v1 import custody_service_pb2 as custody_service
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as ledger_grpc
from finmesh.withdraw.v1 import withdraw_resources_pb2 as resources
from finmesh.withdraw.v1 import withdraw_service_pb2 as service
from finmesh.withdraw.v1 import withdraw_service_pb2_grpc as service_grpc
from google.protobuf.message import Message
from sqlalchemy import select
from web3 import AsyncHTTPProvider, AsyncWeb3

from svc.account import main as account_main
from svc.account.config import AccountSettings
from svc.custody.config import ChainAssets
from svc.kit import catalog
from svc.kit.bus import InProcessBus
from svc.kit.client import channel
from svc.kit.config import KitSettings
from svc.kit.server import ServiceApp
from svc.kit.tables import outbox
from svc.kyc import main as kyc_main
from svc.kyc.config import KycSettings
from svc.ledger import main as ledger_main
from svc.withdraw import main as withdraw_main
from svc.withdraw.config import AssetPolicy, LevelLimits, WithdrawSettings
from svc.withdraw.server import WithdrawServicer
from tests.chain_gateway import conftest as gateway_fixtures
from tests.chain_gateway.conftest import CHAIN, HARDHAT_CHAIN_ID, Gateway, Token, hardhat_chain
from tests.custody.conftest import WITHDRAW_KEY_ID, Custody, start_custody
from tests.custody.test_end_to_end import gateway_on_free_port
from tests.harness.hardhat import HardhatNode
from tests.harness.identity import (
    CHECKER_EMAIL,
    CHECKER_REGISTRATION,
    Identity,
    bearer,
    rid,
    start_identity,
)
from tests.harness.process import free_port
from tests.harness.softhsm import SoftHsmToken

# The chain gateway's and custody's session fixtures: the Hardhat node, its token, SoftHSM2.
hardhat_node = gateway_fixtures.hardhat_node
token = gateway_fixtures.token
if hasattr(gateway_fixtures, "token_artifact"):  # the token's compiled artifact, where it is a fixture
    token_artifact = gateway_fixtures.token_artifact

ROOT = Path(__file__).resolve().parents[2]
ETH = f"{CHAIN}:ETH"
ETHER = 10**18
GWEI = 10**9
FEE = 10**15  # 0.001 ETH per withdrawal
AUTO_APPROVAL = 2 * ETHER
CUSTODY_CODE = f"assets:custody:hot:{ETH}"
FEE_CODE = f"revenue:fees:withdrawal:{ETH}"
GAS_CODE = f"expenses:gas:withdrawal:{ETH}"
HOT_FUNDS = 50 * ETHER
WAIT_S = 90.0


def migrations(name: str) -> Path:
    return ROOT / "svc" / name / "migrations" / "versions"


def _database(database_url: str, tmp: Path, name: str) -> str:
    return f"sqlite+aiosqlite:///{tmp / name}.db" if database_url.startswith("sqlite") else database_url


def policy(**overrides: Any) -> AssetPolicy:
    values: dict[str, Any] = {
        "fee": FEE,
        "min_amount": 10**12,
        "limits": {1: LevelLimits(max_amount=10 * ETHER, daily_limit=12 * ETHER)},
        "auto_approval_threshold": AUTO_APPROVAL,
        "review_amount": 8 * ETHER,
        "daily_review_amount": 11 * ETHER,
        "new_address_review_amount": 9 * ETHER,
    }
    values.update(overrides)
    return AssetPolicy(**values)


@dataclass
class User:
    """A real user: an access token, TOTP enabled and recovery codes for step-ups."""

    user_id: str
    email: str
    access: str
    recovery_codes: list[str]
    account_id: str = ""
    ledger_account_id: str = ""

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.access)


@dataclass
class Mesh:
    identity: Identity
    apps: dict[str, ServiceApp]
    gateway: Gateway
    custody: Custody
    w3: AsyncWeb3[Any]
    hot_wallet_id: str
    hot_address: str
    settings: WithdrawSettings
    tmp: Path
    database_url: str
    withdraw_app: ServiceApp | None = None
    servicer: WithdrawServicer | None = None
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    custody_account_id: str = ""

    def _channel(self, port: int) -> grpc.aio.Channel:
        connection = channel(f"127.0.0.1:{port}")
        self.channels.append(connection)
        return connection

    @property
    def stub(self) -> service_grpc.WithdrawServiceAsyncStub:
        assert self.withdraw_app is not None
        return service_grpc.WithdrawServiceStub(self._channel(self.withdraw_app.port))

    @property
    def ledger(self) -> ledger_grpc.LedgerServiceAsyncStub:
        return ledger_grpc.LedgerServiceStub(self._channel(self.apps["ledger"].port))

    @property
    def accounts(self) -> account_grpc.AccountServiceAsyncStub:
        return account_grpc.AccountServiceStub(self._channel(self.apps["account"].port))

    async def start_withdraw(self, **overrides: Any) -> WithdrawServicer:
        """The withdraw service on this mesh (its database survives a stop and a new start)."""
        services = catalog.default()
        settings = self.settings.model_copy(update={"port": free_port(), **overrides})
        app = ServiceApp(services.service("withdraw"), settings, catalog=services, bus=InProcessBus())
        servicer = withdraw_main.wire(app)
        try:
            await app.start(migrations=migrations("withdraw"), migrate_database=True)
        except BaseException:
            await app.stop(0)
            raise
        self.withdraw_app, self.servicer = app, servicer
        return servicer

    async def stop_withdraw(self) -> None:
        if self.withdraw_app is not None:
            await self.withdraw_app.stop(0)
            self.withdraw_app = None

    async def user(self, deposit: int = 0) -> User:
        """A registered user with TOTP, and `deposit` wei credited to a MAIN account from custody."""
        email = f"u{uuid.uuid4().hex[:10]}@example.com"
        registered = await self.identity.register(email=email)
        tokens = await self.identity.tokens(email)
        _, codes = await self.identity.enable_totp(tokens.access_token)
        person = User(registered.user_id, email, tokens.access_token, codes)
        opened = await self.accounts.OpenAccount(
            account_service.OpenAccountRequest(
                request_id=rid("open"), user_id=person.user_id, asset=ETH, kind=1
            )
        )
        person.account_id = opened.account.account_id
        person.ledger_account_id = opened.account.ledger_account_id
        if deposit:
            await self.credit(person, deposit)
        return person

    async def credit(self, person: User, amount: int) -> None:
        """A credited deposit: custody's asset account debited, the user's liability credited."""
        entry_id = f"test.deposit.{uuid.uuid4().hex}"
        await self.ledger.CreateJournalEntry(
            ledger_service.CreateJournalEntryRequest(
                request_id=entry_id,
                entry=ledger_resources.JournalEntry(
                    entry_id=entry_id,
                    kind=1,
                    category="deposit.credit",
                    postings=[
                        ledger_resources.Posting(
                            account_code=CUSTODY_CODE, side=1, asset=ETH, amount=str(amount)
                        ),
                        ledger_resources.Posting(
                            account_id=person.ledger_account_id, side=2, asset=ETH, amount=str(amount)
                        ),
                    ],
                ),
            )
        )

    async def step_up(self, person: User, purpose: int) -> str:
        verified = await self.identity.auth.VerifyStepUp(
            auth.VerifyStepUpRequest(
                request_id=rid("step-up"),
                purpose=purpose,  # type: ignore[arg-type]
                recovery_code=person.recovery_codes.pop(),
            ),
            metadata=person.metadata,
        )
        return verified.step_up_token

    async def whitelist(
        self, person: User, address: str, label: str = "cold storage"
    ) -> resources.WithdrawalAddress:
        created = await self.stub.CreateWithdrawalAddress(
            service.CreateWithdrawalAddressRequest(
                request_id=rid("address"),
                address={"chain": CHAIN, "address": address},
                label=label,
                step_up_token=await self.step_up(
                    person, auth_resources.STEP_UP_PURPOSE_WITHDRAWAL_ADDRESS_ADD
                ),
            ),
            metadata=person.metadata,
        )
        return created.address

    async def request(
        self, person: User, address_id: str, amount: int, request_id: str = "", token: str = ""
    ) -> service.CreateWithdrawalRequest:
        return service.CreateWithdrawalRequest(
            request_id=request_id or rid("withdraw"),
            amount=money_pb2.Money(asset=ETH, amount=str(amount)),
            destination_address_id=address_id,
            step_up_token=token or await self.step_up(person, auth_resources.STEP_UP_PURPOSE_WITHDRAWAL),
        )

    async def withdraw(self, person: User, address_id: str, amount: int) -> resources.Withdrawal:
        request = await self.request(person, address_id, amount)
        return (await self.stub.CreateWithdrawal(request, metadata=person.metadata)).withdrawal

    async def staff_view(self, withdrawal_id: str) -> resources.Withdrawal:
        got = await self.stub.AdminGetWithdrawal(
            service.AdminGetWithdrawalRequest(withdrawal_id=withdrawal_id)
        )
        return got.withdrawal

    async def until_state(self, withdrawal_id: str, *states: int, mine: bool = True) -> resources.Withdrawal:
        """Mines a block now and then (unless not to) until the withdrawal reaches one of `states`."""
        async with asyncio.timeout(WAIT_S):
            while True:
                current = await self.staff_view(withdrawal_id)
                if current.state in states:
                    return current
                if mine:
                    await self.w3.provider.make_request("hardhat_mine", ["0x1"])  # type: ignore[arg-type]
                await asyncio.sleep(0.2)

    async def balance(self, code_or_id: str) -> int:
        """The posted balance of a ledger account (by code or id), in its normal direction."""
        ledger = self.ledger
        account_id = code_or_id
        if ":" in code_or_id:
            looked = await ledger.LookupLedgerAccount(
                ledger_service.LookupLedgerAccountRequest(code=code_or_id)
            )
            account_id = looked.account.account_id
        got = await ledger.GetLedgerBalance(ledger_service.GetLedgerBalanceRequest(account_id=account_id))
        return int(got.balance.balance)

    async def available(self, person: User) -> int:
        """What the user may spend, as the ledger has it now (the account service's cache follows
        the ledger's events a moment later)."""
        got = await self.ledger.GetLedgerBalance(
            ledger_service.GetLedgerBalanceRequest(account_id=person.ledger_account_id)
        )
        return int(got.balance.available)

    async def approver(self, role: int = enums_pb2.ROLE_APPROVER) -> User:
        """A user granted `role` by maker-checker at auth, logged in again (the role in the token)."""
        person = await self.user()
        maker = await self.identity.admin_token()
        created = await self.identity.auth.CreateRoleAssignment(
            auth.CreateRoleAssignmentRequest(
                request_id=rid("grant"),
                user_id=person.user_id,
                role=role,
                justification="withdrawals",  # type: ignore[arg-type]
            ),
            metadata=bearer(maker),
        )
        checker = await self._checker()
        await self.identity.auth.ApproveRoleAssignment(
            auth.ApproveRoleAssignmentRequest(
                request_id=rid("grant-ok"),
                role_assignment_id=created.role_assignment.role_assignment_id,
                step_up_token=await self.step_up(checker, auth_resources.STEP_UP_PURPOSE_STAFF_APPROVAL),
            ),
            metadata=checker.metadata,
        )
        challenge = (await self.identity.login(person.email)).challenge.challenge_token
        completed = await self.identity.auth.CompleteLogin(
            auth.CompleteLoginRequest(
                request_id=rid("login-2fa"),
                challenge_token=challenge,
                recovery_code=person.recovery_codes.pop(),
            )
        )
        person.access = completed.tokens.access_token
        return person

    _checker_user: User | None = None

    async def _checker(self) -> User:
        if self._checker_user is None:
            access = await self.identity.admin_token(CHECKER_EMAIL, CHECKER_REGISTRATION)
            _, codes = await self.identity.enable_totp(access)
            self._checker_user = User("", CHECKER_EMAIL, access, codes)
        return self._checker_user

    async def events(self, event_type: type[Message]) -> list[Any]:
        assert self.withdraw_app is not None
        async with self.withdraw_app.database.transaction() as session:
            rows = await session.execute(
                select(outbox.c.payload)
                .where(outbox.c.event_type == event_type.DESCRIPTOR.full_name)
                .order_by(outbox.c.id)
            )
            return [event_type.FromString(row.payload) for row in rows]

    async def signatures(self) -> list[Any]:
        listed = await self.custody.stub.ListSignatureRecords(
            custody_service.ListSignatureRecordsRequest(wallet_id=self.hot_wallet_id),
            metadata=self.custody.staff("auditor-1", "auditor"),
        )
        return list(listed.records)

    async def start_kyc(self, sanctioned: list[str]) -> Path:
        """The KYC service with a sanctions list naming `sanctioned` (returns the list file, which
        it reloads when rewritten); the withdraw service is restarted to consult it."""
        sanctions = self.tmp / "sanctions.csv"
        write_sanctions(sanctions, sanctioned)
        services = catalog.default()
        settings = KycSettings(
            port=free_port(),
            tls=False,
            pki_dir=self.tmp / "pki",
            data_dir=self.tmp / "kyc-data",
            database_url=_database(self.database_url, self.tmp, "kyc"),
            endpoints={"auth": f"127.0.0.1:{self.identity.auth_app.port}"},
            jwt_public_keys_file=self.settings.jwt_public_keys_file,
            sanctions_list_file=sanctions,
            sanctions_reload_interval_s=0.05,
        )
        app = ServiceApp(services.service("kyc"), settings, catalog=services, bus=InProcessBus())
        kyc_main.build(app)
        try:
            await app.start(migrations=migrations("kyc"), migrate_database=True)
        except BaseException:
            await app.stop(0)
            raise
        self.apps["kyc"] = app
        await self.stop_withdraw()
        endpoints = {**self.settings.endpoints, "kyc": f"127.0.0.1:{app.port}"}
        await self.start_withdraw(kyc_enabled=True, endpoints=endpoints)
        return sanctions

    async def stop(self) -> None:
        for connection in self.channels:
            await connection.close()
        await self.stop_withdraw()
        if "kyc" in self.apps:
            await self.apps["kyc"].stop(0)
        await self.w3.provider.disconnect()
        await self.custody.stop()
        await self.gateway.stop()
        for name in ("account", "ledger"):
            if name in self.apps:
                await self.apps[name].stop(0)
        await self.identity.stop()


SANCTIONS_HEADER = "entry_id,kind,name,aliases,date_of_birth,nationalities,addresses,program\n"


def write_sanctions(path: Path, addresses: list[str]) -> None:
    """The operator's list file, replaced whole (a new inode, as an editor saves it)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(SANCTIONS_HEADER + f"SDN-2002,entity,Mixer,,,,{';'.join(addresses)},CYBER2\n")
    temporary.replace(path)


def withdraw_settings(
    mesh_ports: dict[str, int], database_url: str, tmp: Path, key: str, keys_file: Path, wallet_id: str
) -> WithdrawSettings:
    return WithdrawSettings(
        port=0,
        tls=False,
        pki_dir=tmp / "pki",
        data_dir=tmp / "withdraw-data",
        database_url=_database(database_url, tmp, "withdraw"),
        jwt_public_keys_file=keys_file,
        endpoints={name: f"127.0.0.1:{port}" for name, port in mesh_ports.items()},
        withdrawal_assets={ETH: policy()},
        hot_wallets={CHAIN: wallet_id},
        chain_ids={CHAIN: HARDHAT_CHAIN_ID},
        approval_key_id=WITHDRAW_KEY_ID,
        approval_private_key=key,
        address_cool_down_s=0,
        required_approvals=2,
        execution_interval_s=0.2,
        stuck_timeout_s=3600,
    )


async def start_mesh(
    database_url: str, tmp: Path, softhsm: SoftHsmToken, hardhat: HardhatNode, erc20: Token
) -> Mesh:
    services = catalog.default()
    identity = await start_identity(database_url, tmp)
    keys_file = tmp / "auth-public-keys.pem"
    identity.export_public_keys(keys_file)
    apps: dict[str, ServiceApp] = {}
    started: list[Any] = []
    common: dict[str, Any] = {"tls": False, "pki_dir": tmp / "pki", "jwt_public_keys_file": keys_file}
    try:
        bus = InProcessBus()
        ledger = ServiceApp(
            services.service("ledger"),
            KitSettings(**common, port=free_port(), database_url=_database(database_url, tmp, "ledger")),
            catalog=services,
            bus=bus,
        )
        ledger_main.build(ledger)
        started.append(ledger)
        await ledger.start(migrations=migrations("ledger"), migrate_database=True)
        apps["ledger"] = ledger
        account = ServiceApp(
            services.service("account"),
            AccountSettings(
                **common,
                port=free_port(),
                database_url=_database(database_url, tmp, "account"),
                endpoints={"ledger": f"127.0.0.1:{ledger.port}"},
                assets={ETH: 18},
            ),
            catalog=services,
            bus=bus,
        )
        account_main.build(account)
        started.append(account)
        await account.start(migrations=migrations("account"), migrate_database=True)
        apps["account"] = account
        gateway = await gateway_on_free_port(
            _database(database_url, tmp, "gateway"), tmp / "gateway", hardhat_chain(hardhat.url, erc20)
        )
        started.append(gateway)
        custody = await start_custody(
            _database(database_url, tmp, "custody"),
            tmp / "custody",
            softhsm,
            {CHAIN: ChainAssets(chain_id=HARDHAT_CHAIN_ID, native_asset=ETH)},
            endpoints={"chain-gateway": f"127.0.0.1:{gateway.app.port}"},
            movement_interval_s=0.5,
        )
        started.append(custody)
    except BaseException:
        for resource in reversed(started):
            await (resource.stop(0) if isinstance(resource, ServiceApp) else resource.stop())
        await identity.stop()
        raise
    wallet = await custody.create_wallet(f"hot-{uuid.uuid4().hex[:8]}", chains=[CHAIN])
    w3 = AsyncWeb3(AsyncHTTPProvider(hardhat.url))
    await w3.provider.make_request("hardhat_setBalance", [wallet.address, hex(HOT_FUNDS)])  # type: ignore[arg-type]
    raw = custody.withdraw.key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    ports = {
        "auth": identity.auth_app.port,
        "user": identity.user_app.port,
        "ledger": ledger.port,
        "account": account.port,
        "custody": custody.app.port,
        "chain-gateway": gateway.app.port,
    }
    settings = withdraw_settings(
        ports, database_url, tmp, base64.b64encode(raw).decode(), keys_file, wallet.wallet_id
    )
    mesh = Mesh(
        identity, apps, gateway, custody, w3, wallet.wallet_id, wallet.address, settings, tmp, database_url
    )
    created = await mesh.ledger.CreateLedgerAccount(
        ledger_service.CreateLedgerAccountRequest(
            request_id="custody-hot-eth",
            account=ledger_resources.LedgerAccount(code=CUSTODY_CODE, type=1, asset=ETH, constraint=1),
        )
    )
    mesh.custody_account_id = created.account.account_id
    # The platform's books start where the chain does: the hot wallet's coins are custody's asset.
    return mesh


@pytest.fixture
async def mesh(
    database_url: str, tmp_path: Path, softhsm: SoftHsmToken, hardhat_node: HardhatNode, token: Token
) -> AsyncIterator[Mesh]:
    running = await start_mesh(database_url, tmp_path, softhsm, hardhat_node, token)
    try:
        await running.start_withdraw()
        yield running
    finally:
        await running.stop()
