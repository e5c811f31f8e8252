"""The ledger process is SIGKILLed in the middle of a stream of batches, then restarted on the same
PostgreSQL database; clients retry every batch whose answer they did not get, with the same entry ids.

Afterwards: every entry acknowledged before the kill is present, none is duplicated, every retried
entry is applied exactly once, every asset's trial balance is zero, and every account's balance
columns equal the sums of its postings.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from finmesh.ledger.v1 import ledger_resources_pb2 as resources
from finmesh.ledger.v1 import ledger_service_pb2 as service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as service_grpc
from sqlalchemy import func, select

from svc.kit.client import channel
from svc.kit.db import Database
from svc.ledger import store
from tests.ledger.conftest import ASSET, entry
from tests.ledger.process import LedgerProcess

CLIENTS = 4
BATCHES_PER_CLIENT = 12
ENTRIES_PER_BATCH = 10
USERS = 12
FUNDING = 10**12
# The kill comes once this many batches have been acknowledged, while every client streams.
KILL_AFTER_BATCHES = 16
CALL_TIMEOUT_S = 10.0
RETRY_PAUSE_S = 0.05
TEST_TIMEOUT_S = 55.0


@dataclass
class Stream:
    """What the clients saw: acknowledged entries, batches retried after a lost answer."""

    acknowledged: dict[str, int] = field(default_factory=dict)
    acknowledged_before_kill: set[str] = field(default_factory=set)
    retried: set[str] = field(default_factory=set)
    retried_codes: dict[str, int] = field(default_factory=dict)
    batches_answered: int = 0
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    enough: asyncio.Event = field(default_factory=asyncio.Event)


def _batch(client: int, number: int, users: list[str]) -> list[resources.JournalEntry]:
    """A batch of transfers among users; small amounts, so no entry is ever refused."""
    batch = []
    for index in range(ENTRIES_PER_BATCH):
        source = users[(client + number + index) % USERS]
        target = users[(client * 7 + number * 3 + index * 5 + 1) % USERS]
        if target == source:
            target = users[(users.index(source) + 1) % USERS]
        batch.append(entry(f"c{client}.b{number:03d}.e{index:03d}", source, target, 1 + index))
    return batch


async def _client(stub: service_grpc.LedgerServiceStub, client: int, users: list[str], seen: Stream) -> None:
    """Streams this client's batches; a batch without an answer is sent again until one comes."""
    for number in range(BATCHES_PER_CLIENT):
        batch = _batch(client, number, users)
        request = service.CreateJournalEntriesRequest(
            request_id=f"batch-c{client}-b{number:03d}", entries=batch
        )
        lost = False
        while True:
            killed_before = seen.killed.is_set()
            try:
                response = await stub.CreateJournalEntries(request, timeout=CALL_TIMEOUT_S)
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), error
                lost = True
                await asyncio.sleep(RETRY_PAUSE_S)
        assert len(response.results) == len(batch)
        for sent, result in zip(batch, response.results, strict=True):
            assert result.entry_id == sent.entry_id and result.code in (1, 2), result
            assert sent.entry_id not in seen.acknowledged, sent.entry_id
            seen.acknowledged[sent.entry_id] = result.sequence
            if not killed_before:
                seen.acknowledged_before_kill.add(sent.entry_id)
            if lost:
                seen.retried.add(sent.entry_id)
                seen.retried_codes[sent.entry_id] = result.code
            else:
                assert result.code == 1, result  # never sent before: applied now
        seen.batches_answered += 1
        if seen.batches_answered >= KILL_AFTER_BATCHES:
            seen.enough.set()


@pytest.fixture
async def ledger_process(pg_database_url: str, tmp_path: Path) -> AsyncIterator[LedgerProcess]:
    """The ledger as its own OS process on a fresh PostgreSQL database; stopped afterwards."""
    running = LedgerProcess(pg_database_url, tmp_path)
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


