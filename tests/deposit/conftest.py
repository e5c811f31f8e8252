"""The deposit service with the real chain gateway (on a real Hardhat node, with the harness's
compiled ERC-20), ledger and account service, all served by the kit (no TLS) in this process on
each backend and sharing one in-process bus, so that the chain gateway's transfer events and the
ledger's entry events reach their consumers. Custody has a deposit root and a HOT wallet (funded on
chain) and trusts the deposit service's Ed25519 key for sweep and gas top-up approvals."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from eth_account import Account
from eth_account.signers.local import LocalAccount
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.account.v1 import account_service_pb2_grpc as account_grpc
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc as chain_grpc
from finmesh.custody.v1 import custody_resources_pb2 as custody_resources
from finmesh.custody.v1 import custody_service_pb2 as custody_service
from finmesh.custody.v1 import custody_service_pb2_grpc as custody_grpc
from finmesh.deposit.v1 import deposit_resources_pb2 as resources
from finmesh.deposit.v1 import deposit_service_pb2 as service
from finmesh.deposit.v1 import deposit_service_pb2_grpc as service_grpc
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as ledger_grpc
from finmesh.wallet.v1 import wallet_service_pb2 as wallet_service
from finmesh.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from google.protobuf.message import Message
from sqlalchemy import select
from web3 import AsyncHTTPProvider, AsyncWeb3

from svc.account import main as account_main
from svc.account.config import AccountSettings
from svc.chain_gateway import main as gateway_main
from svc.chain_gateway.config import ChainGatewaySettings
from svc.custody import main as custody_main
from svc.custody.config import ChainAssets, CustodySettings, IssuerSettings
from svc.deposit import main as deposit_main
from svc.deposit.config import DepositSettings
from svc.kit import catalog
from svc.kit.bus import InProcessBus
from svc.kit.client import channel
from svc.kit.config import KitSettings
from svc.kit.server import ServiceApp
from svc.kit.tables import outbox
from svc.ledger import main as ledger_main
from svc.wallet import main as wallet_main
from svc.wallet.config import WalletSettings
from tests.chain_gateway.conftest import (
    CHAIN,
    DEPTH,
    ETHER,
    TOKEN_SYMBOL,
    Token,
    eventually,
    funded_account,
    hardhat_chain,
    mine,
    refused,
    send_token,
)
from tests.harness.hardhat import HARDHAT_ACCOUNT_KEYS, HardhatNode, compile_solidity
from tests.harness.identity import Identity, identity_templates, start_identity
from tests.harness.process import free_port
from tests.harness.tokens import TokenIssuer

ROOT = Path(__file__).resolve().parents[2]
TOKEN_SOURCE = ROOT / "svc" / "chain_gateway" / "contracts" / "TestToken.sol"
HARDHAT_CHAIN_ID = 31337
NATIVE = f"{CHAIN}:ETH"
TOKEN_ASSET = f"{CHAIN}:{TOKEN_SYMBOL}"
ASSETS = {NATIVE: 18, TOKEN_ASSET: 6}
DEPOSIT_KEY_ID = "deposit-sweeps"
HOT_FUNDS = 50 * 10**18


def migrations(name: str) -> Path:
    return ROOT / "svc" / name / "migrations" / "versions"


def own_database(database_url: str, tmp_path: Path, name: str) -> str:
    """A service's own database: an SQLite file of its own, or (PostgreSQL) its own schema."""
    if database_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}"
    return database_url


