"""Hot-wallet floor and ceiling: the evaluation that turns a balance outside its band into a sweep
(hot to cold) or top-up (cold to hot) plan, and the acceptance that turns a plan into a movement.

Balances come from the chain gateway (`GetBalance` at the confirmed block), read for every enabled
policy on every round (`rebalance_interval_s`). A newer plan supersedes a policy's PROPOSED one;
the same breach read again (same kind and amount) does not make a second plan, and nothing is
proposed while the movement of an accepted plan of the policy has not ended. A sweep plan of a
policy with `auto_sweep` is accepted at once by custody itself: moving funds to cold storage lowers
risk. A top-up always waits for an operator, and then for the cold wallet's quorum.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Protocol

import grpc
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as gateway
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc as gateway_grpc
from finmesh.common.v1 import money_pb2
from finmesh.custody.v1 import custody_resources_pb2 as resources
from finmesh.events.v1 import custody_events_pb2, event_meta_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from svc.custody import convert, domain, store
from svc.custody.domain import CUSTODY_PRINCIPAL, Plan, PlanState, Policy, RebalanceKind
from svc.custody.movements import open_movement
from svc.kit import errors
from svc.kit.db import Database
from svc.kit.outbox import add_event

POLICIES_PER_RUN_MAX = 1_000
AUTO_SWEEP_NOTE = "accepted automatically: the policy sweeps to cold storage"


class BalanceReader(Protocol):
    """Where hot-wallet balances come from."""

    async def balance(self, chain: str, address: str, asset: str) -> tuple[int, int]:
        """(amount in base units, block number it was read at)."""
        ...


class ChainGatewayBalances:
    """Balances at the confirmed block, from the chain gateway."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = gateway_grpc.ChainGatewayServiceStub(channel)

    async def balance(self, chain: str, address: str, asset: str) -> tuple[int, int]:
        response = await self._stub.GetBalance(
            gateway.GetBalanceRequest(
                chain=chain,
                query=gateway.BalanceQuery(address=address, asset=asset),
                block=gateway.BlockSelector(confirmed=True),
            )
        )
        return int(response.balance.amount.amount), response.balance.block_number


def plan_message(plan: Plan) -> resources.RebalancePlan:
    message = resources.RebalancePlan(
        plan_id=plan.plan_id,
        policy_id=plan.policy_id,
        kind=int(plan.kind),  # type: ignore[arg-type]
        hot_balance=money_pb2.Money(asset=plan.asset, amount=str(plan.hot_balance)),
        block_number=plan.block_number,
        amount=money_pb2.Money(asset=plan.asset, amount=str(plan.amount)),
        state=int(plan.state),  # type: ignore[arg-type]
        movement_id=plan.movement_id,
        decided_by=plan.decided_by,
        note=plan.note,
        create_time=convert.timestamp(plan.create_time_us),
    )
    if plan.decide_time_us is not None:
        message.decide_time.CopyFrom(convert.timestamp(plan.decide_time_us))
    return message


def _plan_meta(plan: Plan) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type="custody_rebalance_plan", aggregate_id=plan.plan_id, correlation_id=plan.policy_id
    )


