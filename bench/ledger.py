"""The ledger's posting path against pgbench's TPC-B-like transfer on the same durable PostgreSQL.

One throwaway PostgreSQL (tests/harness), synchronous_commit on in both databases: every commit
waits for its WAL flush. The harness starts PostgreSQL with fsync off on its command line, which
no setting can override, so a flush is a write() without a disk sync: cheaper than in production
for both sides, which favours pgbench's one-flush-per-transfer over the ledger's group commit.
pgbench runs a transfer script (debit one account, credit another, insert a history row; the two
rows updated in id order, so that transfers never deadlock) at CONCURRENCY clients for a fixed
number of transactions. The ledger runs as its own process (`finmesh serve ledger`, no TLS) and
CONCURRENCY gRPC clients from this process post single-transfer entries (one entry = one
transfer = two postings), first among uniform accounts, then with one hot account in every
transfer; then the batch path, then latency. Each ledger run is one process lifetime, so that
its connections' WAL statistics are flushed (at exit) before pg_stat_wal is read.

Figures (ledger/...): L1 = ledger transfers per second / pgbench transfers per second (uniform);
L1_batch the same with CreateJournalEntries batches; L2 = hot rate / uniform rate; L3 = ledger
entries per WAL flush (pg_stat_wal.wal_write: with fsync off wal_sync stays 0) in the uniform
saturation run; p50_ms and p99_ms
for one client (detail: the same at ~70 % of the uniform saturation rate). After the runs the
books are verified (every asset's trial balance zero, entries in the ledger = funding + every
acknowledged entry, pgbench's balances sum to zero and its history has one row per
transaction); a mismatch raises.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from finmesh.ledger.v1 import ledger_resources_pb2 as resources
from finmesh.ledger.v1 import ledger_service_pb2 as service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as service_grpc

from bench.results import Figure
from svc.kit.client import channel
from tests.harness.servers import PostgresServer
from tests.ledger.process import LedgerProcess

ASSET = "ethereum:ETH"
DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
CONCURRENCY = 8
ACCOUNTS = 200
FUNDING = 10**15
PGBENCH_TRANSACTIONS_PER_CLIENT = 250
SINGLE_ENTRIES = 480
BATCH_SIZE = 40
BATCH_ENTRIES = 960
LATENCY_CALLS = 100
LOAD_FRACTION = 0.7
CALL_TIMEOUT_S = 30.0
PGBENCH_TIMEOUT_S = 60.0
PGBENCH_SCRIPT = """\\set x random(1, :accounts)
\\set y random(1, :accounts)
\\set lo least(:x, :y)
\\set hi greatest(:x, :y)
\\set sign case when :x < :y then 1 else -1 end
\\set delta random(1, 100)
BEGIN;
UPDATE bench_accounts SET balance = balance - :sign * :delta WHERE id = :lo;
UPDATE bench_accounts SET balance = balance + :sign * :delta WHERE id = :hi;
INSERT INTO bench_history (source, target, delta, at) VALUES (:x, :y, :delta, CURRENT_TIMESTAMP);
END;
"""


@dataclass(frozen=True)
class Run:
    """One measured ledger run: entries acknowledged, seconds, WAL flushes, call latencies."""

    entries: int
    seconds: float
    wal_writes: int
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        """Acknowledged entries per second."""
        return self.entries / self.seconds


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _wal_writes(server: PostgresServer) -> int:
    return int(server.execute("SELECT wal_write FROM pg_stat_wal"))


def _make_durable(server: PostgresServer, database: str) -> None:
    """Commits wait for their WAL flush in `database` (the harness server defaults to not waiting)."""
    server.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = on')
    shown = server.execute("SHOW synchronous_commit", database=database)
    if shown != "on":
        raise RuntimeError(f"synchronous_commit is {shown!r} in {database}")


def _pgbench(server: PostgresServer, scratch: Path) -> tuple[float, int]:
    """pgbench's transfer rate and WAL flushes; verifies its books afterwards."""
    server.execute("CREATE DATABASE pgbench")
    _make_durable(server, "pgbench")
    server.execute(
        "CREATE TABLE bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL);"
        f"INSERT INTO bench_accounts SELECT i, 0 FROM generate_series(1, {ACCOUNTS}) i;"
        "CREATE TABLE bench_history (id bigserial PRIMARY KEY, source int, target int, delta int,"
        " at timestamptz)",
        database="pgbench",
    )
    script = scratch / "transfer.sql"
    script.write_text(PGBENCH_SCRIPT)
    binary = Path(os.environ.get("FINMESH_PG_BIN", DEFAULT_PG_BIN)) / "pgbench"
    before = _wal_writes(server)
    done = subprocess.run(
        [
            str(binary), "-n", "-f", str(script), "-c", str(CONCURRENCY), "-j", "2",
            "-t", str(PGBENCH_TRANSACTIONS_PER_CLIENT), "-D", f"accounts={ACCOUNTS}", server.dsn("pgbench"),
        ],
        capture_output=True, text=True, timeout=PGBENCH_TIMEOUT_S, check=True,
    )  # fmt: skip
    syncs = _wal_writes(server) - before
    found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
    if found is None:
        raise RuntimeError(f"pgbench printed no rate:\n{done.stdout}\n{done.stderr}")
    total, rows = server.execute(
        "SELECT (SELECT sum(balance) FROM bench_accounts), (SELECT count(*) FROM bench_history)",
        database="pgbench",
    ).split("|")
    if int(total) != 0 or int(rows) != CONCURRENCY * PGBENCH_TRANSACTIONS_PER_CLIENT:
        raise RuntimeError(f"pgbench's books do not balance: sum {total}, {rows} history rows")
    return float(found.group(1)), syncs


