"""Properties of internal transfers over any sequence of transfers (affordable or not), replays and
reversals, checked through the gRPC contract against a simple model after every step: no money is
created or lost (the users' total is constant), every balance is what the model says, and the
ledger's books stay balanced."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from finmesh.wallet.v1 import wallet_service_pb2 as service
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.harness.calls import eventually
from tests.wallet.conftest import Mesh, rid

USERS = 3
SEED = 1_000
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
ACTOR = "00000000-0000-4000-8000-000000000001"

steps = st.lists(
    st.tuples(
        st.sampled_from(("transfer", "transfer", "transfer", "replay", "reverse")),
        st.integers(0, USERS - 1),
        st.integers(0, USERS - 1),
        st.integers(1, SEED + 200),
    ),
    min_size=1,
    max_size=8,
)


@dataclass
class Run:
    mesh: Mesh
    users: list[str]
    balances: list[int] = field(default_factory=lambda: [SEED] * USERS)
    # (request, response, sender, recipient, amount) of every completed transfer, not reversed.
    made: list[tuple[Any, Any, int, int, int]] = field(default_factory=list)

    async def step(self, operation: str, sender: int, recipient: int, amount: int) -> None:
        if operation == "replay" and self.made:
            request_id, response, source, target, value = self.made[amount % len(self.made)]
            again = await self.mesh.transfer(
                self.users[source], value, request_id=request_id, to_user_id=self.users[target]
            )
            assert again == response
            return
        if operation == "reverse" and self.made:
            made = self.made[amount % len(self.made)]
            _request_id, response, source, target, value = made
            try:
                await self.mesh.wallets.ReverseInternalTransfer(
                    service.ReverseInternalTransferRequest(
                        request_id=rid("reverse"),
                        transfer_id=response.transfer.transfer_id,
                        reason="property",
                        approval_id="approval",
                        actor_id=ACTOR,
                    )
                )
            except grpc.aio.AioRpcError as error:
                assert error.code() is PRECONDITION, error
                assert self.balances[target] < value, (self.balances, value)
                return
            assert self.balances[target] >= value
            self.balances[target] -= value
            self.balances[source] += value
            self.made.remove(made)
            return
        if sender == recipient:
            recipient = (recipient + 1) % USERS
        request_id = rid("transfer")
        try:
            response = await self.mesh.transfer(
                self.users[sender], amount, request_id=request_id, to_user_id=self.users[recipient]
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() is PRECONDITION, error
            assert amount > self.balances[sender], (self.balances, amount)
            return
        assert amount <= self.balances[sender], (self.balances, amount)
        self.balances[sender] -= amount
        self.balances[recipient] += amount
        self.made.append((request_id, response, sender, recipient, amount))

    async def check(self) -> None:
        found = [await self.mesh.available(user) for user in self.users]
        assert found == self.balances, (found, self.balances)
        assert sum(found) == SEED * USERS
        trial = await self.mesh.ledger.GetTrialBalance(ledger_service.GetTrialBalanceRequest())
        assert trial.balanced, trial


async def test_internal_transfers_never_create_or_lose_money(mesh: Mesh) -> None:
    loop = asyncio.get_running_loop()
    examples = itertools.count()

    def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    async def start() -> Run:
        next(examples)
        users = [(await mesh.register()).user_id for _ in range(USERS)]
        for user in users:
            await mesh.fund(user, SEED)

        async def seeded() -> bool:
            return [await mesh.available(user) for user in users] == [SEED] * USERS

        # The seed is credited in the ledger directly, not by a wallet transfer, so the wallet's
        # read-your-own-transfers promise does not cover it: the account service's cache shows
        # it once it has consumed the ledger's event. The property starts from there.
        await eventually(seeded)
        return Run(mesh, users)

    # No shrinking: every example registers users and funds them through four services; the
    # failing sequence is printed as generated.
    @settings(
        max_examples=8,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(steps)
    def prop(operations: list[tuple[str, int, int, int]]) -> None:
        model = run(start())
        for operation in operations:
            run(model.step(*operation))
            run(model.check())

    await asyncio.to_thread(prop)
