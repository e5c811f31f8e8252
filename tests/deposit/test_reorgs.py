"""Reorganisations on a real Hardhat node (evm_snapshot / evm_revert): before credit a deposit is
withdrawn (or follows its transaction to the new branch), after credit it is frozen and raised to
operators, who release or reverse it; nothing is ever credited twice."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from finmesh.deposit.v1 import deposit_resources_pb2 as resources
from finmesh.deposit.v1 import deposit_service_pb2 as service
from finmesh.events.v1 import deposit_events_pb2
from web3 import AsyncWeb3

from tests.harness.hardhat import HardhatNode

from .conftest import DEPTH, ETHER, NATIVE, Mesh, eventually, funded_account, mine, refused, send_native

CONFIRMING = resources.DEPOSIT_STATE_CONFIRMING
CREDITED = resources.DEPOSIT_STATE_CREDITED
REORGED = resources.DEPOSIT_STATE_REORGED
FROZEN = resources.DEPOSIT_STATE_FROZEN
REVERSED = resources.DEPOSIT_STATE_REVERSED


async def _credited_then_removed(
    mesh: Mesh, web3: AsyncWeb3[Any], node: HardhatNode, user: str, amount: int
) -> tuple[resources.Deposit, bytes]:
    """A deposit credited at depth, then removed by a reorganisation deeper than the depth."""
    address = await mesh.deposit_address(user)
    sender = await funded_account(web3)
    snapshot = node.rpc("evm_snapshot")
    _, raw = await send_native(web3, sender, address, amount)
    await mine(web3, DEPTH)
    credited = await mesh.one_deposit(user, CREDITED)
    await mesh.settled_balance(user, total=str(amount), available=str(amount))
    assert node.rpc("evm_revert", [snapshot]) is True
    await mine(web3, DEPTH + 3)  # a longer branch without the transaction
    frozen = await mesh.one_deposit(user, FROZEN, 90.0)
    assert frozen.deposit_id == credited.deposit_id
    return frozen, raw


async def test_reorg_before_credit_withdraws_or_follows_the_transaction(
    mesh: Mesh, web3: AsyncWeb3[Any], hardhat_node: HardhatNode
) -> None:
    lost_user, moved_user = await mesh.new_user(), await mesh.new_user()
    lost_address = await mesh.deposit_address(lost_user)
    moved_address = await mesh.deposit_address(moved_user)
    lost_sender, moved_sender = await funded_account(web3), await funded_account(web3)
    snapshot = hardhat_node.rpc("evm_snapshot")
    await send_native(web3, lost_sender, lost_address, ETHER)
    _, moved_raw = await send_native(web3, moved_sender, moved_address, 2 * ETHER)
    first = await mesh.one_deposit(moved_user, CONFIRMING)
    await mesh.one_deposit(lost_user, CONFIRMING)
    await mesh.settled_balance(moved_user, pending_incoming=str(2 * ETHER))

    # The new branch holds the second transaction again, not the first.
    assert hardhat_node.rpc("evm_revert", [snapshot]) is True
    await mine(web3, 1)
    await web3.eth.send_raw_transaction(moved_raw)
    await mine(web3, DEPTH + 1)

    lost = await mesh.one_deposit(lost_user, REORGED, 90.0)
    assert lost.reorg_count == 1 and not lost.credit_entry_id and lost.confirmations == 0
    await mesh.settled_balance(lost_user, total="0", pending_incoming="0")
    moved = await mesh.one_deposit(moved_user, CREDITED, 90.0)
    assert moved.deposit_id == first.deposit_id and moved.reorg_count == 1
    assert moved.block_hash != first.block_hash
    await mesh.settled_balance(moved_user, total=str(2 * ETHER), pending_incoming="0")

    reincluded = [
        event for event in await mesh.events(deposit_events_pb2.DepositReincluded)
        if event.deposit.deposit_id == moved.deposit_id
    ]  # fmt: skip
    assert [event.previous_block_hash for event in reincluded] == [first.block_hash]
    reorged = {event.deposit.deposit_id for event in await mesh.events(deposit_events_pb2.DepositReorged)}
    assert reorged == {lost.deposit_id, moved.deposit_id}
    credits = [event.deposit.deposit_id for event in await mesh.events(deposit_events_pb2.DepositCredited)]
    assert credits == [moved.deposit_id]


@pytest.mark.embedded
async def test_reorg_after_credit_freezes_and_an_operator_reverses(
    mesh: Mesh, web3: AsyncWeb3[Any], hardhat_node: HardhatNode
) -> None:
    user = await mesh.new_user()
    frozen, _ = await _credited_then_removed(mesh, web3, hardhat_node, user, 5 * ETHER)
    assert frozen.freeze.frozen_amount.amount == str(5 * ETHER) and frozen.freeze.freeze_entry_id
    assert frozen.freeze.resolution == resources.FROZEN_RESOLUTION_UNSPECIFIED
    await mesh.settled_balance(user, total=str(5 * ETHER), available="0", frozen=str(5 * ETHER))
    [alert] = await mesh.events(deposit_events_pb2.DepositFrozen)
    assert alert.deposit.deposit_id == frozen.deposit_id

    listed = await mesh.deposits.AdminListDeposits(
        service.AdminListDepositsRequest(states=[FROZEN]), metadata=mesh.staff("support-1", "support")
    )
    assert [deposit.deposit_id for deposit in listed.deposits] == [frozen.deposit_id]
    await refused(
        mesh.deposits.AdminListDeposits(service.AdminListDepositsRequest(), metadata=mesh.user(user)),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )

    request = service.ResolveDepositRequest(
        request_id=f"resolve-{uuid.uuid4().hex}",
        deposit_id=frozen.deposit_id,
        resolution=resources.FROZEN_RESOLUTION_REVERSE,
        note="the transfer is gone from the chain",
        approval_id="approval-1",
    )
    await refused(
        mesh.deposits.ResolveDeposit(request, metadata=mesh.staff("operator-1", "operator")),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    without_approval = service.ResolveDepositRequest()
    without_approval.CopyFrom(request)
    without_approval.approval_id = ""
    await refused(
        mesh.deposits.ResolveDeposit(without_approval, metadata=mesh.staff("approver-1", "approver")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    reversed_ = (
        await mesh.deposits.ResolveDeposit(request, metadata=mesh.staff("approver-1", "approver"))
    ).deposit
    assert reversed_.state == REVERSED and reversed_.reversal_entry_id
    assert (reversed_.freeze.resolution, reversed_.freeze.resolved_by, reversed_.freeze.approval_id) == (
        resources.FROZEN_RESOLUTION_REVERSE,
        "approver-1",
        "approval-1",
    )
    again = await mesh.deposits.ResolveDeposit(request, metadata=mesh.staff("approver-1", "approver"))
    assert again.deposit == reversed_
    await mesh.settled_balance(user, total="0", available="0", frozen="0")
    custody = await mesh.ledger_balance(f"assets:custody:deposit:{frozen.to_address}:{NATIVE}")
    assert custody.debits_posted == custody.credits_posted == str(5 * ETHER)

    other = service.ResolveDepositRequest()
    other.CopyFrom(request)
    other.request_id = f"resolve-{uuid.uuid4().hex}"
    info = await refused(
        mesh.deposits.ResolveDeposit(other, metadata=mesh.staff("approver-1", "approver")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    assert info.metadata["state"] == "REVERSED"


async def test_frozen_deposit_included_again_is_released_without_a_second_credit(
    mesh: Mesh, web3: AsyncWeb3[Any], hardhat_node: HardhatNode
) -> None:
    user = await mesh.new_user()
    frozen, raw = await _credited_then_removed(mesh, web3, hardhat_node, user, ETHER)
    await web3.eth.send_raw_transaction(raw)
    await mine(web3, DEPTH)
    released = await mesh.one_deposit(user, CREDITED, 90.0)
    assert released.freeze.resolved_by == "deposit" and released.HasField("freeze")
    assert released.credit_entry_id == frozen.credit_entry_id and released.reorg_count == 1
    await mesh.settled_balance(user, total=str(ETHER), available=str(ETHER), frozen="0")
    assert len(await mesh.events(deposit_events_pb2.DepositCredited)) == 1
    resolved = await mesh.events(deposit_events_pb2.DepositResolved)
    assert [event.deposit.state for event in resolved] == [CREDITED]
    custody = await mesh.ledger_balance(f"assets:custody:deposit:{frozen.to_address}:{NATIVE}")
    assert (custody.debits_posted, custody.credits_posted) == (str(ETHER), "0")


async def test_operator_release_keeps_the_credit_and_books_the_loss(
    mesh: Mesh, web3: AsyncWeb3[Any], hardhat_node: HardhatNode
) -> None:
    user = await mesh.new_user()
    frozen, _ = await _credited_then_removed(mesh, web3, hardhat_node, user, 2 * ETHER)
    released = await mesh.deposits.ResolveDeposit(
        service.ResolveDepositRequest(
            request_id=f"resolve-{uuid.uuid4().hex}",
            deposit_id=frozen.deposit_id,
            resolution=resources.FROZEN_RESOLUTION_RELEASE,
            note="goodwill: the platform absorbs it",
        ),
        metadata=mesh.staff("approver-2", "approver"),
    )
    assert released.deposit.state == CREDITED
    assert released.deposit.freeze.resolution == resources.FROZEN_RESOLUTION_RELEASE
    await mesh.settled_balance(user, total=str(2 * ETHER), available=str(2 * ETHER), frozen="0")
    loss = await mesh.ledger_balance(f"expenses:deposits:reorg_losses:{NATIVE}")
    assert loss.debits_posted == str(2 * ETHER)
    custody = await mesh.ledger_balance(f"assets:custody:deposit:{frozen.to_address}:{NATIVE}")
    assert custody.debits_posted == custody.credits_posted == str(2 * ETHER)


async def test_asset_depth_above_the_chain_s_waits_for_more_blocks(mesh: Mesh, web3: AsyncWeb3[Any]) -> None:
    from .test_deposits import _configure

    await _configure(mesh, "ETH", confirmation_depth=DEPTH + 3)
    user = await mesh.new_user()
    address = await mesh.deposit_address(user)
    sender = await funded_account(web3)
    await send_native(web3, sender, address, ETHER)
    await mine(web3, DEPTH + 1)
    waiting = await mesh.one_deposit(user, CONFIRMING)
    assert waiting.required_confirmations == DEPTH + 3

    async def chain_confirmed() -> bool:
        found = (await mesh.deposits_of(user))[0]
        return found.confirmations >= DEPTH + 1

    await eventually(chain_confirmed)
    assert (await mesh.deposits_of(user))[0].state == CONFIRMING
    await mine(web3, 2)
    credited = await mesh.one_deposit(user, CREDITED)
    assert credited.confirmations >= DEPTH + 3
