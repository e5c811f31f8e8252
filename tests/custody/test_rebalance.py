"""Hot-wallet floor and ceiling: policies through the contract, and the plans that hot balances read
from a real EVM (py-evm) produce, accepted or dismissed into movements."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from eth_tester import EthereumTester
from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.custody.v1 import custody_service_pb2 as service
from finmesh.events.v1 import custody_events_pb2
from google.protobuf import field_mask_pb2

from svc.custody.rebalance import Rebalancer
from tests.custody.conftest import NATIVE, Custody, fund, refused


class EvmBalances:
    """Native balances at the head of an in-process py-evm chain (what the chain gateway reads)."""

    def __init__(self, chain: EthereumTester) -> None:
        self.chain = chain

    async def balance(self, chain: str, address: str, asset: str) -> tuple[int, int]:
        assert asset == NATIVE, asset
        return self.chain.get_balance(address), self.chain.get_block_by_number("latest")["number"]


def changed(
    request_id: str, policy: resources.HotWalletPolicy, paths: list[str], **fields: Any
) -> service.UpdateHotWalletPolicyRequest:
    """An update of `paths` to `fields`, carrying the rest of the policy as read (it is validated whole)."""
    edited = resources.HotWalletPolicy()
    edited.CopyFrom(policy)
    edited.version = 0
    for name, value in fields.items():
        setattr(edited, name, value)
    return service.UpdateHotWalletPolicyRequest(
        request_id=request_id, policy=edited, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )


async def plans(custody: Custody, **filters: Any) -> list[resources.RebalancePlan]:
    response = await custody.stub.ListRebalancePlans(
        service.ListRebalancePlansRequest(**filters), metadata=custody.staff("auditor-1", "auditor")
    )
    return list(response.plans)


async def test_policies_are_validated_and_versioned(custody: Custody) -> None:
    suffix = uuid.uuid4().hex[:8]
    hot = await custody.create_wallet(f"hot-{suffix}")
    cold = await custody.create_wallet(f"cold-{suffix}", kind=resources.WALLET_KIND_COLD, required=2)
    admin = custody.staff("admin-1", "admin")

    def create(request_id: str, **fields: Any) -> Any:
        values: dict[str, Any] = {
            "asset": NATIVE,
            "hot_wallet_id": hot.wallet_id,
            "cold_wallet_id": cold.wallet_id,
            "floor": "1000",
            "target": "5000",
            "ceiling": "10000",
            "enabled": True,
        }
        values.update(fields)
        request = service.CreateHotWalletPolicyRequest(
            request_id=request_id, policy=resources.HotWalletPolicy(**values)
        )
        return custody.stub.CreateHotWalletPolicy(request, metadata=admin)

    await refused(create("policy-bad-1", floor="6000"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    await refused(
        create("policy-bad-2", hot_wallet_id=cold.wallet_id),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        create("policy-bad-3", asset="evm-test:DOGE"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    policy = (await create("policy-0001")).policy
    assert (policy.version, policy.update_user_id, policy.floor) == (1, "admin-1", "1000")
    assert (await create("policy-0001")).policy == policy
    await refused(create("policy-0002"), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")

    def update(request_id: str, paths: list[str], **fields: Any) -> Any:
        return custody.stub.UpdateHotWalletPolicy(
            changed(request_id, policy, paths, **fields), metadata=admin
        )

    updated = await update(
        "policy-update-1", ["ceiling", "auto_sweep"], ceiling="20000", auto_sweep=True, version=1
    )
    assert (updated.policy.ceiling, updated.policy.auto_sweep, updated.policy.version) == ("20000", True, 2)
    assert updated.policy.floor == "1000" and updated.policy.enabled
    await refused(
        update("policy-update-2", ["floor"], floor="1", version=1), grpc.StatusCode.ABORTED, "CONFLICT"
    )
    await refused(update("policy-update-3", ["asset"]), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    # Only the fields in the mask change: a floor sent but not named is ignored.
    ignored = (await update("policy-update-5", ["enabled"], floor="2000", enabled=True)).policy
    assert (ignored.floor, ignored.version) == ("1000", 3)
    await refused(
        update("policy-update-4", ["target"], target="30000"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        custody.stub.CreateHotWalletPolicy(
            service.CreateHotWalletPolicyRequest(request_id="policy-op-1", policy=policy),
            metadata=custody.staff("operator-1", "operator"),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    listed = await custody.stub.ListHotWalletPolicies(
        service.ListHotWalletPoliciesRequest(chain="evm-test"), metadata=custody.staff("auditor-1", "auditor")
    )
    assert [p.version for p in listed.policies] == [3]
    changes = await custody.events(custody_events_pb2.HotWalletPolicyChanged)
    assert [(c.created, c.policy.version) for c in changes] == [(True, 1), (False, 2), (False, 3)]


async def test_balances_outside_the_band_become_sweep_and_top_up_plans(
    custody: Custody, evm: EthereumTester
) -> None:
    suffix = uuid.uuid4().hex[:8]
    hot = await custody.create_wallet(f"hot-{suffix}")
    empty_hot = await custody.create_wallet(f"hot-empty-{suffix}")
    cold = await custody.create_wallet(f"cold-{suffix}", kind=resources.WALLET_KIND_COLD, required=2)
    admin, operator = custody.staff("admin-1", "admin"), custody.staff("operator-1", "operator")
    policy = (
        await custody.stub.CreateHotWalletPolicy(
            service.CreateHotWalletPolicyRequest(
                request_id="policy-band-1",
                policy=resources.HotWalletPolicy(
                    asset=NATIVE, hot_wallet_id=hot.wallet_id, cold_wallet_id=cold.wallet_id, floor="1000",
                    target="5000", ceiling="10000", enabled=True,
                ),
            ),
            metadata=admin,
        )
    ).policy  # fmt: skip
    chain = evm
    rebalancer = Rebalancer(custody.app.database, EvmBalances(chain), approval_window_s=3600)
    fund(chain, hot.address, 8_000)
    assert await rebalancer.run_once() == 0  # inside the band
    fund(chain, hot.address, 4_000)
    assert await rebalancer.run_once() == 1
    assert await rebalancer.run_once() == 1  # the same breach read again: the same plan
    first = await plans(custody, policy_id=policy.policy_id)
    assert len(first) == 1 and first[0].kind == resources.REBALANCE_KIND_SWEEP_TO_COLD
    assert (first[0].hot_balance.amount, first[0].amount.amount) == ("12000", "7000")
    assert (
        first[0].state == resources.REBALANCE_PLAN_STATE_PROPOSED
        and first[0].block_number == chain.get_block_by_number("latest")["number"]
    )
    fund(chain, hot.address, 1_000)
    await rebalancer.run_once()
    superseding, superseded = await plans(custody, policy_id=policy.policy_id)
    assert (
        superseded.plan_id == first[0].plan_id
        and superseded.state == resources.REBALANCE_PLAN_STATE_SUPERSEDED
    )
    assert superseding.amount.amount == "8000"
    accepted = await custody.stub.AcceptRebalancePlan(
        service.AcceptRebalancePlanRequest(
            request_id="accept-plan-1", plan_id=superseding.plan_id, note="sweep", step_up_token="t"
        ),
        metadata=operator,
    )
    assert accepted.plan.state == resources.REBALANCE_PLAN_STATE_ACCEPTED
    assert (
        accepted.plan.movement_id == accepted.movement.movement_id
        and accepted.plan.decided_by == "operator-1"
    )
    sweep = accepted.movement
    assert (sweep.kind, sweep.state, sweep.amount.amount) == (
        resources.MOVEMENT_KIND_HOT_TO_COLD, resources.MOVEMENT_STATE_APPROVED, "8000",
    )  # fmt: skip
    assert sweep.plan_id == superseding.plan_id and sweep.to_address == cold.address
    await refused(
        custody.stub.AcceptRebalancePlan(
            service.AcceptRebalancePlanRequest(
                request_id="accept-plan-2", plan_id=superseded.plan_id, step_up_token="t"
            ),
            metadata=operator,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    # The sweep is not on chain yet: the excess is not proposed a second time.
    assert await rebalancer.run_once() == 0
    await custody.stub.CancelMovement(
        service.CancelMovementRequest(
            request_id="cancel-sweep-1", movement_id=sweep.movement_id, reason="redo"
        ),
        metadata=operator,
    )
    # Automatic sweeps: accepted by custody itself, straight into an APPROVED movement.
    await custody.stub.UpdateHotWalletPolicy(
        changed("policy-auto-1", policy, ["auto_sweep"], auto_sweep=True),
        metadata=admin,
    )
    assert await rebalancer.run_once() == 1
    automatic = (await plans(custody, policy_id=policy.policy_id))[0]
    assert automatic.state == resources.REBALANCE_PLAN_STATE_ACCEPTED and automatic.decided_by == "custody"
    movement = (
        await custody.stub.GetMovement(
            service.GetMovementRequest(movement_id=automatic.movement_id), metadata=operator
        )
    ).movement
    assert movement.state == resources.MOVEMENT_STATE_APPROVED and movement.requested_by == "custody"
    await custody.stub.CancelMovement(
        service.CancelMovementRequest(
            request_id="cancel-sweep-2", movement_id=movement.movement_id, reason="redo"
        ),
        metadata=operator,
    )
    # A hot wallet under its floor: a top-up from cold, which waits for the cold wallet's quorum.
    await custody.stub.UpdateHotWalletPolicy(
        changed("policy-empty-1", policy, ["hot_wallet_id"], hot_wallet_id=empty_hot.wallet_id),
        metadata=admin,
    )
    assert await rebalancer.run_once() == 1
    top_up = (await plans(custody, kind=resources.REBALANCE_KIND_TOP_UP_FROM_COLD))[0]
    assert top_up.amount.amount == "5000" and top_up.state == resources.REBALANCE_PLAN_STATE_PROPOSED
    dismissed = await custody.stub.DismissRebalancePlan(
        service.DismissRebalancePlanRequest(
            request_id="dismiss-1", plan_id=top_up.plan_id, note="manual top-up"
        ),
        metadata=operator,
    )
    assert dismissed.plan.state == resources.REBALANCE_PLAN_STATE_DISMISSED
    assert await rebalancer.run_once() == 1
    again = (await plans(custody, state=resources.REBALANCE_PLAN_STATE_PROPOSED))[0]
    topped = await custody.stub.AcceptRebalancePlan(
        service.AcceptRebalancePlanRequest(
            request_id="accept-top-up-1", plan_id=again.plan_id, step_up_token="t"
        ),
        metadata=operator,
    )
    assert topped.movement.kind == resources.MOVEMENT_KIND_COLD_TO_HOT
    assert (
        topped.movement.state == resources.MOVEMENT_STATE_PENDING_APPROVAL
        and topped.movement.required_approvals == 2
    )
    decided = await custody.events(custody_events_pb2.RebalancePlanDecided)
    assert [event.plan.state for event in decided] == [
        resources.REBALANCE_PLAN_STATE_SUPERSEDED,
        resources.REBALANCE_PLAN_STATE_ACCEPTED,
        resources.REBALANCE_PLAN_STATE_ACCEPTED,
        resources.REBALANCE_PLAN_STATE_DISMISSED,
        resources.REBALANCE_PLAN_STATE_ACCEPTED,
    ]