@dataclass
class Mesh:
    """The running services, stubs to call them and the bus they share."""

    apps: dict[str, ServiceApp]
    identity: Identity
    bus: InProcessBus
    deposits: service_grpc.DepositServiceStub
    gateway: chain_grpc.ChainGatewayServiceStub
    ledger: ledger_grpc.LedgerServiceStub
    accounts: account_grpc.AccountServiceStub
    wallets: wallet_grpc.WalletServiceStub
    jwt: TokenIssuer
    channels: list[grpc.aio.Channel]
    # The custody HOT wallet sweeps go to (funded on chain with HOT_FUNDS, not in the ledger).
    hot_wallet_id: str = ""
    hot_address: str = ""

    async def stop(self) -> None:
        for connection in self.channels:
            await connection.close()
        for app in reversed(list(self.apps.values())):
            await app.stop(0)
        await self.identity.stop()

    def user(self, subject: str) -> tuple[tuple[str, str], ...]:
        return self.jwt.metadata(subject, "user")

    def staff(self, subject: str, *roles: str) -> tuple[tuple[str, str], ...]:
        return self.jwt.metadata(subject, *roles)

    async def new_user(self) -> str:
        """A new ACTIVE user registered at the user service."""
        return (await self.identity.register()).user_id

    async def deposit_address(self, user_id: str) -> str:
        """The user's deposit address: CreateWallet at the wallet service, which derives it from
        custody's deposit root, puts it on the chain gateway's watch list and announces it."""
        response = await self.wallets.CreateWallet(
            wallet_service.CreateWalletRequest(
                request_id=f"wallet-{uuid.uuid4().hex}", user_id="me", chain=CHAIN
            ),
            metadata=self.user(user_id),
        )
        return str(response.wallet.deposit_address.address).lower()

    async def deposits_of(self, user_id: str) -> list[resources.Deposit]:
        response = await self.deposits.ListDeposits(
            service.ListDepositsRequest(), metadata=self.user(user_id)
        )
        return list(response.deposits)

    async def one_deposit(self, user_id: str, state: int, timeout_s: float = 60.0) -> resources.Deposit:
        """Waits until the user has exactly one deposit, in `state`."""
        found: list[resources.Deposit] = []

        async def reached() -> bool:
            found[:] = await self.deposits_of(user_id)
            return len(found) == 1 and found[0].state == state

        await eventually(reached, timeout_s)
        return found[0]

    async def balance(self, user_id: str, asset: str = NATIVE) -> Any:
        """The user's account balance of an asset (the account opened by the deposit service)."""
        listed = await self.accounts.ListAccounts(
            account_service.ListAccountsRequest(user_id=user_id, asset=asset)
        )
        [account] = listed.accounts
        fresh = await self.accounts.GetAccountBalance(
            account_service.GetAccountBalanceRequest(account_id=account.account_id, min_sequence=1)
        )
        return fresh.balance

    async def settled_balance(self, user_id: str, asset: str = NATIVE, **expected: str) -> Any:
        """The user's balance once its figures are `expected` (the cache follows ledger events)."""
        found: list[Any] = []

        async def reached() -> bool:
            found[:] = [await self.balance(user_id, asset)]
            return all(getattr(found[0], name) == value for name, value in expected.items())

        await eventually(reached, 30.0)
        return found[0]

    async def accounts_of(self, user_id: str) -> list[Any]:
        listed = await self.accounts.ListAccounts(account_service.ListAccountsRequest(user_id=user_id))
        return list(listed.accounts)

    async def ledger_balance(self, code: str) -> Any:
        found = await self.ledger.ListLedgerAccounts(
            ledger_service.ListLedgerAccountsRequest(code_prefix=code)
        )
        [account] = found.accounts
        balances = await self.ledger.BatchGetLedgerBalances(
            ledger_service.BatchGetLedgerBalancesRequest(account_ids=[account.account_id])
        )
        return balances.balances[0]

    async def events(self, event_type: type[Message]) -> list[Any]:
        """Every event of a type in the deposit service's outbox, oldest first."""
        async with self.apps["deposit"].database.transaction() as session:
            rows = await session.execute(
                select(outbox.c.payload)
                .where(outbox.c.event_type == event_type.DESCRIPTOR.full_name)
                .order_by(outbox.c.id)
            )
            return [event_type.FromString(row.payload) for row in rows]


