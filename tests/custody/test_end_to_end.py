"""Custody with the chain gateway on a real Hardhat node: transfers built by the gateway, signed by
SoftHSM2 keys under a withdraw approval, broadcast by the gateway and mined, native and ERC-20."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as gateway_service
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc as gateway_grpc
from finmesh.common.v1 import money_pb2
from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.custody.v1 import custody_service_pb2 as service
from web3 import AsyncHTTPProvider, AsyncWeb3

from svc.chain_gateway import main as gateway_main
from svc.chain_gateway.config import ChainConfig, ChainGatewaySettings
from svc.custody.config import ChainAssets
from svc.kit import catalog
from svc.kit.bus import InProcessBus
from svc.kit.client import channel
from svc.kit.server import ServiceApp
from tests.chain_gateway import conftest as gateway_fixtures
from tests.chain_gateway.conftest import (
    CHAIN,
    HARDHAT_CHAIN_ID,
    TOKEN_SYMBOL,
    Gateway,
    Token,
    hardhat_chain,
    send_token,
)
from tests.custody.conftest import Custody, claims_for, start_custody
from tests.harness.hardhat import HardhatNode
from tests.harness.process import free_port
from tests.harness.softhsm import SoftHsmToken

# The chain gateway's session fixtures: its Hardhat node and the ERC-20 token deployed on it.
hardhat_node = gateway_fixtures.hardhat_node
token = gateway_fixtures.token
token_artifact = gateway_fixtures.token_artifact

GATEWAY_MIGRATIONS = gateway_fixtures.MIGRATIONS
NATIVE = f"{CHAIN}:ETH"
TOKEN_ASSET = f"{CHAIN}:{TOKEN_SYMBOL}"
RECIPIENT = "0x4444444444444444444444444444444444444444"
ETHER = 10**18
IN_FLIGHT = (
    resources.MOVEMENT_STATE_APPROVED,
    resources.MOVEMENT_STATE_SIGNING,
    resources.MOVEMENT_STATE_BROADCAST,
)


async def gateway_on_free_port(database_url: str, tmp_path: Path, chain: ChainConfig) -> Gateway:
    """The chain gateway as its tests start it, but on a free port rather than the catalog's."""
    services = catalog.default()
    settings = ChainGatewaySettings(
        port=free_port(), pki_dir=tmp_path / "pki", tls=False, database_url=database_url, data_dir=tmp_path,
        chains={CHAIN: chain},
    )  # fmt: skip
    app = ServiceApp(services.service("chain-gateway"), settings, catalog=services, bus=InProcessBus())
    gateway_main.build(app)
    try:
        await app.start(migrations=GATEWAY_MIGRATIONS, migrate_database=True)
    except BaseException:
        await app.stop(0)
        raise
    connection = channel(f"127.0.0.1:{app.port}")
    return Gateway(app, gateway_grpc.ChainGatewayServiceStub(connection), connection)


@pytest.fixture
async def mesh(
    database_url: str, tmp_path: Path, softhsm: SoftHsmToken, hardhat_node: HardhatNode, token: Token
) -> AsyncIterator[tuple[Custody, Gateway, AsyncWeb3[Any]]]:
    gateway = await gateway_on_free_port(database_url, tmp_path, hardhat_chain(hardhat_node.url, token))
    custody_url = (
        f"sqlite+aiosqlite:///{tmp_path / 'custody.db'}"
        if database_url.startswith("sqlite")
        else database_url
    )
    chains = {
        CHAIN: ChainAssets(
            chain_id=HARDHAT_CHAIN_ID, native_asset=NATIVE, tokens={token.address: TOKEN_ASSET}
        )
    }
    custody = await start_custody(
        custody_url,
        tmp_path / "custody",
        softhsm,
        chains,
        endpoints={"chain-gateway": f"127.0.0.1:{gateway.app.port}"},
        movement_interval_s=0.2,
    )
    w3 = AsyncWeb3(AsyncHTTPProvider(hardhat_node.url))
    yield custody, gateway, w3
    await w3.provider.disconnect()
    await custody.stop()
    await gateway.stop()


async def pay(
    custody: Custody, gateway: Gateway, wallet_id: str, sender: str, asset: str, amount: int
) -> str:
    """The withdraw flow's part: build, approve exactly that, have custody sign, broadcast."""
    built = (
        await gateway.stub.BuildTransfer(
            gateway_service.BuildTransferRequest(
                request_id=f"build-{uuid.uuid4().hex}",
                chain=CHAIN,
                from_address=sender,
                recipient=RECIPIENT,
                amount=money_pb2.Money(asset=asset, amount=str(amount)),
            )
        )
    ).transaction
    claims = claims_for(built, RECIPIENT, amount, asset=asset, max_fee_per_gas=built.max_fee_per_gas)
    signed = await custody.sign(wallet_id, built, approval=custody.withdraw.sign(claims))
    sent = await gateway.stub.BroadcastTransaction(
        gateway_service.BroadcastTransactionRequest(
            request_id=f"send-{uuid.uuid4().hex}", chain=CHAIN, signed_transaction=signed.signed_transaction
        )
    )
    assert sent.transaction.tx_hash == signed.tx_hash
    return signed.tx_hash


