"""Properties over any sequence of valid and invalid operations, and many concurrent clients."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest
from finmesh.ledger.v1 import ledger_resources_pb2 as resources
from finmesh.ledger.v1 import ledger_service_pb2 as service
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from svc.ledger import store
from tests.ledger.conftest import Ledger, entry, start_ledger, stop_ledger

USERS = 3
CLIENTS = 50
OPERATIONS_PER_CLIENT = 8
HOT_ACCOUNTS = 2
COLD_ACCOUNTS = 30

# (kind, source, target, amount): kind 0 transfer, 1 hold, 2 post a hold, 3 void a hold, 4 replay.
operations = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, USERS), st.integers(0, USERS), st.integers(1, 400)),
    min_size=1,
    max_size=12,
)


async def _book(ledger: Ledger, ids: list[str]) -> list[tuple[str, str, str]]:
    balances = await ledger.stub.BatchGetLedgerBalances(
        service.BatchGetLedgerBalancesRequest(account_ids=ids)
    )
    return [(b.debits_posted, b.credits_posted, b.debits_pending) for b in balances.balances]


async def _check(ledger: Ledger, users: list[str]) -> None:
    assert await ledger.trial_balanced()
    for user in users:
        balance = await ledger.balance(user)
        assert int(balance.available) >= 0 and int(balance.balance) >= 0, balance


async def _send(ledger: Ledger, request: resources.JournalEntry) -> None:
    try:
        await ledger.stub.CreateJournalEntry(
            service.CreateJournalEntryRequest(request_id="req-prop-0001", entry=request)
        )
    except grpc.aio.AioRpcError as error:
        assert error.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND), error


async def test_any_operations_keep_the_books(ledger: Ledger) -> None:
    custody = await ledger.account("assets:custody:hot:a1:ethereum:ETH", constrained=False)
    users = [
        await ledger.account(f"liabilities:users:u{n}:ethereum:ETH", owner=f"u{n}") for n in range(USERS)
    ]
    accounts = [custody, *users]
    await ledger.transfer("seed.000001", custody, users[0], 500, category="deposit.credit")
    loop = asyncio.get_running_loop()
    examples = iter(range(10_000))

    def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(operations)
    def prop(ops: list[tuple[int, int, int, int]]) -> None:
        example = next(examples)
        sent: list[resources.JournalEntry] = []
        applied: list[resources.JournalEntry] = []
        holds: list[str] = []
        for number, (kind, source, target, amount) in enumerate(ops):
            entry_id = f"p{example}.op{number:03d}"
            if kind in (0, 1) or (not holds and kind != 4):
                request = entry(
                    entry_id, accounts[source], accounts[target], amount, kind=2 if kind == 1 else 1
                )
                if kind == 1:
                    holds.append(entry_id)
            elif kind == 4:
                if not sent:
                    continue
                request = sent[amount % len(sent)]
            else:
                request = resources.JournalEntry(
                    entry_id=entry_id, kind=3 if kind == 2 else 4, pending_entry_id=holds[amount % len(holds)]
                )
            sent.append(request)
            if run(_send(ledger, request)):
                applied.append(request)
            run(_check(ledger, users))
        before = run(_book(ledger, accounts))
        # A refused entry may apply when sent again later (funds arrived): only applied ones are replays.
        for request in applied:
            assert run(_send(ledger, request))
        assert run(_book(ledger, accounts)) == before
        run(_check(ledger, users))

    await asyncio.to_thread(prop)


@pytest.fixture
async def pg_ledger(pg_database_url: str, tmp_path: Path) -> AsyncIterator[Ledger]:
    """A ledger on a fresh PostgreSQL database."""
    running, connection = await start_ledger(pg_database_url, tmp_path)
    yield running
    await stop_ledger(running, connection)


async def test_concurrent_clients_conserve_money(pg_ledger: Ledger) -> None:
    ledger = pg_ledger
    custody = await ledger.account("assets:custody:hot:a1:ethereum:ETH", constrained=False)
    hot = [await ledger.account(f"liabilities:clearing:h{n}:ethereum:ETH") for n in range(HOT_ACCOUNTS)]
    cold = [
        await ledger.account(f"liabilities:users:c{n}:ethereum:ETH", owner=f"c{n}")
        for n in range(COLD_ACCOUNTS)
    ]
    users = hot + cold
    for number, account in enumerate(users):
        await ledger.transfer(f"fund.{number:06d}", custody, account, 1_000, category="deposit.credit")
    acknowledged: list[str] = []

    async def client(number: int) -> None:
        rng = random.Random(number)
        for operation in range(OPERATIONS_PER_CLIENT):
            source, target = rng.choice(hot), rng.choice(cold)
            if rng.random() < 0.5:
                source, target = target, source
            entry_id = f"c{number:03d}.op{operation:03d}"
            try:
                await ledger.transfer(entry_id, source, target, rng.randint(1, 300))
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
                continue
            acknowledged.append(entry_id)

    await asyncio.gather(*(client(number) for number in range(CLIENTS)))
    assert acknowledged
    assert await ledger.trial_balanced()
    total = 0
    for account in users:
        balance = await ledger.balance(account)
        assert int(balance.available) >= 0
        total += int(balance.balance)
    assert total == 1_000 * len(users) == int((await ledger.balance(custody)).balance)
    async with ledger.app.database.transaction() as session:
        present = (
            await session.execute(select(func.count()).where(store.entries.c.entry_id.in_(acknowledged)))
        ).scalar_one()
        count = (await session.execute(select(func.count()).select_from(store.entries))).scalar_one()
    assert present == len(acknowledged) == len(set(acknowledged))
    assert count == len(users) + len(acknowledged)
    assert ledger.writer.commits_total < ledger.writer.entries_total
