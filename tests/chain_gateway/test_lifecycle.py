"""Transaction and reservation life cycles on a real Hardhat node: the legacy gas model (as on
BSC), a READ_ONLY chain, a reverted transfer (FAILED at depth), a dropped transaction that the
gateway rebroadcasts, and an expired reservation reported as a nonce gap and filled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from eth_account import Account
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as service
from finmesh.events.v1 import chain_events_pb2
from web3 import AsyncWeb3

from svc.chain_gateway.config import ChainStatus, GasModel
from tests.harness.hardhat import HardhatNode

from .conftest import (
    CHAIN,
    DEPTH,
    TOKEN_SYMBOL,
    Gateway,
    Token,
    build_sign_broadcast,
    eventually,
    funded_account,
    hardhat_chain,
    mine,
    money,
    refused,
    request_id,
    send_token,
    sign,
    start_gateway,
)

LEGACY = "hardhat-legacy"
READ_ONLY = "hardhat-ro"
SHORT = "hardhat-short"
NATIVE = f"{CHAIN}:ETH"


@pytest.fixture
async def lifecycle(
    database_url: str, tmp_path: Path, hardhat_node: HardhatNode, token: Token
) -> AsyncIterator[Gateway]:
    """Four chains over the one node: the test chain with a short drop timeout, the same chain
    priced the legacy way, a READ_ONLY one, and one whose reservations expire after 1.5 s."""
    chains = {
        CHAIN: hardhat_chain(hardhat_node.url, token, drop_timeout_ms=1),
        SHORT: hardhat_chain(hardhat_node.url, token, reservation_timeout_ms=1_500),
        LEGACY: hardhat_chain(hardhat_node.url, token, gas_model=GasModel.LEGACY),
        READ_ONLY: hardhat_chain(hardhat_node.url, token, status=ChainStatus.READ_ONLY),
    }
    running = await start_gateway(database_url, tmp_path, chains)
    yield running
    await running.stop()


async def _transaction(gateway: Gateway, chain: str, tx_hash: str) -> resources.Transaction:
    response = await gateway.stub.GetTransaction(service.GetTransactionRequest(chain=chain, tx_hash=tx_hash))
    return response.transaction


async def _reaches(gateway: Gateway, chain: str, tx_hash: str, statuses: set[int]) -> resources.Transaction:
    async def reached() -> bool:
        return (await _transaction(gateway, chain, tx_hash)).status in statuses

    await eventually(reached)
    return await _transaction(gateway, chain, tx_hash)


async def test_legacy_gas_model_builds_type_0_transactions(lifecycle: Gateway, web3: AsyncWeb3[Any]) -> None:
    sender = await funded_account(web3)
    recipient = Account.create().address
    built, sent = await build_sign_broadcast(lifecycle, sender, recipient, f"{LEGACY}:ETH", 99, chain=LEGACY)
    unsigned = built.transaction
    assert (
        unsigned.type == resources.TRANSACTION_TYPE_LEGACY
        and unsigned.gas_price
        and not unsigned.max_fee_per_gas
    )
    assert (
        built.estimate.gas_model == resources.GAS_MODEL_LEGACY
        and built.estimate.gas_price == unsigned.gas_price
    )
    mined = await _reaches(lifecycle, LEGACY, sent.transaction.tx_hash, {resources.TRANSACTION_STATUS_MINED})
    assert mined.type == resources.TRANSACTION_TYPE_LEGACY and mined.effective_gas_price == unsigned.gas_price
    chain = (await lifecycle.stub.GetChain(service.GetChainRequest(chain=LEGACY))).chain
    assert chain.gas_model == resources.GAS_MODEL_LEGACY


async def test_read_only_chain_reads_but_never_builds(lifecycle: Gateway, web3: AsyncWeb3[Any]) -> None:
    sender = await funded_account(web3, ether=3)
    await refused(
        lifecycle.stub.BuildTransfer(
            service.BuildTransferRequest(
                request_id=request_id(),
                chain=READ_ONLY,
                from_address=sender.address,
                recipient=sender.address,
                amount=money(f"{READ_ONLY}:ETH", 1),
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FEATURE_DISABLED",
    )
    balance = await lifecycle.stub.GetBalance(
        service.GetBalanceRequest(
            chain=READ_ONLY,
            query=service.BalanceQuery(address=sender.address, asset=f"{READ_ONLY}:ETH"),
            block=service.BlockSelector(latest=True),
        )
    )
    assert balance.balance.amount.amount == str(3 * 10**18)


async def test_a_reverted_transfer_is_failed_at_depth(
    lifecycle: Gateway, web3: AsyncWeb3[Any], token: Token
) -> None:
    sender = await funded_account(web3)
    await send_token(web3, token, sender.address, 100)
    recipient = Account.create().address
    asset = f"{CHAIN}:{TOKEN_SYMBOL}"
    # Both estimates see 100 tokens; once the first is mined the second has nothing to send.
    built = [
        await lifecycle.stub.BuildTransfer(
            service.BuildTransferRequest(
                request_id=request_id(),
                chain=CHAIN,
                from_address=sender.address,
                recipient=recipient,
                amount=money(asset, 100),
            )
        )
        for _ in range(2)
    ]
    sent = [
        await lifecycle.stub.BroadcastTransaction(
            service.BroadcastTransactionRequest(
                request_id=request_id(), chain=CHAIN, signed_transaction=sign(sender, response.transaction)
            )
        )
        for response in built
    ]
    await mine(web3, DEPTH)
    good = await _reaches(
        lifecycle, CHAIN, sent[0].transaction.tx_hash, {resources.TRANSACTION_STATUS_CONFIRMED}
    )
    failed = await _reaches(
        lifecycle, CHAIN, sent[1].transaction.tx_hash, {resources.TRANSACTION_STATUS_FAILED}
    )
    assert good.gas_used > 0 and failed.gas_used > 0 and failed.failure_message == "reverted"

    async def announced() -> bool:
        return len(await lifecycle.events(chain_events_pb2.ChainTransactionFailed)) == 1

    await eventually(announced)
    event = (await lifecycle.events(chain_events_pb2.ChainTransactionFailed))[0]
    assert event.transaction.tx_hash == failed.tx_hash and event.transaction.network_fee.amount != "0"


async def test_a_dropped_transaction_is_rebroadcast_and_mined(
    lifecycle: Gateway, web3: AsyncWeb3[Any], hardhat_node: HardhatNode
) -> None:
    sender = await funded_account(web3)
    recipient = Account.create().address
    hardhat_node.rpc("evm_setAutomine", [False])
    try:
        _, sent = await build_sign_broadcast(lifecycle, sender, recipient, NATIVE, 31)
        tx_hash = sent.transaction.tx_hash
        assert hardhat_node.rpc("hardhat_dropTransaction", [tx_hash]) is True

        async def dropped_and_back() -> bool:
            dropped = await lifecycle.events(chain_events_pb2.ChainTransactionDropped)
            current = await _transaction(lifecycle, CHAIN, tx_hash)
            return bool(dropped) and current.status == resources.TRANSACTION_STATUS_PENDING

        await eventually(dropped_and_back)
        assert hardhat_node.rpc("eth_getTransactionByHash", [tx_hash]) is not None
    finally:
        hardhat_node.rpc("evm_setAutomine", [True])
    await mine(web3, 1)
    await _reaches(
        lifecycle,
        CHAIN,
        tx_hash,
        {resources.TRANSACTION_STATUS_MINED, resources.TRANSACTION_STATUS_CONFIRMED},
    )
    assert await web3.eth.get_balance(AsyncWeb3.to_checksum_address(recipient)) == 31


async def test_an_expired_reservation_is_a_gap_and_is_filled(
    lifecycle: Gateway, web3: AsyncWeb3[Any]
) -> None:
    sender = await funded_account(web3)
    recipient = Account.create().address
    abandoned = await lifecycle.stub.BuildTransfer(
        service.BuildTransferRequest(
            request_id=request_id(),
            chain=SHORT,
            from_address=sender.address,
            recipient=recipient,
            amount=money(f"{SHORT}:ETH", 1),
        )
    )
    assert abandoned.transaction.nonce == 0

    async def gap_reported() -> bool:
        events = await lifecycle.events(chain_events_pb2.ChainNonceGapDetected)
        return any(event.nonce_state.address == sender.address.lower() for event in events)

    await eventually(gap_reported)
    events = [
        event
        for event in await lifecycle.events(chain_events_pb2.ChainNonceGapDetected)
        if event.nonce_state.address == sender.address.lower()
    ]
    assert list(events[0].gap_nonces) == [0]
    state = (
        await lifecycle.stub.GetNonceState(service.GetNonceStateRequest(chain=SHORT, address=sender.address))
    ).nonce_state
    assert list(state.gap_nonces) == [0] and state.next_nonce == 0 and state.reserved_count == 0
    # The next build takes the gap's nonce, and the abandoned one can no longer be broadcast.
    _, sent = await build_sign_broadcast(lifecycle, sender, recipient, f"{SHORT}:ETH", 2, chain=SHORT)
    assert sent.transaction.nonce == 0
    await refused(
        lifecycle.stub.BroadcastTransaction(
            service.BroadcastTransactionRequest(
                request_id=request_id(), chain=SHORT, signed_transaction=sign(sender, abandoned.transaction)
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
