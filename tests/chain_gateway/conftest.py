"""The chain gateway served by the kit (no TLS) in this process on each backend, against a real
Hardhat node (npm) over JSON-RPC or the embedded in-process EVM, with an ERC-20 token compiled
from svc/chain_gateway/contracts/TestToken.sol by solc (npm) and deployed on the node."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as service
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc as service_grpc
from finmesh.common.v1 import money_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import select
from web3 import AsyncHTTPProvider, AsyncWeb3

from svc.chain_gateway import main as gateway_main
from svc.chain_gateway.config import ChainConfig, ChainGatewaySettings, GasModel, ProviderConfig, TokenConfig
from svc.kit import catalog
from svc.kit.bus import InProcessBus
from svc.kit.client import channel
from svc.kit.server import ServiceApp
from svc.kit.tables import outbox
from tests.harness.hardhat import HARDHAT_ACCOUNT_KEYS, HardhatNode, compile_solidity

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = ROOT / "svc" / "chain_gateway" / "migrations" / "versions"
TOKEN_SOURCE = ROOT / "svc" / "chain_gateway" / "contracts" / "TestToken.sol"
CHAIN = "hardhat"
HARDHAT_CHAIN_ID = 31337
DEPTH = 3
TOKEN_SYMBOL = "TTK"
TOKEN_DECIMALS = 6
TOKEN_SUPPLY = 10**15
ETHER = 10**18
WAIT_S = 30.0
POLL_INTERVAL_S = 0.05


@dataclass(frozen=True)
class Token:
    address: str
    abi: list[Any]


@pytest.fixture(scope="session")
def hardhat_node() -> Iterator[HardhatNode]:
    node = HardhatNode(chain_id=HARDHAT_CHAIN_ID)
    try:
        node.start()
        yield node
    finally:
        node.close()


def require_alive(node: HardhatNode) -> None:
    """A node that died takes every later test with it: say so once, with its log."""
    if not node.alive():
        pytest.fail(f"the Hardhat node exited; its log ends with:\n{node.log_tail()}")


@pytest.fixture(scope="session")
def token_artifact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """TestToken compiled by solc (npm): its ABI and bytecode."""
    return compile_solidity(TOKEN_SOURCE, tmp_path_factory.mktemp("solc"))["TestToken"]


async def deploy_token(url: str, artifact: dict[str, Any]) -> Token:
    """Deploys TestToken from Hardhat's first account, which then holds the supply."""
    deployer = Account.from_key(HARDHAT_ACCOUNT_KEYS[0])
    w3 = AsyncWeb3(AsyncHTTPProvider(url))
    try:
        contract = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        transaction = await contract.constructor(
            "Test Token", TOKEN_SYMBOL, TOKEN_DECIMALS, TOKEN_SUPPLY
        ).build_transaction(
            {
                "from": deployer.address,
                "nonce": await w3.eth.get_transaction_count(deployer.address, "pending"),
            }
        )
        signed = deployer.sign_transaction(transaction)
        receipt = await w3.eth.wait_for_transaction_receipt(
            await w3.eth.send_raw_transaction(signed.raw_transaction)
        )
        assert receipt["status"] == 1
    finally:
        await w3.provider.disconnect()
    return Token(str(receipt["contractAddress"]).lower(), artifact["abi"])


@pytest.fixture(scope="session")
async def token(hardhat_node: HardhatNode, token_artifact: dict[str, Any]) -> Token:
    """TestToken deployed on the shared node."""
    return await deploy_token(hardhat_node.url, token_artifact)


def hardhat_chain(url: str, token: Token, **overrides: Any) -> ChainConfig:
    """The test chain: depth 3, fast loops, the token, one provider (unless overridden)."""
    values: dict[str, Any] = {
        "display_name": "Hardhat",
        "chain_id": HARDHAT_CHAIN_ID,
        "gas_model": GasModel.EIP1559,
        "confirmation_depth": DEPTH,
        "block_time_ms": 1_000,
        "native_symbol": "ETH",
        "tokens": (TokenConfig(symbol=TOKEN_SYMBOL, decimals=TOKEN_DECIMALS, contract=token.address),),
        "development": True,
        "fee_cap_per_gas": 500 * 10**9,
        "providers": (ProviderConfig(name="hardhat", endpoint=url, timeout_ms=5_000),),
        "health_interval_ms": 200,
        "follower_poll_interval_ms": 50,
        "tracker_interval_ms": 100,
        "dev_funding_key": HARDHAT_ACCOUNT_KEYS[0],
    }
    values.update(overrides)
    return ChainConfig(**values)


@dataclass
class Gateway:
    """A running chain gateway and a stub to call it."""

    app: ServiceApp
    # A ChainGatewayServiceStub over a grpc.aio channel: its calls are awaitables, which the
    # generated (synchronous) stub types do not say.
    stub: Any
    connection: grpc.aio.Channel

    async def stop(self) -> None:
        await self.connection.close()
        await self.app.stop(0)

    async def events(self, event_type: type[Message]) -> list[Any]:
        """Every event of a type in the gateway's outbox, oldest first."""
        async with self.app.database.transaction() as session:
            rows = await session.execute(
                select(outbox.c.payload)
                .where(outbox.c.event_type == event_type.DESCRIPTOR.full_name)
                .order_by(outbox.c.id)
            )
            return [event_type.FromString(row.payload) for row in rows]


