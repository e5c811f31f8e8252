"""The block follower against a real Hardhat node: native and ERC-20 transfers to watched
addresses, confirmation at depth, a real reorganisation (evm_snapshot / evm_revert), and a
restart that neither misses nor repeats an event."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as service
from finmesh.events.v1 import chain_events_pb2
from web3 import AsyncWeb3

from tests.harness.hardhat import HardhatNode

from .conftest import (
    CHAIN,
    DEPTH,
    TOKEN_SYMBOL,
    Gateway,
    Token,
    eventually,
    funded_account,
    hardhat_chain,
    mine,
    refused,
    request_id,
    send_token,
    start_gateway,
)

NATIVE = f"{CHAIN}:ETH"


async def _watch(gateway: Gateway, address: str) -> resources.WatchedAddress:
    response = await gateway.stub.CreateWatchedAddress(
        service.CreateWatchedAddressRequest(
            request_id=request_id("watch"), chain=CHAIN, address=address, owner="deposit", reference="w-1"
        )
    )
    return response.watched_address


async def _send_native(
    w3: AsyncWeb3[Any], sender: LocalAccount, recipient: str, amount: int
) -> tuple[str, bytes]:
    """A plain transfer sent outside the gateway (a deposit from the outside world)."""
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
    await w3.eth.send_raw_transaction(raw)
    return "0x" + bytes(signed.hash).hex(), raw


async def _caught_up(gateway: Gateway, w3: AsyncWeb3[Any]) -> None:
    head = await w3.eth.block_number

    async def done() -> bool:
        status = (await gateway.stub.GetFollowerStatus(service.GetFollowerStatusRequest(chain=CHAIN))).status
        return status.last_block_number >= head

    await eventually(done)


async def _transfers(gateway: Gateway, address: str) -> list[resources.Transfer]:
    response = await gateway.stub.ListTransfers(service.ListTransfersRequest(chain=CHAIN, to_address=address))
    return list(response.transfers)


@pytest.mark.embedded
async def test_transfers_to_watched_addresses_are_seen_and_confirmed(
    gateway: Gateway, web3: AsyncWeb3[Any], token: Token
) -> None:
    watched = Account.create().address
    created = await _watch(gateway, watched)
    assert created.address == watched.lower() and created.start_block > 0
    again = await gateway.stub.CreateWatchedAddress(
        service.CreateWatchedAddressRequest(
            request_id=request_id(), chain=CHAIN, address=watched, owner="other"
        )
    )
    assert not again.created and again.watched_address.owner == "deposit"
    sender = await funded_account(web3)
    native_hash, _ = await _send_native(web3, sender, watched, 777)
    token_hash = await send_token(web3, token, watched, 4_200)
    await _send_native(web3, sender, Account.create().address, 5)  # not watched: not reported

    async def both_seen() -> bool:
        return len(await gateway.events(chain_events_pb2.ChainTransferSeen)) == 2

    await eventually(both_seen)
    seen = {
        event.transfer.tx_hash: event.transfer
        for event in await gateway.events(chain_events_pb2.ChainTransferSeen)
    }
    native, erc20 = seen[native_hash], seen[token_hash]
    assert native.kind == resources.TRANSFER_KIND_NATIVE and native.amount == "777" and native.log_index == -1
    assert native.asset == NATIVE and native.from_address == sender.address.lower()
    assert native.transfer_id == f"{CHAIN}:{native_hash}:-1"
    assert erc20.kind == resources.TRANSFER_KIND_ERC20 and erc20.amount == "4200"
    assert (
        erc20.asset == f"{CHAIN}:{TOKEN_SYMBOL}"
        and erc20.token_contract == token.address
        and erc20.log_index >= 0
    )
    assert {native.status, erc20.status} == {resources.TRANSFER_STATUS_SEEN}

    await mine(web3, DEPTH)

    async def both_confirmed() -> bool:
        return len(await gateway.events(chain_events_pb2.ChainTransferConfirmed)) == 2

    await eventually(both_confirmed)
    listed = await _transfers(gateway, watched)
    assert [transfer.tx_hash for transfer in listed] == [native_hash, token_hash]
    assert {transfer.status for transfer in listed} == {resources.TRANSFER_STATUS_CONFIRMED}
    blocks = await gateway.stub.ListBlocks(service.ListBlocksRequest(chain=CHAIN, page_size=2))
    assert len(blocks.blocks) == 2 and blocks.blocks[0].number == blocks.blocks[1].number + 1
    assert blocks.blocks[0].parent_hash == blocks.blocks[1].hash and blocks.next_page_token

    await gateway.stub.DeleteWatchedAddress(
        service.DeleteWatchedAddressRequest(request_id=request_id(), chain=CHAIN, address=watched)
    )
    await refused(
        gateway.stub.DeleteWatchedAddress(
            service.DeleteWatchedAddressRequest(request_id=request_id(), chain=CHAIN, address=watched)
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )


async def test_reorganisation_rolls_back_to_the_common_ancestor(
    gateway: Gateway, web3: AsyncWeb3[Any], hardhat_node: HardhatNode
) -> None:
    watched = Account.create().address
    await _watch(gateway, watched)
    sender = await funded_account(web3)
    await _caught_up(gateway, web3)
    snapshot = hardhat_node.rpc("evm_snapshot")
    ancestor = await web3.eth.get_block("latest")
    first_hash, first_raw = await _send_native(web3, sender, watched, 1_000)

    async def first_seen() -> bool:
        return any(
            event.transfer.tx_hash == first_hash
            for event in await gateway.events(chain_events_pb2.ChainTransferSeen)
        )

    await eventually(first_seen)
    orphan = (await _transfers(gateway, watched))[0].block_hash

    # Another branch from the same ancestor: the same transaction again, a second transfer, and
    # enough blocks to make it the longer chain and confirm both.
    assert hardhat_node.rpc("evm_revert", [snapshot]) is True
    await mine(web3, 1)
    await web3.eth.send_raw_transaction(first_raw)
    second_hash, _ = await _send_native(web3, sender, watched, 2_000)
    await mine(web3, DEPTH)

    async def settled() -> bool:
        transfers = await _transfers(gateway, watched)
        return sum(1 for transfer in transfers if transfer.status == resources.TRANSFER_STATUS_CONFIRMED) == 2

    await eventually(settled)
    reorgs = await gateway.events(chain_events_pb2.ChainReorgDetected)
    assert len(reorgs) == 1
    assert reorgs[0].common_ancestor_number == ancestor["number"]
    assert reorgs[0].common_ancestor_hash == AsyncWeb3.to_hex(ancestor["hash"])
    assert orphan in reorgs[0].orphaned_block_hashes and not reorgs[0].beyond_confirmation_depth
    reorged = await gateway.events(chain_events_pb2.ChainTransferReorged)
    assert [
        (event.transfer.tx_hash, event.transfer.block_hash, event.was_confirmed) for event in reorged
    ] == [(first_hash, orphan, False)]
    # Every inclusion is reported once; only the new branch's are confirmed, each once.
    seen = Counter(
        (e.transfer.tx_hash, e.transfer.block_hash)
        for e in await gateway.events(chain_events_pb2.ChainTransferSeen)
    )
    assert all(count == 1 for count in seen.values()) and len(seen) == 3
    confirmed = [event.transfer for event in await gateway.events(chain_events_pb2.ChainTransferConfirmed)]
    assert sorted(transfer.tx_hash for transfer in confirmed) == sorted([first_hash, second_hash])
    assert orphan not in {transfer.block_hash for transfer in confirmed}
    transfers = await _transfers(gateway, watched)
    assert [(t.tx_hash, t.status) for t in transfers if t.block_hash == orphan] == [
        (first_hash, resources.TRANSFER_STATUS_REORGED)
    ]
    orphaned = await gateway.stub.ListBlocks(
        service.ListBlocksRequest(chain=CHAIN, status=resources.BLOCK_STATUS_ORPHANED)
    )
    assert orphan in {block.hash for block in orphaned.blocks}
    status = (await gateway.stub.GetFollowerStatus(service.GetFollowerStatusRequest(chain=CHAIN))).status
    assert status.reorg_count == 1 and status.last_reorg_depth == reorgs[0].depth
    assert status.state == resources.FOLLOWER_STATE_FOLLOWING and status.watched_address_count == 1
    assert status.confirmed_block_number == status.last_block_number - DEPTH + 1


async def test_follower_resumes_after_restart_without_missing_or_repeating(
    database_url: str, tmp_path: Path, hardhat_node: HardhatNode, token: Token, web3: AsyncWeb3[Any]
) -> None:
    chains = {CHAIN: hardhat_chain(hardhat_node.url, token)}
    watched = Account.create().address
    sender = await funded_account(web3)
    first = await start_gateway(database_url, tmp_path, chains)
    try:
        await _watch(first, watched)
        early, _ = await _send_native(web3, sender, watched, 1)

        async def early_seen() -> bool:
            return len(await first.events(chain_events_pb2.ChainTransferSeen)) == 1

        await eventually(early_seen)
    finally:
        await first.stop()
    # While the gateway is down: two more transfers, and the first one's confirmation.
    late = [(await _send_native(web3, sender, watched, amount))[0] for amount in (2, 3)]
    await mine(web3, DEPTH)
    second = await start_gateway(database_url, tmp_path, chains)
    try:

        async def all_confirmed() -> bool:
            return len(await second.events(chain_events_pb2.ChainTransferConfirmed)) == 3

        await eventually(all_confirmed)
        await mine(web3, 2)
        await _caught_up(second, web3)
        seen = Counter(
            event.transfer.tx_hash for event in await second.events(chain_events_pb2.ChainTransferSeen)
        )
        confirmed = Counter(
            event.transfer.tx_hash for event in await second.events(chain_events_pb2.ChainTransferConfirmed)
        )
        assert seen == confirmed == Counter([early, *late])
    finally:
        await second.stop()


async def test_an_address_added_with_an_earlier_start_block_is_rescanned(
    gateway: Gateway, web3: AsyncWeb3[Any], token: Token
) -> None:
    address = Account.create().address
    sender = await funded_account(web3)
    native_hash, _ = await _send_native(web3, sender, address, 55)
    first_block = (await web3.eth.get_transaction_receipt(native_hash))["blockNumber"]  # type: ignore[arg-type]
    token_hash = await send_token(web3, token, address, 66)
    await mine(web3, DEPTH)
    await _caught_up(gateway, web3)
    watched = await gateway.stub.CreateWatchedAddress(
        service.CreateWatchedAddressRequest(
            request_id=request_id(), chain=CHAIN, address=address, owner="deposit", start_block=first_block
        )
    )
    assert watched.created and watched.watched_address.start_block == first_block
    later, _ = await _send_native(web3, sender, address, 77)  # after the position: the follower's own
    await mine(web3, DEPTH)

    async def all_confirmed() -> bool:
        transfers = await _transfers(gateway, address)
        return len(transfers) == 3 and {t.status for t in transfers} == {resources.TRANSFER_STATUS_CONFIRMED}

    await eventually(all_confirmed)
    assert [t.tx_hash for t in await _transfers(gateway, address)] == [native_hash, token_hash, later]
    seen = Counter(
        event.transfer.tx_hash for event in await gateway.events(chain_events_pb2.ChainTransferSeen)
    )
    confirmed = Counter(
        event.transfer.tx_hash for event in await gateway.events(chain_events_pb2.ChainTransferConfirmed)
    )
    assert seen == confirmed == Counter([native_hash, token_hash, later])
