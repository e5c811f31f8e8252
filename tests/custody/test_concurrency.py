"""Concurrent requests: a quorum is reached once, an approver decides once, an approval's first use
is bound once, and a retried request_id signs once."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.events.v1 import custody_events_pb2
from sqlalchemy import func, select

from svc.custody.store import approval_uses, records
from tests.custody.conftest import Custody, claims_for, error_info, native_transaction
from tests.custody.test_movements import decide, request_movement, wallets

RECIPIENT = "0x5555555555555555555555555555555555555555"


async def outcomes(calls: list[object]) -> tuple[list[object], list[grpc.aio.AioRpcError]]:
    results = await asyncio.gather(*calls, return_exceptions=True)  # type: ignore[call-overload]
    errors = [result for result in results if isinstance(result, grpc.aio.AioRpcError)]
    assert all(isinstance(r, grpc.aio.AioRpcError) or not isinstance(r, BaseException) for r in results), (
        results
    )
    return [result for result in results if not isinstance(result, BaseException)], errors


async def test_concurrent_approvers_reach_the_quorum_once(custody: Custody) -> None:
    cold, hot = await wallets(custody, required=2)
    movement = await request_movement(custody, cold.wallet_id, hot.wallet_id, 10_000)
    approvers = [f"approver-{letter}" for letter in "abcd"]
    granted, refused = await outcomes([decide(custody, movement.movement_id, name) for name in approvers])
    assert len(granted) == 2 and len(refused) == 2
    assert {(error.code(), error_info(error).reason) for error in refused} == {
        (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE")
    }
    changes = [
        change
        for change in await custody.events(custody_events_pb2.CustodyMovementStateChanged)
        if change.movement.movement_id == movement.movement_id
    ]
    assert [change.movement.state for change in changes] == [resources.MOVEMENT_STATE_APPROVED]
    assert len(changes[0].movement.approvals) == 2


async def test_one_approver_deciding_twice_at_once_is_recorded_once(custody: Custody) -> None:
    cold, hot = await wallets(custody, required=3)
    movement = await request_movement(custody, cold.wallet_id, hot.wallet_id, 10_000)
    granted, refused = await outcomes([decide(custody, movement.movement_id, "approver-a") for _ in range(4)])
    assert len(granted) == 1 and len(refused) == 3
    assert {error_info(error).reason for error in refused} == {"ALREADY_EXISTS"}
    decisions = await custody.events(custody_events_pb2.CustodyMovementDecisionRecorded)
    assert [d.approval.approver_id for d in decisions if d.movement.movement_id == movement.movement_id] == [
        "approver-a"
    ]


async def test_concurrent_signatures_under_one_approval_and_one_request_id(custody: Custody) -> None:
    wallet = await custody.create_wallet(f"hot-{uuid.uuid4().hex[:8]}")
    transaction = native_transaction(wallet.address, RECIPIENT, 77)
    claims = claims_for(transaction, RECIPIENT, 77)
    approval = custody.withdraw.sign(claims)
    # Different request ids: each is a signature of the same approved payment (a replacement).
    signed, refused = await outcomes(
        [custody.sign(wallet.wallet_id, transaction, approval=approval) for _ in range(6)]
    )
    assert len(signed) == 6 and not refused
    # One request id sent six times at once: one signature, six identical answers.
    same, refused = await outcomes(
        [
            custody.sign(wallet.wallet_id, transaction, approval=approval, request_id="sign-same-1")
            for _ in range(6)
        ]
    )
    assert not refused and len({response.SerializeToString() for response in same}) == 1  # type: ignore[attr-defined]
    async with custody.app.database.transaction() as session:
        uses = (await session.execute(select(func.count()).select_from(approval_uses))).scalar_one()
        granted = (
            await session.execute(
                select(func.count()).select_from(records).where(records.c.approval_id == claims.approval_id)
            )
        ).scalar_one()
    assert uses == 1 and granted == 7
