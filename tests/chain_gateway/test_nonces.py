"""The nonce manager against a real Hardhat node: 100 concurrent builds from one address get 100
distinct consecutive nonces and are all mined; a stuck transaction (fee too low) is replaced at
the same nonce with a higher fee and mined."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
from eth_account import Account
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as service
from finmesh.events.v1 import chain_events_pb2
from web3 import AsyncWeb3

from tests.harness.hardhat import HardhatNode

from .conftest import (
    CHAIN,
    Gateway,
    Token,
    eventually,
    funded_account,
    hardhat_chain,
    mine,
    money,
    refused,
    request_id,
    sign,
    start_gateway,
)

NATIVE = f"{CHAIN}:ETH"
CONCURRENT_SENDS = 100


async def test_concurrent_builds_get_consecutive_nonces_and_all_are_mined(
    gateway: Gateway, web3: AsyncWeb3[Any], hardhat_node: HardhatNode
) -> None:
    sender = await funded_account(web3)
    recipient = Account.create().address

    async def build(index: int) -> service.BuildTransferResponse:
        return await gateway.stub.BuildTransfer(
            service.BuildTransferRequest(
                request_id=request_id(f"n{index}"),
                chain=CHAIN,
                from_address=sender.address,
                recipient=recipient,
                amount=money(NATIVE, index + 1),
            )
        )

    built = await asyncio.gather(*(build(index) for index in range(CONCURRENT_SENDS)))
    assert sorted(response.transaction.nonce for response in built) == list(range(CONCURRENT_SENDS))

    async def broadcast(response: service.BuildTransferResponse) -> service.BroadcastTransactionResponse:
        return await gateway.stub.BroadcastTransaction(
            service.BroadcastTransactionRequest(
                request_id=request_id(), chain=CHAIN, signed_transaction=sign(sender, response.transaction)
            )
        )

    # Broadcasts arrive in any nonce order: an automining Hardhat refuses a nonce above the next
    # one, so the node mines on an interval meanwhile (as a real chain does).
    hardhat_node.rpc("evm_setAutomine", [False])
    hardhat_node.rpc("evm_setIntervalMining", [200])
    try:
        sent = await asyncio.gather(*(broadcast(response) for response in built))
    finally:
        hardhat_node.rpc("evm_setIntervalMining", [0])
        hardhat_node.rpc("evm_setAutomine", [True])
    assert len({response.transaction.tx_hash for response in sent}) == CONCURRENT_SENDS
    await mine(web3, 1)

    async def all_mined() -> bool:
        listed = await gateway.stub.ListTransactions(
            service.ListTransactionsRequest(
                chain=CHAIN,
                from_address=sender.address,
                statuses=[resources.TRANSACTION_STATUS_MINED, resources.TRANSACTION_STATUS_CONFIRMED],
                page_size=CONCURRENT_SENDS,
            )
        )
        return len(listed.transactions) == CONCURRENT_SENDS

    await eventually(all_mined, timeout_s=60)
    assert (
        await web3.eth.get_transaction_count(AsyncWeb3.to_checksum_address(sender.address))
        == CONCURRENT_SENDS
    )
    assert await web3.eth.get_balance(AsyncWeb3.to_checksum_address(recipient)) == sum(
        range(1, CONCURRENT_SENDS + 1)
    )
    state = (
        await gateway.stub.GetNonceState(service.GetNonceStateRequest(chain=CHAIN, address=sender.address))
    ).nonce_state
    assert state.next_nonce == CONCURRENT_SENDS and state.chain_latest_nonce == CONCURRENT_SENDS
    assert state.reserved_count == 0 and not state.gap_nonces


async def test_stuck_transaction_is_replaced_with_a_higher_fee_and_mined(
    database_url: str, tmp_path: Path, hardhat_node: HardhatNode, token: Token, web3: AsyncWeb3[Any]
) -> None:
    chains = {CHAIN: hardhat_chain(hardhat_node.url, token, stuck_timeout_ms=1)}
    gateway = await start_gateway(database_url, tmp_path, chains)
    sender = await funded_account(web3)
    recipient = Account.create().address
    hardhat_node.rpc("evm_setAutomine", [False])
    try:
        # A fee of 1 wei per gas is below any base fee: the node keeps it but never mines it.
        built = await gateway.stub.BuildTransfer(
            service.BuildTransferRequest(
                request_id=request_id(),
                chain=CHAIN,
                from_address=sender.address,
                recipient=recipient,
                amount=money(NATIVE, 500),
                max_fee_per_gas="1",
            )
        )
        assert built.transaction.max_fee_per_gas == "1" and built.estimate.capped
        stuck = await gateway.stub.BroadcastTransaction(
            service.BroadcastTransactionRequest(
                request_id=request_id(), chain=CHAIN, signed_transaction=sign(sender, built.transaction)
            )
        )
        hardhat_node.rpc("evm_mine")
        stuck_hash = stuck.transaction.tx_hash
        state = (
            await gateway.stub.GetNonceState(
                service.GetNonceStateRequest(chain=CHAIN, address=sender.address)
            )
        ).nonce_state
        assert list(state.stuck_tx_hashes) == [stuck_hash] and state.chain_latest_nonce == 0

        replacement = await gateway.stub.ReplaceTransaction(
            service.ReplaceTransactionRequest(
                request_id=request_id(),
                chain=CHAIN,
                tx_hash=stuck_hash,
                mode=resources.REPLACEMENT_MODE_SPEED_UP,
            )
        )
        unsigned = replacement.transaction
        assert unsigned.nonce == built.transaction.nonce and unsigned.intent == built.transaction.intent
        assert int(unsigned.max_fee_per_gas) > 1 and int(unsigned.max_priority_fee_per_gas) >= 2
        sent = await gateway.stub.BroadcastTransaction(
            service.BroadcastTransactionRequest(
                request_id=request_id(), chain=CHAIN, signed_transaction=sign(sender, unsigned)
            )
        )
        assert sent.transaction.replaces_tx_hash == stuck_hash
        hardhat_node.rpc("evm_mine")

        async def replaced() -> bool:
            found = await gateway.stub.GetTransaction(
                service.GetTransactionRequest(chain=CHAIN, tx_hash=stuck_hash)
            )
            return found.transaction.status == resources.TRANSACTION_STATUS_REPLACED

        await eventually(replaced)
        original = (
            await gateway.stub.GetTransaction(service.GetTransactionRequest(chain=CHAIN, tx_hash=stuck_hash))
        ).transaction
        assert original.replaced_by_tx_hash == sent.transaction.tx_hash
        mined = (
            await gateway.stub.GetTransaction(
                service.GetTransactionRequest(chain=CHAIN, tx_hash=sent.transaction.tx_hash)
            )
        ).transaction
        assert mined.status in (resources.TRANSACTION_STATUS_MINED, resources.TRANSACTION_STATUS_CONFIRMED)
        assert await web3.eth.get_balance(AsyncWeb3.to_checksum_address(recipient)) == 500  # paid once
        events = await gateway.events(chain_events_pb2.ChainTransactionReplaced)
        assert [event.transaction.tx_hash for event in events] == [stuck_hash]
        # A mined transaction is not replaced.
        await refused(
            gateway.stub.ReplaceTransaction(
                service.ReplaceTransactionRequest(
                    request_id=request_id(),
                    chain=CHAIN,
                    tx_hash=mined.tx_hash,
                    mode=resources.REPLACEMENT_MODE_CANCEL,
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "INVALID_STATE",
        )
    finally:
        hardhat_node.rpc("evm_setAutomine", [True])
        await gateway.stop()


async def test_a_stuck_transfer_is_cancelled_by_a_zero_value_replacement(
    gateway: Gateway, web3: AsyncWeb3[Any], hardhat_node: HardhatNode
) -> None:
    sender = await funded_account(web3)
    recipient = Account.create().address
    hardhat_node.rpc("evm_setAutomine", [False])
    try:
        built = await gateway.stub.BuildTransfer(
            service.BuildTransferRequest(
                request_id=request_id(),
                chain=CHAIN,
                from_address=sender.address,
                recipient=recipient,
                amount=money(NATIVE, 900),
                max_fee_per_gas="1",
            )
        )
        stuck = await gateway.stub.BroadcastTransaction(
            service.BroadcastTransactionRequest(
                request_id=request_id(), chain=CHAIN, signed_transaction=sign(sender, built.transaction)
            )
        )
        hardhat_node.rpc("evm_mine")
        cancel = await gateway.stub.ReplaceTransaction(
            service.ReplaceTransactionRequest(
                request_id=request_id(),
                chain=CHAIN,
                tx_hash=stuck.transaction.tx_hash,
                mode=resources.REPLACEMENT_MODE_CANCEL,
            )
        )
        unsigned = cancel.transaction
        assert unsigned.nonce == built.transaction.nonce and unsigned.value == "0"
        assert unsigned.to_address == sender.address.lower() and unsigned.gas_limit == 21_000
        sent = await gateway.stub.BroadcastTransaction(
            service.BroadcastTransactionRequest(
                request_id=request_id(), chain=CHAIN, signed_transaction=sign(sender, unsigned)
            )
        )
        hardhat_node.rpc("evm_mine")

        async def cancelled() -> bool:
            found = await gateway.stub.GetTransaction(
                service.GetTransactionRequest(chain=CHAIN, tx_hash=stuck.transaction.tx_hash)
            )
            return found.transaction.status == resources.TRANSACTION_STATUS_REPLACED

        await eventually(cancelled)
        assert await web3.eth.get_balance(AsyncWeb3.to_checksum_address(recipient)) == 0  # never paid
        mined = (
            await gateway.stub.GetTransaction(
                service.GetTransactionRequest(chain=CHAIN, tx_hash=sent.transaction.tx_hash)
            )
        ).transaction
        assert mined.replaces_tx_hash == stuck.transaction.tx_hash and mined.intent.amount.amount == "0"
    finally:
        hardhat_node.rpc("evm_setAutomine", [True])