async def start_mesh(
    database_url: str, tmp_path: Path, identity_url: str, node_url: str, erc20: Token
) -> Mesh:
    """Ledger, account, chain gateway, custody, user and auth, wallet and deposit; stops what
    started if a step fails."""
    services = catalog.default()
    bus = InProcessBus()
    jwt = TokenIssuer(tmp_path / "jwt")
    apps: dict[str, ServiceApp] = {}
    channels: list[grpc.aio.Channel] = []
    # Every service verifies the edge's end-user tokens, which calls made for a user carry on.
    common: dict[str, Any] = {
        "pki_dir": tmp_path / "pki",
        "tls": False,
        "data_dir": tmp_path,
        "jwt_public_keys_file": jwt.public_key_file,
    }

    async def start(name: str, settings: KitSettings, build: Any, folder: str) -> None:
        # A free port, not the catalog's: a second service on the same port would be an error.
        settings = settings.model_copy(update={"port": free_port()})
        app = ServiceApp(services.service(name), settings, catalog=services, bus=bus)
        build(app)
        apps[name] = app
        await app.start(migrations=migrations(folder), migrate_database=True)

    def endpoints() -> dict[str, str]:
        found = {name: f"127.0.0.1:{app.port}" for name, app in apps.items()}
        found["user"] = f"127.0.0.1:{identity.user_app.port}"
        return found

    issuer_key = Ed25519PrivateKey.generate()
    public_key = base64.b64encode(
        issuer_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ).decode()
    private_key = base64.b64encode(
        issuer_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    ).decode()
    identity = await start_identity(identity_url, tmp_path)
    try:
        await start("ledger", KitSettings(**common, database_url=database_url), ledger_main.build, "ledger")
        account_settings = AccountSettings(
            **common,
            database_url=own_database(database_url, tmp_path, "account"),
            endpoints=endpoints(),
            assets=ASSETS,
        )
        await start("account", account_settings, account_main.build, "account")
        gateway_settings = ChainGatewaySettings(
            **common,
            database_url=own_database(database_url, tmp_path, "chain-gateway"),
            chains={CHAIN: hardhat_chain(node_url, erc20)},
        )
        await start("chain-gateway", gateway_settings, gateway_main.build, "chain_gateway")
        custody_settings = CustodySettings(
            **{**common, "data_dir": tmp_path / "custody-data"},
            database_url=own_database(database_url, tmp_path, "custody"),
            endpoints=endpoints(),
            chains={
                CHAIN: ChainAssets(
                    chain_id=HARDHAT_CHAIN_ID, native_asset=NATIVE, tokens={erc20.address: TOKEN_ASSET}
                )
            },
            movement_interval_s=3600.0,
            rebalance_interval_s=3600.0,
            approval_issuers={
                DEPOSIT_KEY_ID: IssuerSettings(issuer="deposit", public_key=public_key, purposes=[2, 3])
            },
        )
        await start("custody", custody_settings, custody_main.build, "custody")
        async with channel(f"127.0.0.1:{apps['custody'].port}") as custody_channel:
            hot = await custody_grpc.CustodyServiceStub(custody_channel).CreateCustodyWallet(
                custody_service.CreateCustodyWalletRequest(
                    request_id=f"hot-{uuid.uuid4().hex}",
                    name="hot",
                    kind=custody_resources.WALLET_KIND_HOT,
                    chain_family=custody_resources.CHAIN_FAMILY_EVM,
                    chains=[CHAIN],
                    step_up_token="step-up-token-from-auth",
                ),
                metadata=jwt.metadata("admin-1", "admin"),
            )
        hot_wallet = hot.wallet
        w3 = AsyncWeb3(AsyncHTTPProvider(node_url))
        try:
            await w3.provider.make_request("hardhat_setBalance", [hot_wallet.address, hex(HOT_FUNDS)])  # type: ignore[arg-type]
        finally:
            await w3.provider.disconnect()
        wallet_settings = WalletSettings(
            **common, database_url=own_database(database_url, tmp_path, "wallet"), endpoints=endpoints()
        )
        await start("wallet", wallet_settings, wallet_main.build, "wallet")
        deposit_settings = DepositSettings(
            **common,
            database_url=own_database(database_url, tmp_path, "deposit"),
            endpoints=endpoints(),
            credit_interval_s=0.2,
            chain_status_ttl_s=0.0,
            hot_wallets={CHAIN: hot_wallet.wallet_id},
            approval_key_id=DEPOSIT_KEY_ID,
            approval_private_key=private_key,
            sweep_interval_s=0.2,
        )
        await start("deposit", deposit_settings, deposit_main.build, "deposit")
        channels.extend(
            channel(f"127.0.0.1:{apps[name].port}")
            for name in ("deposit", "chain-gateway", "ledger", "account", "wallet", "custody")
        )
        await custody_grpc.CustodyServiceStub(channels[5]).CreateCustodyWallet(
            custody_service.CreateCustodyWalletRequest(
                request_id=f"root-{uuid.uuid4().hex}",
                name="deposit-root",
                kind=custody_resources.WALLET_KIND_DEPOSIT_ROOT,
                chain_family=custody_resources.CHAIN_FAMILY_EVM,
                chains=[CHAIN],
                step_up_token="step-up-token-from-auth",
            ),
            metadata=jwt.metadata("admin-1", "admin"),
        )
    except BaseException:
        for connection in channels:
            await connection.close()
        for app in reversed(list(apps.values())):
            await app.stop(0)
        await identity.stop()
        raise
    return Mesh(
        apps,
        identity,
        bus,
        service_grpc.DepositServiceStub(channels[0]),
        chain_grpc.ChainGatewayServiceStub(channels[1]),
        ledger_grpc.LedgerServiceStub(channels[2]),
        account_grpc.AccountServiceStub(channels[3]),
        wallet_grpc.WalletServiceStub(channels[4]),
        jwt,
        channels,
        hot_wallet.wallet_id,
        hot_wallet.address.lower(),
    )