def _transfer(entry_id: str, debit: str, credit: str, amount: int) -> resources.JournalEntry:
    return resources.JournalEntry(
        entry_id=entry_id,
        kind=resources.ENTRY_KIND_STANDARD,
        category="transfer.internal",
        postings=[
            resources.Posting(
                account_id=debit, side=resources.POSTING_SIDE_DEBIT, asset=ASSET, amount=str(amount)
            ),
            resources.Posting(
                account_id=credit, side=resources.POSTING_SIDE_CREDIT, asset=ASSET, amount=str(amount)
            ),
        ],
    )


async def _chart(stub: service_grpc.LedgerServiceAsyncStub) -> list[str]:
    """ACCOUNTS funded user accounts (liabilities that must not go negative); the first is the hot one."""
    custody = await stub.CreateLedgerAccount(
        service.CreateLedgerAccountRequest(
            request_id="bench-custody",
            account=resources.LedgerAccount(
                code=f"assets:custody:hot:bench:{ASSET}",
                type=resources.ACCOUNT_TYPE_ASSET,
                asset=ASSET,
                constraint=resources.BALANCE_CONSTRAINT_NONE,
            ),
        )
    )
    users = []
    for number in range(ACCOUNTS):
        created = await stub.CreateLedgerAccount(
            service.CreateLedgerAccountRequest(
                request_id=f"bench-user-{number:04d}",
                account=resources.LedgerAccount(
                    code=f"liabilities:users:b{number}:{ASSET}",
                    type=resources.ACCOUNT_TYPE_LIABILITY,
                    asset=ASSET,
                    constraint=resources.BALANCE_CONSTRAINT_DEBITS_MUST_NOT_EXCEED_CREDITS,
                    owner_user_id=f"b{number}",
                ),
            )
        )
        users.append(created.account.account_id)
    funding = [
        _transfer(f"fund.{number:06d}", custody.account.account_id, user, FUNDING)
        for number, user in enumerate(users)
    ]
    funded = await stub.CreateJournalEntries(
        service.CreateJournalEntriesRequest(request_id="bench-funding", entries=funding),
        timeout=CALL_TIMEOUT_S,
    )
    if funded.applied_count != ACCOUNTS:
        raise RuntimeError(f"funding applied {funded.applied_count} of {ACCOUNTS} entries")
    return users


