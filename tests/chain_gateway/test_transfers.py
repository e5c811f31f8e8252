"""Native and ERC-20 transfers built by the gateway, signed with a local key (custody signs in
production), broadcast, tracked to confirmation; balances at a block; refusals."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from eth_account import Account
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as service
from finmesh.events.v1 import chain_events_pb2
from web3 import AsyncWeb3

from .conftest import (
    CHAIN,
    DEPTH,
    TOKEN_SYMBOL,
    Gateway,
    Token,
    build_sign_broadcast,
    eventually,
    funded_account,
    mine,
    money,
    refused,
    request_id,
    send_token,
    sign,
)

NATIVE = f"{CHAIN}:ETH"
TOKEN = f"{CHAIN}:{TOKEN_SYMBOL}"


async def _status(gateway: Gateway, tx_hash: str) -> resources.Transaction:
    response = await gateway.stub.GetTransaction(service.GetTransactionRequest(chain=CHAIN, tx_hash=tx_hash))
    return response.transaction


async def _wait_status(gateway: Gateway, tx_hash: str, status: int) -> resources.Transaction:
    async def reached() -> bool:
        return (await _status(gateway, tx_hash)).status == status

    await eventually(reached)
    return await _status(gateway, tx_hash)


@pytest.mark.embedded
async def test_native_transfer_is_built_broadcast_and_confirmed(
    gateway: Gateway, web3: AsyncWeb3[Any]
) -> None:
    sender = await funded_account(web3)
    recipient = Account.create().address
    built, sent = await build_sign_broadcast(gateway, sender, recipient, NATIVE, 12345)
    unsigned = built.transaction
    assert unsigned.nonce == 0 and unsigned.type == resources.TRANSACTION_TYPE_EIP1559
    assert unsigned.to_address == recipient.lower() and unsigned.value == "12345" and unsigned.data == "0x"
    # The node's estimate (Hardhat says 21,001 for a plain transfer) plus the 20% margin, rounded
    # up; the fee per gas is under the cap.
    estimated = built.estimate.estimated_gas
    assert 21_000 <= estimated <= 21_001 and unsigned.gas_limit == -(-estimated * 12 // 10)
    assert int(unsigned.max_fee_per_gas) <= 500 * 10**9
    assert sent.transaction.status == resources.TRANSACTION_STATUS_PENDING and not sent.already_known

    mined = await _wait_status(gateway, sent.transaction.tx_hash, resources.TRANSACTION_STATUS_MINED)
    assert mined.confirmations >= 1 and mined.gas_used == 21_000
    assert await web3.eth.get_balance(AsyncWeb3.to_checksum_address(recipient)) == 12345
    await mine(web3, DEPTH)
    confirmed = await _wait_status(gateway, sent.transaction.tx_hash, resources.TRANSACTION_STATUS_CONFIRMED)
    assert confirmed.confirmations >= DEPTH and confirmed.network_fee.amount == str(
        21_000 * int(confirmed.effective_gas_price)
    )
    events = await gateway.events(chain_events_pb2.ChainTransactionConfirmed)
    assert [event.transaction.tx_hash for event in events] == [sent.transaction.tx_hash]

    # At the follower's confirmed block (the newest at depth), once it has caught up.
    head = await web3.eth.block_number

    async def caught_up() -> bool:
        status = await gateway.stub.GetFollowerStatus(service.GetFollowerStatusRequest(chain=CHAIN))
        return status.status.last_block_number == head

    await eventually(caught_up)
    at_depth = await gateway.stub.GetBalance(
        service.GetBalanceRequest(
            chain=CHAIN,
            query=service.BalanceQuery(address=recipient, asset=NATIVE),
            block=service.BlockSelector(confirmed=True),
        )
    )
    assert at_depth.balance.block_number == head - DEPTH + 1 and at_depth.balance.amount.amount == "12345"
    # The balance at the block that mined it, and at the block before.
    for number, expected in ((mined.block_number, 12345), (mined.block_number - 1, 0)):
        balance = await gateway.stub.GetBalance(
            service.GetBalanceRequest(
                chain=CHAIN,
                query=service.BalanceQuery(address=recipient, asset=NATIVE),
                block=service.BlockSelector(number=number),
            )
        )
        assert balance.balance.amount.amount == str(expected) and balance.balance.block_number == number


async def test_broadcast_is_idempotent_by_hash_and_only_for_what_was_built(
    gateway: Gateway, web3: AsyncWeb3[Any]
) -> None:
    sender = await funded_account(web3)
    recipient = Account.create().address
    built = await gateway.stub.BuildTransfer(
        service.BuildTransferRequest(
            request_id=request_id(),
            chain=CHAIN,
            from_address=sender.address,
            recipient=recipient,
            amount=money(NATIVE, 7),
        )
    )
    # Tampered: the same nonce with another amount or recipient is not the built transaction.
    for change in ({"value": 8}, {"to": AsyncWeb3.to_checksum_address(Account.create().address)}):
        tampered = sign(sender, built.transaction, **change)
        await refused(
            gateway.stub.BroadcastTransaction(
                service.BroadcastTransactionRequest(
                    request_id=request_id(), chain=CHAIN, signed_transaction=tampered
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "INVALID_STATE",
        )
    signed = sign(sender, built.transaction)
    first = await gateway.stub.BroadcastTransaction(
        service.BroadcastTransactionRequest(request_id=request_id(), chain=CHAIN, signed_transaction=signed)
    )
    again = await gateway.stub.BroadcastTransaction(
        service.BroadcastTransactionRequest(request_id=request_id(), chain=CHAIN, signed_transaction=signed)
    )
    assert not first.already_known and again.already_known
    assert again.transaction.tx_hash == first.transaction.tx_hash
    broadcasts = await gateway.events(chain_events_pb2.ChainTransactionBroadcast)
    assert [event.transaction.tx_hash for event in broadcasts] == [first.transaction.tx_hash]
    # A nonce already broadcast cannot be released.
    await refused(
        gateway.stub.ReleaseNonce(
            service.ReleaseNonceRequest(
                request_id=request_id(), reservation_id=built.reservation.reservation_id
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    # Signed for another chain id.
    other_chain = sign(sender, built.transaction, chainId=1)
    await refused(
        gateway.stub.BroadcastTransaction(
            service.BroadcastTransactionRequest(
                request_id=request_id(), chain=CHAIN, signed_transaction=other_chain
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_build_is_idempotent_and_released_nonces_are_reused(
    gateway: Gateway, web3: AsyncWeb3[Any]
) -> None:
    sender = await funded_account(web3)
    recipient = Account.create().address
    request = service.BuildTransferRequest(
        request_id=request_id(),
        chain=CHAIN,
        from_address=sender.address,
        recipient=recipient,
        amount=money(NATIVE, 1),
    )
    first = await gateway.stub.BuildTransfer(request)
    repeat = await gateway.stub.BuildTransfer(request)
    assert repeat == first and first.transaction.nonce == 0
    second = await gateway.stub.BuildTransfer(
        service.BuildTransferRequest(
            request_id=request_id(),
            chain=CHAIN,
            from_address=sender.address,
            recipient=recipient,
            amount=money(NATIVE, 2),
        )
    )
    assert second.transaction.nonce == 1
    released = await gateway.stub.ReleaseNonce(
        service.ReleaseNonceRequest(
            request_id=request_id(), reservation_id=first.reservation.reservation_id, reason="custody refused"
        )
    )
    assert released.reservation.state == resources.NONCE_RESERVATION_STATE_RELEASED
    state = await gateway.stub.GetNonceState(
        service.GetNonceStateRequest(chain=CHAIN, address=sender.address)
    )
    assert list(state.nonce_state.gap_nonces) == [0] and state.nonce_state.next_nonce == 0
    assert state.nonce_state.reserved_count == 1
    third = await gateway.stub.BuildTransfer(
        service.BuildTransferRequest(
            request_id=request_id(),
            chain=CHAIN,
            from_address=sender.address,
            recipient=recipient,
            amount=money(NATIVE, 3),
        )
    )
    assert third.transaction.nonce == 0
    # The same request_id with another request is refused.
    changed = service.BuildTransferRequest()
    changed.CopyFrom(request)
    changed.amount.amount = "99"
    await refused(
        gateway.stub.BuildTransfer(changed), grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED"
    )


async def test_erc20_transfer_and_token_balances(
    gateway: Gateway, web3: AsyncWeb3[Any], token: Token
) -> None:
    sender = await funded_account(web3)
    await send_token(web3, token, sender.address, 5_000)
    recipient = Account.create().address
    built, sent = await build_sign_broadcast(gateway, sender, recipient, TOKEN, 1_250)
    unsigned = built.transaction
    assert unsigned.to_address == token.address and unsigned.value == "0"
    assert unsigned.data.startswith("0xa9059cbb") and unsigned.intent.recipient == recipient.lower()
    assert unsigned.intent.kind == resources.TRANSFER_KIND_ERC20 and unsigned.intent.amount.amount == "1250"
    mined = await _wait_status(gateway, sent.transaction.tx_hash, resources.TRANSACTION_STATUS_MINED)
    balances = await gateway.stub.BatchGetBalances(
        service.BatchGetBalancesRequest(
            chain=CHAIN,
            queries=[
                service.BalanceQuery(address=recipient, asset=TOKEN),
                service.BalanceQuery(address=sender.address, asset=TOKEN),
            ],
            block=service.BlockSelector(number=mined.block_number),
        )
    )
    assert [balance.amount.amount for balance in balances.balances] == ["1250", "3750"]
    assert balances.block_number == mined.block_number
    # More than the sender holds: the node cannot estimate it.
    await refused(
        gateway.stub.EstimateGas(
            service.EstimateGasRequest(
                chain=CHAIN, from_address=sender.address, recipient=recipient, amount=money(TOKEN, 10**9)
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_FUNDS",
    )


async def test_bad_requests_are_refused_precisely(gateway: Gateway, web3: AsyncWeb3[Any]) -> None:
    sender = await funded_account(web3)
    await refused(
        gateway.stub.BuildTransfer(
            service.BuildTransferRequest(
                request_id=request_id(),
                chain=CHAIN,
                from_address="0x12",
                recipient=sender.address,
                amount=money(NATIVE, 1),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        gateway.stub.BuildTransfer(
            service.BuildTransferRequest(
                request_id=request_id(),
                chain=CHAIN,
                from_address=sender.address,
                recipient=sender.address,
                amount=money(f"{CHAIN}:XYZ", 1),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        gateway.stub.BuildTransfer(
            service.BuildTransferRequest(
                request_id=request_id(),
                chain=CHAIN,
                from_address=sender.address,
                recipient=sender.address,
                amount=money("ethereum:ETH", 1),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        gateway.stub.GetChain(service.GetChainRequest(chain="nowhere")),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    await refused(
        gateway.stub.GetTransaction(service.GetTransactionRequest(chain=CHAIN, tx_hash="0x" + "ab" * 32)),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    await refused(
        gateway.stub.BroadcastTransaction(
            service.BroadcastTransactionRequest(
                request_id=request_id(), chain=CHAIN, signed_transaction="0x0102"
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
