"""The provider layer: failover when the network path to the primary is cut (its open connections
severed, the node itself still running) and its return to rotation, a lagging provider taken out of
rotation, and the embedded in-process EVM that `make run` uses by default. A primary node whose
process stops and restarts, with a second node as the fallback, is test_failover.py."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import grpc
import pytest
from eth_account import Account
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as service
from finmesh.events.v1 import chain_events_pb2
from web3 import AsyncWeb3

from svc.chain_gateway import dev_token, rpc
from svc.chain_gateway.config import EMBEDDED_FUNDING_KEY, EMBEDDED_TOKEN, ProviderConfig, ProviderRole
from tests.harness.hardhat import HardhatNode
from tests.harness.process import free_port

from .conftest import (
    CHAIN,
    Gateway,
    Token,
    build_sign_broadcast,
    eventually,
    funded_account,
    hardhat_chain,
    money,
    refused,
    request_id,
    start_gateway,
)

NATIVE = f"{CHAIN}:ETH"


class CuttableLink:
    """A loopback TCP relay to the node: `cut()` closes it and every open connection (the
    provider's endpoint goes away), `restore()` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((writer, upstream_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def _providers(gateway: Gateway) -> dict[str, resources.Provider]:
    response = await gateway.stub.ListProviders(service.ListProvidersRequest(chain=CHAIN))
    return {provider.name: provider for provider in response.providers}


async def test_failover_when_the_path_to_the_primary_is_cut_and_back(
    database_url: str, tmp_path: Path, hardhat_node: HardhatNode, token: Token, web3: AsyncWeb3[Any]
) -> None:
    assert hardhat_node.port is not None
    link = CuttableLink(hardhat_node.port)
    await link.restore()
    providers = (
        ProviderConfig(
            name="primary", role=ProviderRole.PRIMARY, priority=0, endpoint=link.url, timeout_ms=2_000
        ),
        ProviderConfig(name="fallback", role=ProviderRole.FALLBACK, priority=1, endpoint=hardhat_node.url),
    )
    gateway = await start_gateway(
        database_url, tmp_path, {CHAIN: hardhat_chain(hardhat_node.url, token, providers=providers)}
    )
    try:
        listed = await _providers(gateway)
        assert [listed[name].in_rotation for name in ("primary", "fallback")] == [True, True]
        assert listed["primary"].redacted_endpoint == link.url
        sender = await funded_account(web3)
        recipient = Account.create().address
        await build_sign_broadcast(gateway, sender, recipient, NATIVE, 1)

        await link.cut()
        # Calls go on through the fallback while the primary is away.
        for amount in (2, 3):
            await build_sign_broadcast(gateway, sender, recipient, NATIVE, amount)
        listed = await _providers(gateway)
        assert (
            listed["primary"].health == resources.PROVIDER_HEALTH_UNREACHABLE
            and not listed["primary"].in_rotation
        )
        assert listed["primary"].last_error and listed["fallback"].in_rotation
        assert await web3.eth.get_balance(AsyncWeb3.to_checksum_address(recipient)) == 6

        await link.restore()

        async def rejoined() -> bool:
            return (await _providers(gateway))["primary"].in_rotation

        await eventually(rejoined)
        changes = await gateway.events(chain_events_pb2.ChainProviderHealthChanged)
        primary = [(e.previous_health, e.provider.health) for e in changes if e.provider.name == "primary"]
        assert (resources.PROVIDER_HEALTH_HEALTHY, resources.PROVIDER_HEALTH_UNREACHABLE) in primary
        assert primary[-1] == (resources.PROVIDER_HEALTH_UNREACHABLE, resources.PROVIDER_HEALTH_HEALTHY)
    finally:
        await gateway.stop()
        await link.cut()


async def test_a_lagging_or_disagreeing_provider_leaves_rotation(
    database_url: str, tmp_path: Path, hardhat_node: HardhatNode, token: Token
) -> None:
    # A second, fresh node on the same chain id: at block 0, far behind the shared node.
    behind = HardhatNode(chain_id=hardhat_node.chain_id)
    behind.start()
    hardhat_node.rpc("hardhat_mine", [hex(5)])
    assert hardhat_node.port is not None
    link = CuttableLink(hardhat_node.port)
    await link.restore()
    try:
        providers = (
            ProviderConfig(name="behind", priority=0, endpoint=behind.url),
            ProviderConfig(name="main", role=ProviderRole.FALLBACK, priority=1, endpoint=hardhat_node.url),
            ProviderConfig(name="own", role=ProviderRole.SELF_HOSTED, priority=2, endpoint=link.url),
        )
        gateway = await start_gateway(
            database_url,
            tmp_path,
            {CHAIN: hardhat_chain(hardhat_node.url, token, providers=providers, lag_blocks_max=2)},
        )
        try:
            listed = await _providers(gateway)
            assert (
                listed["behind"].health == resources.PROVIDER_HEALTH_LAGGING
                and not listed["behind"].in_rotation
            )
            assert listed["behind"].lag_blocks > 2 and listed["main"].in_rotation
            head = await gateway.stub.GetBalance(
                service.GetBalanceRequest(
                    chain=CHAIN,
                    query=service.BalanceQuery(address=Account.create().address, asset=NATIVE),
                    block=service.BlockSelector(latest=True),
                )
            )
            assert head.balance.block_number == listed["main"].head_block_number

            # Caught up in height, but on a chain of its own: its block hashes disagree with the
            # two providers that share the main node, the majority.
            behind.rpc("hardhat_mine", [hex(listed["main"].head_block_number)])

            async def disagreeing() -> bool:
                return (await _providers(gateway))["behind"].health == resources.PROVIDER_HEALTH_DISAGREEING

            await eventually(disagreeing)
            listed = await _providers(gateway)
            assert (
                not listed["behind"].in_rotation and listed["main"].in_rotation and listed["own"].in_rotation
            )
        finally:
            await gateway.stop()
    finally:
        await link.cut()
        behind.close()


@pytest.mark.embedded
async def test_embedded_evm_default(database_url: str, tmp_path: Path) -> None:
    """The defaults: the public chains configured but DISABLED, and `local`, the in-process EVM,
    with the development token in the funding account from block 1, paid out by dev transfers."""
    gateway = await start_gateway(database_url, tmp_path)
    try:
        chains = await gateway.stub.ListChains(service.ListChainsRequest(include_disabled=True))
        by_key = {chain.chain: chain for chain in chains.chains}
        assert {key: by_key[key].chain_id for key in ("ethereum", "bsc", "polygon", "arbitrum")} == {
            "ethereum": 1,
            "bsc": 56,
            "polygon": 137,
            "arbitrum": 42161,
        }
        assert by_key["bsc"].gas_model == resources.GAS_MODEL_LEGACY
        assert by_key["ethereum"].gas_model == resources.GAS_MODEL_EIP1559
        assert by_key["ethereum"].status == resources.CHAIN_STATUS_DISABLED
        enabled = await gateway.stub.ListChains(service.ListChainsRequest())
        assert [chain.chain for chain in enabled.chains] == ["local"]
        token = f"local:{EMBEDDED_TOKEN.symbol}"
        assert [(asset.id, asset.decimals, asset.contract_address) for asset in by_key["local"].tokens] == [
            (token, 6, EMBEDDED_TOKEN.contract)
        ]
        # The chain lives as long as the process (earlier tests may have paid from it): block 1.
        funded = Account.from_key(EMBEDDED_FUNDING_KEY)
        supply = await gateway.stub.GetBalance(
            service.GetBalanceRequest(
                chain="local",
                query=service.BalanceQuery(address=funded.address, asset=token),
                block=service.BlockSelector(number=1),
            )
        )
        assert supply.balance.amount.amount == str(dev_token.SUPPLY)

        watched = Account.create().address
        await gateway.stub.CreateWatchedAddress(
            service.CreateWatchedAddressRequest(
                request_id=request_id(), chain="local", address=watched, owner="deposit"
            )
        )
        sent_in = [
            await gateway.stub.CreateDevTransfer(
                service.CreateDevTransferRequest(
                    request_id=request_id(), chain="local", recipient=watched, amount=money(asset, amount)
                )
            )
            for asset, amount in (("local:ETH", 10**18), (token, 250 * 10**6))
        ]

        async def seen() -> bool:
            listed = await gateway.stub.ListTransfers(
                service.ListTransfersRequest(chain="local", to_address=watched)
            )
            return [
                (transfer.tx_hash, transfer.asset, transfer.amount, transfer.token_contract)
                for transfer in listed.transfers
            ] == [
                (sent_in[0].transaction.tx_hash, "local:ETH", str(10**18), ""),
                (sent_in[1].transaction.tx_hash, token, str(250 * 10**6), EMBEDDED_TOKEN.contract),
            ]

        await eventually(seen)
        # A transfer built by the gateway and signed with the funded key, from the watched address.
        recipient = Account.create().address
        built, sent = await build_sign_broadcast(gateway, funded, recipient, "local:ETH", 5, chain="local")
        assert built.transaction.chain_id == 131277322940537

        async def mined() -> bool:
            found = await gateway.stub.GetTransaction(
                service.GetTransactionRequest(chain="local", tx_hash=sent.transaction.tx_hash)
            )
            return found.transaction.status == resources.TRANSACTION_STATUS_MINED

        await eventually(mined)
        balance = await gateway.stub.GetBalance(
            service.GetBalanceRequest(
                chain="local",
                query=service.BalanceQuery(address=recipient, asset="local:ETH"),
                block=service.BlockSelector(latest=True),
            )
        )
        assert balance.balance.amount.amount == "5"
        # Like a JSON-RPC node, the embedded EVM estimates a token transfer from an address that
        # holds no gas yet (a deposit address before its top-up)...
        estimate = await gateway.stub.EstimateGas(
            service.EstimateGasRequest(
                chain="local", from_address=watched, recipient=recipient, amount=money(token, 10**6)
            )
        )
        assert estimate.estimate.gas_limit > 21_000
        # ...and what it refuses is the node's refusal, never an INTERNAL error.
        await refused(
            gateway.stub.EstimateGas(
                service.EstimateGasRequest(
                    chain="local", from_address=watched, recipient=recipient, amount=money(token, 10**15)
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "INSUFFICIENT_FUNDS",
        )
    finally:
        await gateway.stop()


@pytest.mark.embedded
async def test_a_restarted_embedded_chain_is_followed_afresh(database_url: str, tmp_path: Path) -> None:
    """The embedded EVM lives in the process: after a restart it is a new, empty chain, while the
    database remembers the old one. The gateway recognises it by its genesis and starts over."""
    watched = Account.create().address
    first = await start_gateway(database_url, tmp_path)
    try:
        await first.stub.CreateWatchedAddress(
            service.CreateWatchedAddressRequest(
                request_id=request_id(), chain="local", address=watched, owner="deposit"
            )
        )
        old = await first.stub.CreateDevTransfer(
            service.CreateDevTransferRequest(
                request_id=request_id(), chain="local", recipient=watched, amount=money("local:ETH", 1)
            )
        )

        async def seen() -> bool:
            listed = await first.stub.ListTransfers(
                service.ListTransfersRequest(chain="local", to_address=watched)
            )
            return len(listed.transfers) == 1

        await eventually(seen)
    finally:
        await first.stop()
    rpc._embedded.clear()  # what a restart of the process does to the in-process chain
    second = await start_gateway(database_url, tmp_path)
    try:
        new = await second.stub.CreateDevTransfer(
            service.CreateDevTransferRequest(
                request_id=request_id(), chain="local", recipient=watched, amount=money("local:ETH", 2)
            )
        )
        # Nonces of the old chain are forgotten: nonce 0 of the new one deployed its token.
        assert new.transaction.nonce == 1
        forgotten = await second.stub.GetTransaction(
            service.GetTransactionRequest(chain="local", tx_hash=old.transaction.tx_hash)
        )
        assert forgotten.transaction.status == resources.TRANSACTION_STATUS_DROPPED
        assert forgotten.transaction.failure_message == "development chain reset"
        status = (await second.stub.GetFollowerStatus(service.GetFollowerStatusRequest(chain="local"))).status
        assert status.state != resources.FOLLOWER_STATE_STALLED
        listed = await second.stub.ListTransfers(service.ListTransfersRequest(chain="local"))
        assert listed.transfers == []  # the old chain's transfers went with it; the address is not watched
    finally:
        await second.stop()