@pytest.fixture(scope="session")
def hardhat_node() -> Iterator[HardhatNode]:
    node = HardhatNode(chain_id=HARDHAT_CHAIN_ID)
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture(scope="session")
def token_artifact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The harness's TestToken compiled by solc (npm)."""
    return compile_solidity(TOKEN_SOURCE, tmp_path_factory.mktemp("solc"))["TestToken"]


async def deploy_token(url: str, artifact: dict[str, Any], symbol: str) -> Token:
    """Deploys a TestToken from Hardhat's first account, which then holds the supply."""
    deployer = Account.from_key(HARDHAT_ACCOUNT_KEYS[0])
    w3 = AsyncWeb3(AsyncHTTPProvider(url))
    try:
        contract = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        transaction = await contract.constructor(symbol, symbol, 6, 10**15).build_transaction(
            {
                "from": deployer.address,
                "nonce": await w3.eth.get_transaction_count(deployer.address, "pending"),
            }
        )
        receipt = await w3.eth.wait_for_transaction_receipt(
            await w3.eth.send_raw_transaction(deployer.sign_transaction(transaction).raw_transaction)
        )
        assert receipt["status"] == 1
    finally:
        await w3.provider.disconnect()
    return Token(str(receipt["contractAddress"]).lower(), artifact["abi"])


@pytest.fixture(scope="session")
async def token(hardhat_node: HardhatNode, token_artifact: dict[str, Any]) -> Token:
    """The token the chain gateway supports (TOKEN_ASSET)."""
    return await deploy_token(hardhat_node.url, token_artifact, TOKEN_SYMBOL)


@pytest.fixture(scope="session")
async def unknown_token(hardhat_node: HardhatNode, token_artifact: dict[str, Any]) -> Token:
    """A second token, which the chain gateway's configuration does not list."""
    return await deploy_token(hardhat_node.url, token_artifact, "UNK")


@pytest.fixture
async def mesh(
    database_url: str,
    tmp_path: Path,
    hardhat_node: HardhatNode,
    token: Token,
    identity_templates: Any,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Mesh]:
    """The mesh on a fresh database of each backend, on the session's Hardhat node."""
    postgres = None if database_url.startswith("sqlite") else request.getfixturevalue("postgres_server")
    identity_url = await identity_templates.prepare(database_url, tmp_path, postgres)
    running = await start_mesh(database_url, tmp_path, identity_url, hardhat_node.url, token)
    yield running
    await running.stop()


@pytest.fixture
async def web3(hardhat_node: HardhatNode) -> AsyncIterator[AsyncWeb3[Any]]:
    w3 = AsyncWeb3(AsyncHTTPProvider(hardhat_node.url))
    yield w3
    await w3.provider.disconnect()


async def send_native(
    w3: AsyncWeb3[Any], sender: LocalAccount, recipient: str, amount: int
) -> tuple[str, bytes]:
    """A plain transfer from outside the platform; returns its hash and raw form (to resend)."""
    block = await w3.eth.get_block("latest")
    signed = sender.sign_transaction(
        {
            "chainId": await w3.eth.chain_id,
            "nonce": await w3.eth.get_transaction_count(sender.address, "pending"),
            "to": AsyncWeb3.to_checksum_address(recipient),
            "value": amount,
            "gas": 21_000,
            "maxFeePerGas": 2 * int(block["baseFeePerGas"]) + 10**9,
            "maxPriorityFeePerGas": 10**9,
            "type": 2,
        }
    )
    raw = bytes(signed.raw_transaction)
    await w3.eth.wait_for_transaction_receipt(await w3.eth.send_raw_transaction(raw))
    return "0x" + bytes(signed.hash).hex(), raw


__all__ = [
    "CHAIN",
    "DEPTH",
    "ETHER",
    "NATIVE",
    "TOKEN_ASSET",
    "Awaitable",
    "Mesh",
    "Token",
    "eventually",
    "funded_account",
    "identity_templates",
    "mine",
    "refused",
    "send_native",
    "send_token",
]  # fmt: skip