async def _accounts(stub: service_grpc.LedgerServiceStub) -> tuple[str, list[str]]:
    """A custody account and USERS funded user accounts."""
    ids = []
    for code, kind, constraint in [
        ("assets:custody:hot:a1:ethereum:ETH", 1, 1),
        *((f"liabilities:users:u{n}:ethereum:ETH", 2, 2) for n in range(USERS)),
    ]:
        created = await stub.CreateLedgerAccount(
            service.CreateLedgerAccountRequest(
                request_id=f"acct-{uuid.uuid4().hex}",
                account=resources.LedgerAccount(code=code, type=kind, asset=ASSET, constraint=constraint),
            )
        )
        ids.append(created.account.account_id)
    custody, users = ids[0], ids[1:]
    funding = [entry(f"fund.u{n:03d}", custody, user, FUNDING) for n, user in enumerate(users)]
    funded = await stub.CreateJournalEntries(
        service.CreateJournalEntriesRequest(request_id="funding-0001", entries=funding)
    )
    assert funded.applied_count == USERS
    return custody, users


async def _kill_and_restart(ledger: LedgerProcess, seen: Stream) -> None:
    await seen.enough.wait()
    seen.killed.set()
    await ledger.kill()
    await ledger.start()


async def _scenario(ledger: LedgerProcess, database_url: str) -> None:
    async with channel(f"127.0.0.1:{ledger.port}", identity=None, ca=None) as connection:
        stub = service_grpc.LedgerServiceStub(connection)
        custody, users = await _accounts(stub)
        seen = Stream()
        await asyncio.gather(
            _kill_and_restart(ledger, seen),
            *(_client(stub, client, users, seen) for client in range(CLIENTS)),
        )
        trial = await stub.GetTrialBalance(service.GetTrialBalanceRequest())
    sent = CLIENTS * BATCHES_PER_CLIENT * ENTRIES_PER_BATCH
    assert len(seen.acknowledged) == sent
    assert seen.retried, "the kill cut no batch in flight"
    assert len(seen.acknowledged_before_kill) >= KILL_AFTER_BATCHES * ENTRIES_PER_BATCH
    assert trial.balanced and [a.asset for a in trial.assets] == [ASSET]
    assert trial.assets[0].total_debits_posted == trial.assets[0].total_credits_posted

    database = Database(database_url, schema="ledger")
    try:
        async with database.transaction() as session:
            rows = (await session.execute(select(store.entries.c.entry_id, store.entries.c.sequence))).all()
            last = await store.snapshot(session)
            sums = (
                await session.execute(
                    select(
                        store.postings.c.account_id, store.postings.c.side, func.sum(store.postings.c.amount)
                    ).group_by(store.postings.c.account_id, store.postings.c.side)
                )
            ).all()
            accounts = {
                record.account.account_id: record.account for record in await store.all_accounts(session, [])
            }
    finally:
        await database.dispose()
    in_ledger = {entry_id: sequence for entry_id, sequence in rows}
    assert len(rows) == len(in_ledger) == sent + USERS, "an entry is missing or duplicated"
    assert sorted(in_ledger.values()) == list(range(1, last.sequence + 1))
    # Acknowledged entries, before or after the kill, are in the ledger with the sequence the
    # client was told; a retried entry is there once, whether it was committed before the kill
    # (EXISTS on retry) or only after it (OK).
    assert all(in_ledger[entry_id] == sequence for entry_id, sequence in seen.acknowledged.items())
    assert seen.acknowledged_before_kill <= in_ledger.keys()
    assert set(seen.retried_codes.values()) <= {1, 2}
    posted: dict[str, list[int]] = {account_id: [0, 0] for account_id in accounts}
    for account_id, side, amount in sums:
        posted[account_id][side - 1] = int(amount)
    for account_id, account in accounts.items():
        balance = account.balance
        assert [balance.debits_posted, balance.credits_posted] == posted[account_id], account.code
        assert balance.debits_pending == balance.credits_pending == 0
    assert sum(posted[custody]) == USERS * FUNDING
    assert (
        sum(
            account.balance.credits_posted - account.balance.debits_posted
            for account in accounts.values()
            if account.account_id != custody
        )
        == USERS * FUNDING
    )


async def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    ledger_process: LedgerProcess, pg_database_url: str
) -> None:
    await asyncio.wait_for(_scenario(ledger_process, pg_database_url), TEST_TIMEOUT_S)