async def start_gateway(
    database_url: str, tmp_path: Path, chains: dict[str, ChainConfig] | None = None, *, port: int = 0
) -> Gateway:
    """A gateway on the catalog's port, or on `port` (a second replica beside the first)."""
    services = catalog.default()
    chosen: dict[str, Any] = {"chains": chains} if chains is not None else {}
    settings = ChainGatewaySettings(
        port=port, pki_dir=tmp_path / "pki", tls=False, database_url=database_url, data_dir=tmp_path, **chosen
    )
    app = ServiceApp(services.service("chain-gateway"), settings, catalog=services, bus=InProcessBus())
    gateway_main.build(app)
    try:
        await app.start(migrations=MIGRATIONS, migrate_database=True)
    except BaseException:
        await app.stop(0)
        raise
    connection = channel(f"127.0.0.1:{app.port}")
    return Gateway(app, service_grpc.ChainGatewayServiceStub(connection), connection)


@pytest.fixture
async def gateway(
    database_url: str, tmp_path: Path, hardhat_node: HardhatNode, token: Token
) -> AsyncIterator[Gateway]:
    require_alive(hardhat_node)
    running = await start_gateway(database_url, tmp_path, {CHAIN: hardhat_chain(hardhat_node.url, token)})
    yield running
    await running.stop()


@pytest.fixture
async def web3(hardhat_node: HardhatNode) -> AsyncIterator[AsyncWeb3[Any]]:
    require_alive(hardhat_node)
    w3 = AsyncWeb3(AsyncHTTPProvider(hardhat_node.url))
    yield w3
    await w3.provider.disconnect()


async def funded_account(w3: AsyncWeb3[Any], ether: int = 100) -> LocalAccount:
    """A fresh key with `ether` ETH (hardhat_setBalance: no block, no nonce used)."""
    account: LocalAccount = Account.create()
    await w3.provider.make_request("hardhat_setBalance", [account.address, hex(ether * ETHER)])
    return account


async def send_token(w3: AsyncWeb3[Any], token: Token, recipient: str, amount: int) -> str:
    """Transfers tokens from the deployer (Hardhat's first account) outside the gateway."""
    deployer = Account.from_key(HARDHAT_ACCOUNT_KEYS[0])
    contract = w3.eth.contract(address=AsyncWeb3.to_checksum_address(token.address), abi=token.abi)
    transaction = await contract.functions.transfer(
        AsyncWeb3.to_checksum_address(recipient), amount
    ).build_transaction(
        {"from": deployer.address, "nonce": await w3.eth.get_transaction_count(deployer.address, "pending")}
    )
    tx_hash = await w3.eth.send_raw_transaction(deployer.sign_transaction(transaction).raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    return AsyncWeb3.to_hex(tx_hash)


async def mine(w3: AsyncWeb3[Any], blocks: int) -> None:
    await w3.provider.make_request("hardhat_mine", [hex(blocks)])


def money(asset: str, amount: int) -> money_pb2.Money:
    return money_pb2.Money(asset=asset, amount=str(amount))


def request_id(prefix: str = "req") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S) -> None:
    """Waits until `check()` holds (for what the follower and tracker do in the background)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await check():
                return
            await asyncio.sleep(POLL_INTERVAL_S)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


async def refused(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> error_details_pb2.ErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value
    info = error_info(caught.value)
    assert info.reason == reason, info
    return info


async def build_sign_broadcast(
    gateway: Gateway, account: LocalAccount, recipient: str, asset: str, amount: int, **fields: Any
) -> tuple[service.BuildTransferResponse, service.BroadcastTransactionResponse]:
    """BuildTransfer, sign locally (custody signs in production), BroadcastTransaction."""
    built = await gateway.stub.BuildTransfer(
        service.BuildTransferRequest(
            request_id=request_id("build"),
            chain=fields.pop("chain", CHAIN),
            from_address=account.address,
            recipient=recipient,
            amount=money(asset, amount),
            **fields,
        )
    )
    signed = sign(account, built.transaction)
    sent = await gateway.stub.BroadcastTransaction(
        service.BroadcastTransactionRequest(
            request_id=request_id("send"), chain=built.transaction.chain, signed_transaction=signed
        )
    )
    return built, sent


def sign(account: LocalAccount, unsigned: Any, **changes: Any) -> str:
    """Signs an UnsignedTransaction message's fields (with `changes`, to tamper)."""
    fields: dict[str, Any] = {
        "chainId": unsigned.chain_id,
        "nonce": unsigned.nonce,
        "to": AsyncWeb3.to_checksum_address(unsigned.to_address),
        "value": int(unsigned.value),
        "data": bytes.fromhex(unsigned.data[2:]),
        "gas": unsigned.gas_limit,
    }
    if unsigned.type == 2:
        fields.update(
            type=2,
            maxFeePerGas=int(unsigned.max_fee_per_gas),
            maxPriorityFeePerGas=int(unsigned.max_priority_fee_per_gas),
        )
    else:
        fields["gasPrice"] = int(unsigned.gas_price)
    fields.update(changes)
    signed = account.sign_transaction(fields)
    return "0x" + bytes(signed.raw_transaction).hex()
