"""Movements between custody wallets: M-of-N distinct approvers before a cold wallet signs, the
movement bound to the nonce it was first signed with, and the states around it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
from eth_tester import EthereumTester
from finmesh.common.v1 import money_pb2
from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.custody.v1 import custody_service_pb2 as service
from finmesh.events.v1 import custody_events_pb2

from tests.custody.conftest import (
    CHAIN,
    NATIVE,
    STEP_UP,
    Custody,
    claims_for,
    fund,
    native_transaction,
    refused,
    signing_refused,
    start_custody,
)
from tests.harness.softhsm import SoftHsmToken


async def wallets(
    custody: Custody, required: int = 2
) -> tuple[resources.CustodyWallet, resources.CustodyWallet]:
    suffix = uuid.uuid4().hex[:8]
    cold = await custody.create_wallet(f"cold-{suffix}", kind=resources.WALLET_KIND_COLD, required=required)
    hot = await custody.create_wallet(f"hot-{suffix}")
    return cold, hot


async def request_movement(
    custody: Custody, source: str, destination: str, amount: int, request_id: str = ""
) -> resources.Movement:
    response = await custody.stub.CreateMovement(
        service.CreateMovementRequest(
            request_id=request_id or f"move-{uuid.uuid4().hex}",
            source_wallet_id=source,
            destination_wallet_id=destination,
            chain=CHAIN,
            amount=money_pb2.Money(asset=NATIVE, amount=str(amount)),
            reason="top up the hot wallet",
            step_up_token=STEP_UP,
        ),
        metadata=custody.staff("operator-1", "operator"),
    )
    return response.movement


async def decide(
    custody: Custody, movement_id: str, approver: str, approve: bool = True, **fields: object
) -> resources.Movement:
    metadata = custody.staff(approver, "approver")
    if approve:
        request = service.ApproveMovementRequest(
            request_id=f"approve-{uuid.uuid4().hex}", movement_id=movement_id, comment="checked",
            step_up_token=STEP_UP, **fields,  # type: ignore[arg-type]
        )  # fmt: skip
        return (await custody.stub.ApproveMovement(request, metadata=metadata)).movement
    rejection = service.RejectMovementRequest(
        request_id=f"reject-{uuid.uuid4().hex}", movement_id=movement_id, comment="not expected"
    )
    return (await custody.stub.RejectMovement(rejection, metadata=metadata)).movement


async def test_cold_wallet_signs_only_with_a_quorum_of_distinct_approvers(
    custody: Custody, evm: EthereumTester
) -> None:
    cold, hot = await wallets(custody, required=2)
    movement = await request_movement(custody, cold.wallet_id, hot.wallet_id, 40_000, "move-quorum-1")
    assert movement.state == resources.MOVEMENT_STATE_PENDING_APPROVAL
    assert movement.kind == resources.MOVEMENT_KIND_COLD_TO_HOT and movement.required_approvals == 2
    assert (movement.from_address, movement.to_address, movement.requested_by) == (
        cold.address,
        hot.address,
        "operator-1",
    )
    transaction = native_transaction(cold.address, hot.address, 40_000, nonce=0)
    await signing_refused(
        custody.sign(cold.wallet_id, transaction, movement_id=movement.movement_id), "QUORUM_NOT_MET"
    )
    await refused(
        decide(custody, movement.movement_id, "operator-1"),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    first = await decide(custody, movement.movement_id, "approver-a")
    assert first.state == resources.MOVEMENT_STATE_PENDING_APPROVAL and len(first.approvals) == 1
    await refused(
        decide(custody, movement.movement_id, "approver-a"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "ALREADY_EXISTS",
    )
    await signing_refused(
        custody.sign(cold.wallet_id, transaction, movement_id=movement.movement_id), "QUORUM_NOT_MET"
    )
    await refused(
        decide(custody, movement.movement_id, "approver-b", expected_version=first.version - 1),
        grpc.StatusCode.ABORTED,
        "CONFLICT",
    )
    approved = await decide(custody, movement.movement_id, "approver-b", expected_version=first.version)
    assert approved.state == resources.MOVEMENT_STATE_APPROVED
    assert [a.approver_id for a in approved.approvals] == ["approver-a", "approver-b"]
    await refused(
        decide(custody, movement.movement_id, "approver-c"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    # An approval token cannot stand in for the quorum.
    token = custody.withdraw.sign(claims_for(transaction, hot.address, 40_000))
    await signing_refused(custody.sign(cold.wallet_id, transaction, approval=token), "KIND_NOT_ALLOWED")
    for wrong in (
        native_transaction(cold.address, hot.address, 40_001, nonce=0),
        native_transaction(cold.address, cold.address, 40_000, nonce=0),
    ):
        await signing_refused(
            custody.sign(cold.wallet_id, wrong, movement_id=movement.movement_id), "APPROVAL_MISMATCH"
        )
    fund(evm, cold.address, 10**18)
    signed = await custody.sign(cold.wallet_id, transaction, movement_id=movement.movement_id)
    assert evm.send_raw_transaction(signed.signed_transaction) == signed.tx_hash
    assert evm.get_balance(hot.address) == 40_000
    signing = (
        await custody.stub.GetMovement(
            service.GetMovementRequest(movement_id=movement.movement_id),
            metadata=custody.staff("a", "auditor"),
        )
    ).movement
    assert signing.state == resources.MOVEMENT_STATE_SIGNING and signing.tx_hash == signed.tx_hash
    # Bound to nonce 0 now: another nonce is refused, a replacement at nonce 0 is signed.
    await signing_refused(
        custody.sign(
            cold.wallet_id,
            native_transaction(cold.address, hot.address, 40_000, nonce=1),
            movement_id=movement.movement_id,
        ),
        "APPROVAL_MISMATCH",
    )
    faster = native_transaction(cold.address, hot.address, 40_000, nonce=0, max_fee_per_gas="5000000000")
    await custody.sign(cold.wallet_id, faster, movement_id=movement.movement_id)
    await refused(
        custody.stub.CancelMovement(
            service.CancelMovementRequest(
                request_id="cancel-late-1", movement_id=movement.movement_id, reason="late"
            ),
            metadata=custody.staff("operator-1", "operator"),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    changes = await custody.events(custody_events_pb2.CustodyMovementStateChanged)
    assert [
        (c.previous_state, c.movement.state)
        for c in changes
        if c.movement.movement_id == movement.movement_id
    ] == [
        (resources.MOVEMENT_STATE_PENDING_APPROVAL, resources.MOVEMENT_STATE_APPROVED),
        (resources.MOVEMENT_STATE_APPROVED, resources.MOVEMENT_STATE_SIGNING),
    ]
    decisions = await custody.events(custody_events_pb2.CustodyMovementDecisionRecorded)
    assert [d.approval.approver_id for d in decisions] == ["approver-a", "approver-b"]


async def test_rejection_cancellation_and_the_hot_to_cold_sweep(custody: Custody) -> None:
    cold, hot = await wallets(custody, required=3)
    rejected = await request_movement(custody, cold.wallet_id, hot.wallet_id, 1_000)
    await decide(custody, rejected.movement_id, "approver-a")
    after = await decide(custody, rejected.movement_id, "approver-b", approve=False)
    assert after.state == resources.MOVEMENT_STATE_REJECTED and after.outcome_message == "not expected"
    transaction = native_transaction(cold.address, hot.address, 1_000)
    await signing_refused(
        custody.sign(cold.wallet_id, transaction, movement_id=rejected.movement_id), "QUORUM_NOT_MET"
    )
    pending = await request_movement(custody, cold.wallet_id, hot.wallet_id, 2_000)
    cancel = service.CancelMovementRequest(
        request_id="cancel-0001", movement_id=pending.movement_id, reason="wrong amount"
    )
    operator = custody.staff("operator-2", "operator")
    cancelled = (await custody.stub.CancelMovement(cancel, metadata=operator)).movement
    assert cancelled.state == resources.MOVEMENT_STATE_CANCELLED
    assert (await custody.stub.CancelMovement(cancel, metadata=operator)).movement == cancelled
    sweep = await request_movement(custody, hot.wallet_id, cold.wallet_id, 5_000, "move-sweep-1")
    assert (
        sweep.state == resources.MOVEMENT_STATE_APPROVED and sweep.kind == resources.MOVEMENT_KIND_HOT_TO_COLD
    )
    again = await request_movement(custody, hot.wallet_id, cold.wallet_id, 5_000, "move-sweep-1")
    assert again == sweep
    signed = await custody.sign(
        hot.wallet_id, native_transaction(hot.address, cold.address, 5_000), movement_id=sweep.movement_id
    )
    assert signed.signer_address == hot.address
    # A movement authorises only its source wallet.
    await signing_refused(
        custody.sign(
            cold.wallet_id,
            native_transaction(cold.address, cold.address, 5_000),
            movement_id=sweep.movement_id,
        ),
        "APPROVAL_MISMATCH",
    )
    listed = await custody.stub.ListMovements(
        service.ListMovementsRequest(wallet_id=hot.wallet_id, states=[resources.MOVEMENT_STATE_SIGNING]),
        metadata=custody.staff("a", "auditor"),
    )
    assert [m.movement_id for m in listed.movements] == [sweep.movement_id]
    await refused(
        request_movement(custody, hot.wallet_id, hot.wallet_id, 1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        custody.create_wallet(f"cold-{uuid.uuid4().hex[:8]}", kind=resources.WALLET_KIND_COLD, required=1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_a_movement_not_approved_in_its_window_expires(
    database_url: str, tmp_path: Path, softhsm: SoftHsmToken
) -> None:
    running = await start_custody(database_url, tmp_path, softhsm, movement_approval_window_s=1)
    try:
        cold, hot = await wallets(running, required=2)
        movement = await request_movement(running, cold.wallet_id, hot.wallet_id, 1_000)
        await decide(running, movement.movement_id, "approver-a")
        await asyncio.sleep(1.1)
        await refused(
            decide(running, movement.movement_id, "approver-b"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "INVALID_STATE",
        )
        expired = (
            await running.stub.GetMovement(
                service.GetMovementRequest(movement_id=movement.movement_id),
                metadata=running.staff("a", "auditor"),
            )
        ).movement
        assert expired.state == resources.MOVEMENT_STATE_EXPIRED and len(expired.approvals) == 1
        transaction = native_transaction(cold.address, hot.address, 1_000)
        await signing_refused(
            running.sign(cold.wallet_id, transaction, movement_id=movement.movement_id), "QUORUM_NOT_MET"
        )
    finally:
        await running.stop()