class Rebalancer:
    """Evaluates hot-wallet policies and accepts plans."""

    def __init__(
        self,
        database: Database,
        reader: BalanceReader,
        *,
        approval_window_s: int,
    ) -> None:
        self.database = database
        self.reader = reader
        self.approval_window_s = approval_window_s

    async def evaluate(self, policy_id: str, balance: int, block_number: int) -> Plan | None:
        """The plan a hot balance read at `block_number` calls for (None while within the band)."""
        async with self.database.transaction() as session:
            policy = await store.policy_by_id(session, policy_id, lock=True)
            if policy is None or not policy.enabled:
                return None
            needed = domain.rebalance_for(policy, balance)
            # Until the movement of an accepted plan has ended, the balance read does not show it
            # yet: proposing again would move the same excess twice.
            if needed is None or await store.movements_in_flight(session, policy.policy_id):
                return None
            kind, amount = needed
            for pending in await store.proposed_plans(session, policy.policy_id):
                if (pending.kind, pending.amount) == (kind, amount):
                    return pending
                await self._decide(session, pending, PlanState.SUPERSEDED, CUSTODY_PRINCIPAL, "a newer plan")
            plan = Plan(
                plan_id=str(uuid.uuid4()),
                policy_id=policy.policy_id,
                kind=kind,
                asset=policy.asset,
                hot_balance=balance,
                block_number=block_number,
                amount=amount,
                state=PlanState.PROPOSED,
                movement_id="",
                decided_by="",
                note="",
                create_time_us=time.time_ns() // 1000,
                decide_time_us=None,
            )
            await store.insert_plan(session, plan)
            proposed = custody_events_pb2.RebalancePlanProposed(
                meta=_plan_meta(plan), plan=plan_message(plan)
            )
            await add_event(session, proposed, producer="custody")
            if kind is RebalanceKind.SWEEP_TO_COLD and policy.auto_sweep:
                plan, _ = await self.accept(session, plan, CUSTODY_PRINCIPAL, AUTO_SWEEP_NOTE)
            return plan

    async def accept(
        self, session: AsyncSession, plan: Plan, actor: str, note: str
    ) -> tuple[Plan, resources.Movement]:
        """PROPOSED -> ACCEPTED with the movement it describes."""
        domain.transition_plan(plan, PlanState.ACCEPTED)
        policy = await store.policy_by_id(session, plan.policy_id)
        assert policy is not None, plan.policy_id
        hot = await store.wallet_by_id(session, policy.hot_wallet_id)
        cold = await store.wallet_by_id(session, policy.cold_wallet_id)
        if hot is None or cold is None:
            raise errors.InvalidState(
                "the policy's wallets no longer exist", metadata={"plan_id": plan.plan_id}
            )
        source, destination = (hot, cold) if plan.kind is RebalanceKind.SWEEP_TO_COLD else (cold, hot)
        movement = await open_movement(
            session, source, destination, chain=_chain_of(policy), asset=policy.asset,
            amount=plan.amount, requested_by=actor, reason=f"{plan.kind.name.lower()} plan {plan.plan_id}",
            plan_id=plan.plan_id, approval_window_s=self.approval_window_s,
        )  # fmt: skip
        accepted = await self._decide(
            session, replace(plan, movement_id=movement.movement_id), PlanState.ACCEPTED, actor, note
        )
        return accepted, movement

    async def dismiss(self, session: AsyncSession, plan: Plan, actor: str, note: str) -> Plan:
        return await self._decide(session, plan, PlanState.DISMISSED, actor, note)

    async def _decide(
        self, session: AsyncSession, plan: Plan, target: PlanState, actor: str, note: str
    ) -> Plan:
        domain.transition_plan(plan, target)
        decided = replace(
            plan, state=target, decided_by=actor, note=note, decide_time_us=time.time_ns() // 1000
        )
        await store.update_plan(session, decided, plan.state)
        event = custody_events_pb2.RebalancePlanDecided(meta=_plan_meta(decided), plan=plan_message(decided))
        await add_event(session, event, producer="custody")
        return decided

    async def run_once(self) -> int:
        """Reads the hot balance of every enabled policy and evaluates it; returns the plans made."""
        async with self.database.transaction() as session:
            enabled = await store.list_policies(
                session, chain="", after="", limit=POLICIES_PER_RUN_MAX, enabled_only=True
            )
            hot_wallets = {
                policy.policy_id: await store.wallet_by_id(session, policy.hot_wallet_id)
                for policy in enabled
            }
        made = 0
        for policy in enabled:
            wallet = hot_wallets[policy.policy_id]
            assert wallet is not None, policy.policy_id
            balance, block_number = await self.reader.balance(_chain_of(policy), wallet.address, policy.asset)
            made += await self.evaluate(policy.policy_id, balance, block_number) is not None
        return made


def _chain_of(policy: Policy) -> str:
    return policy.asset.split(":", 1)[0]