async def test_hsm_signed_native_and_erc20_transfers_are_mined_on_hardhat(
    mesh: tuple[Custody, Gateway, AsyncWeb3[Any]], token: Token
) -> None:
    custody, gateway, w3 = mesh
    wallet = await custody.create_wallet(f"hot-{uuid.uuid4().hex[:8]}", chains=[CHAIN])
    # The new wallet's address reaches the gateway's watch list in the background.
    async with asyncio.timeout(30):
        while True:
            watched = await gateway.stub.ListWatchedAddresses(
                gateway_service.ListWatchedAddressesRequest(chain=CHAIN, owner="custody")
            )
            found = [w for w in watched.watched_addresses if w.address == wallet.address.lower()]
            if found:
                assert found[0].reference == wallet.wallet_id
                break
            await asyncio.sleep(0.1)
    await w3.provider.make_request("hardhat_setBalance", [wallet.address, hex(10 * ETHER)])  # type: ignore[arg-type]
    await send_token(w3, token, wallet.address, 5_000_000)
    native_hash = await pay(custody, gateway, wallet.wallet_id, wallet.address, NATIVE, ETHER)
    token_hash = await pay(custody, gateway, wallet.wallet_id, wallet.address, TOKEN_ASSET, 1_250_000)
    for tx_hash in (native_hash, token_hash):
        receipt = await w3.eth.wait_for_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        assert receipt["status"] == 1 and receipt["from"] == wallet.address
    assert await w3.eth.get_balance(RECIPIENT) >= ETHER  # type: ignore[arg-type]
    contract = w3.eth.contract(address=AsyncWeb3.to_checksum_address(token.address), abi=token.abi)
    assert await contract.functions.balanceOf(RECIPIENT).call() >= 1_250_000


async def test_an_approved_cold_movement_is_built_signed_broadcast_and_confirmed(
    mesh: tuple[Custody, Gateway, AsyncWeb3[Any]],
) -> None:
    custody, _gateway, w3 = mesh
    suffix = uuid.uuid4().hex[:8]
    cold = await custody.create_wallet(
        f"cold-{suffix}", kind=resources.WALLET_KIND_COLD, required=2, chains=[CHAIN]
    )
    hot = await custody.create_wallet(f"hot-{suffix}", chains=[CHAIN])
    await w3.provider.make_request("hardhat_setBalance", [cold.address, hex(10 * ETHER)])  # type: ignore[arg-type]
    operator = custody.staff("operator-1", "operator")
    movement = (
        await custody.stub.CreateMovement(
            service.CreateMovementRequest(
                request_id=f"move-{suffix}",
                source_wallet_id=cold.wallet_id,
                destination_wallet_id=hot.wallet_id,
                chain=CHAIN,
                amount=money_pb2.Money(asset=NATIVE, amount=str(2 * ETHER)),
                reason="top-up",
                step_up_token="t",
            ),
            metadata=operator,
        )
    ).movement
    for approver in ("approver-a", "approver-b"):
        await custody.stub.ApproveMovement(
            service.ApproveMovementRequest(
                request_id=f"approve-{approver}-{suffix}", movement_id=movement.movement_id, step_up_token="t"
            ),
            metadata=custody.staff(approver, "approver"),
        )

    async def state() -> resources.Movement:
        request = service.GetMovementRequest(movement_id=movement.movement_id)
        return (await custody.stub.GetMovement(request, metadata=operator)).movement

    async with asyncio.timeout(60):
        while (current := await state()).state != resources.MOVEMENT_STATE_CONFIRMED:
            assert current.state in IN_FLIGHT, current
            await w3.provider.make_request("hardhat_mine", ["0x1"])  # type: ignore[arg-type]
            await asyncio.sleep(0.2)
    receipt = await w3.eth.get_transaction_receipt(current.tx_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1 and receipt["from"] == cold.address and receipt["to"] == hot.address
    paid = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert (current.network_fee.asset, current.network_fee.amount) == (NATIVE, str(paid))
    assert await w3.eth.get_balance(hot.address) == 2 * ETHER  # type: ignore[arg-type]
    records = await custody.stub.ListSignatureRecords(
        service.ListSignatureRecordsRequest(wallet_id=cold.wallet_id), metadata=custody.staff("a", "auditor")
    )
    assert [(r.caller, r.movement_id, r.tx_hash) for r in records.records] == [
        ("custody", movement.movement_id, current.tx_hash)
    ]