class LedgerBench:
    """The ledger process on the benchmark database and what it acknowledged."""

    def __init__(self, server: PostgresServer, database_url: str, scratch: Path) -> None:
        self.server = server
        self.database_url = database_url
        self.scratch = scratch
        self.acknowledged = 0
        self.users: list[str] = []

    async def run(self, load: Callable[[service_grpc.LedgerServiceAsyncStub], Awaitable[Run]]) -> Run:
        """One process lifetime: start, apply `load`, stop; the WAL flushes of the whole lifetime."""
        process = LedgerProcess(self.database_url, self.scratch)
        await process.start()
        before = _wal_writes(self.server)
        try:
            async with channel(f"127.0.0.1:{process.port}", identity=None, ca=None) as connection:
                measured = await load(service_grpc.LedgerServiceStub(connection))
        finally:
            await process.stop()
        return Run(
            measured.entries, measured.seconds, _wal_writes(self.server) - before, measured.latencies_ms
        )

    async def setup(self, stub: service_grpc.LedgerServiceAsyncStub) -> Run:
        """Creates and funds the accounts."""
        self.users = await _chart(stub)
        return Run(0, 1.0, 0, [])

    async def singles(self, stub: service_grpc.LedgerServiceAsyncStub, *, hot: bool, label: str) -> Run:
        """SINGLE_ENTRIES single-transfer entries from CONCURRENCY clients."""
        pairs = random.Random(label)
        remaining = list(range(SINGLE_ENTRIES))
        latencies: list[float] = []

        async def client() -> None:
            while remaining:
                number = remaining.pop()
                source, target = pairs.sample(self.users, 2)
                if hot:
                    source, target = (self.users[0], target) if number % 2 else (source, self.users[0])
                    if source == target:
                        source = self.users[1]
                latencies.append(await self._post(stub, f"{label}.{number:06d}", source, target))

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        return Run(SINGLE_ENTRIES, time.perf_counter() - began, 0, latencies)

    async def batches(self, stub: service_grpc.LedgerServiceAsyncStub) -> Run:
        """BATCH_ENTRIES uniform transfers in batches of BATCH_SIZE from CONCURRENCY clients."""
        pairs = random.Random("batch")
        remaining = list(range(BATCH_ENTRIES // BATCH_SIZE))

        async def client() -> None:
            while remaining:
                number = remaining.pop()
                batch = []
                for index in range(BATCH_SIZE):
                    source, target = pairs.sample(self.users, 2)
                    batch.append(_transfer(f"batch.{number:04d}.{index:04d}", source, target, 1 + index))
                response = await stub.CreateJournalEntries(
                    service.CreateJournalEntriesRequest(
                        request_id=f"bench-batch-{number:04d}", entries=batch
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
                if response.applied_count != BATCH_SIZE:
                    raise RuntimeError(f"batch {number}: {response.failed_count} entries refused")
                self.acknowledged += BATCH_SIZE

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        return Run(BATCH_ENTRIES, time.perf_counter() - began, 0, [])

    async def latency(self, stub: service_grpc.LedgerServiceAsyncStub, *, rate: float) -> Run:
        """LATENCY_CALLS calls from one client one after another, or sent open-loop at `rate` per second."""
        pairs = random.Random(f"latency-{rate}")
        calls = [
            (f"latency.{rate:.0f}.{number:04d}", *pairs.sample(self.users, 2))
            for number in range(LATENCY_CALLS)
        ]
        began = time.perf_counter()
        if not rate:
            latencies = [
                await self._post(stub, entry_id, source, target) for entry_id, source, target in calls
            ]
        else:

            async def paced(number: int, entry_id: str, source: str, target: str) -> float:
                await asyncio.sleep(number / rate)
                return await self._post(stub, entry_id, source, target)

            latencies = list(await asyncio.gather(*(paced(n, *call) for n, call in enumerate(calls))))
        return Run(LATENCY_CALLS, time.perf_counter() - began, 0, latencies)

    async def _post(
        self, stub: service_grpc.LedgerServiceAsyncStub, entry_id: str, source: str, target: str
    ) -> float:
        began = time.perf_counter()
        await stub.CreateJournalEntry(
            service.CreateJournalEntryRequest(
                request_id=entry_id, entry=_transfer(entry_id, source, target, 1)
            ),
            timeout=CALL_TIMEOUT_S,
        )
        self.acknowledged += 1
        return (time.perf_counter() - began) * 1000

    async def verify(self, stub: service_grpc.LedgerServiceAsyncStub) -> Run:
        """Fails loudly unless every asset balances and the ledger holds exactly the acknowledged entries."""
        trial = await stub.GetTrialBalance(service.GetTrialBalanceRequest())
        if not trial.balanced or any(a.total_debits_posted != a.total_credits_posted for a in trial.assets):
            raise RuntimeError(f"the ledger's trial balance is not zero: {trial}")
        listed = 0
        token = ""
        while True:
            page = await stub.ListJournalEntries(
                service.ListJournalEntriesRequest(page_size=1000, page_token=token)
            )
            listed += len(page.entries)
            token = page.next_page_token
            if not token:
                break
        expected = ACCOUNTS + self.acknowledged
        if trial.as_of_sequence != expected or listed != expected:
            raise RuntimeError(
                f"the ledger holds {listed} entries (last sequence {trial.as_of_sequence}); it acknowledged"
                f" {self.acknowledged} transfers after {ACCOUNTS} funding entries"
            )
        return Run(0, 1.0, 0, [])


async def _ledger(bench: LedgerBench) -> dict[str, Run]:
    await bench.run(bench.setup)
    runs = {
        "uniform": await bench.run(lambda stub: bench.singles(stub, hot=False, label="uniform")),
        "hot": await bench.run(lambda stub: bench.singles(stub, hot=True, label="hot")),
        "batch": await bench.run(bench.batches),
        "single_client": await bench.run(lambda stub: bench.latency(stub, rate=0)),
    }
    target = LOAD_FRACTION * runs["uniform"].rate
    runs["loaded"] = await bench.run(lambda stub: bench.latency(stub, rate=target))
    await bench.run(bench.verify)
    return runs


def run() -> list[Figure]:
    """Runs pgbench and the ledger side by side on one durable PostgreSQL; returns the figures."""
    server = PostgresServer()
    with tempfile.TemporaryDirectory() as scratch:
        try:
            server.start()
            name = f"ledger_{uuid.uuid4().hex[:8]}"
            database_url = server.create_database(name)
            _make_durable(server, name)
            bench = LedgerBench(server, database_url, Path(scratch))
            runs = asyncio.run(_ledger(bench))
            pgbench_tps, pgbench_writes = _pgbench(server, Path(scratch))
        finally:
            server.close()
    uniform, hot, batch = runs["uniform"], runs["hot"], runs["batch"]
    single, loaded = runs["single_client"], runs["loaded"]
    detail = {
        "concurrency": CONCURRENCY,
        "accounts": ACCOUNTS,
        "pgbench_tps": round(pgbench_tps, 1),
        "pgbench_transactions": CONCURRENCY * PGBENCH_TRANSACTIONS_PER_CLIENT,
        "pgbench_wal_writes": pgbench_writes,
        "ledger_uniform_entries_per_s": round(uniform.rate, 1),
        "ledger_hot_entries_per_s": round(hot.rate, 1),
        "ledger_batch_entries_per_s": round(batch.rate, 1),
        "entries": {name: measured.entries for name, measured in runs.items()},
        "wal_writes": {name: measured.wal_writes for name, measured in runs.items()},
        "note": "one entry = one transfer = two postings; rates count transfers on both sides",
    }
    latency = {
        "single_client_p50_ms": round(statistics.median(single.latencies_ms), 2),
        "single_client_p99_ms": round(_percentile(single.latencies_ms, 0.99), 2),
        "loaded_rate_per_s": round(loaded.rate, 1),
        "loaded_p50_ms": round(statistics.median(loaded.latencies_ms), 2),
        "loaded_p99_ms": round(_percentile(loaded.latencies_ms, 0.99), 2),
        "uniform_saturation_p50_ms": round(statistics.median(uniform.latencies_ms), 2),
        "uniform_saturation_p99_ms": round(_percentile(uniform.latencies_ms, 0.99), 2),
    }
    return [
        Figure("ledger", "L1", uniform.rate / pgbench_tps, "ratio", ">=1.0", detail),
        Figure("ledger", "L1_batch", batch.rate / pgbench_tps, "ratio", ">=1.0", {}),
        Figure("ledger", "L2", hot.rate / uniform.rate, "ratio", ">=0.75", {}),
        Figure("ledger", "L3", uniform.entries / max(uniform.wal_writes, 1), "entries", ">=10", {}),
        Figure("ledger", "L3_batch", batch.entries / max(batch.wal_writes, 1), "entries", ">=10", {}),
        Figure(
            "ledger", "p50_ms", latency["single_client_p50_ms"], "ms", "", {"client": "single", **latency}
        ),
        Figure(
            "ledger", "p99_ms", latency["single_client_p99_ms"], "ms", "", {"client": "single", **latency}
        ),
        Figure("ledger", "p50_ms_loaded", latency["loaded_p50_ms"], "ms", "", {"load": LOAD_FRACTION}),
        Figure("ledger", "p99_ms_loaded", latency["loaded_p99_ms"], "ms", "", {"load": LOAD_FRACTION}),
    ]
