"""The ledger's posting path against pgbench's TPC-B-like transfer on the same durable PostgreSQL.

One throwaway PostgreSQL (tests/harness) started durable (fsync, synchronous_commit and
full_page_writes on, PostgreSQL's production defaults), and synchronous_commit checked on in
both databases: every commit of either side waits for a real WAL flush to disk.
pgbench runs a transfer script (debit one account, credit another, insert a history row; the two
rows updated in id order, so that transfers never deadlock) at CONCURRENCY clients for a fixed
number of transactions. The ledger runs as its own process (`finmesh serve ledger`, no TLS) and
CONCURRENCY gRPC clients from this process post transfers (one entry = one transfer = two
postings, so rates compare transfers with transfers). The posting path measured is the one the
issue names: CreateJournalEntries batches of BATCH_SIZE entries (TigerBeetle's clients batch up
to 8,190), first among uniform accounts, then with one hot account in every transfer; the same
two runs with one entry per CreateJournalEntry call follow, then latency. One unmeasured run
of each side comes first, and each measured run starts after a CHECKPOINT. Each ledger run is
one process lifetime, so that its connections' WAL statistics are flushed (at exit) before
pg_stat_wal is read.

Figures (ledger/...): L1 = ledger postings per second / pgbench transfers per second (uniform,
batches), as the issue defines it, and L1_transfers = ledger transfers (entries) per second /
pgbench transfers per second, like for like (half of L1: every entry has two postings);
L2 = hot rate / uniform rate (batches); L3 = ledger postings per WAL flush (pg_stat_wal.wal_sync)
in the uniform batch run, L3_entries the same in entries; L1_single, L2_single and L3_single the
same in entries with one entry per call; p50_ms and p99_ms for one client calling CreateJournalEntry one entry
at a time (detail: the same at ~70 % of the single-entry saturation rate). After the runs the
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
from functools import partial
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
ROUNDS = 3
PGBENCH_TRANSACTIONS_PER_CLIENT = 1_000
SINGLE_ENTRIES = 960
BATCH_SIZE = 1_000
# Every benchmark entry is one transfer: a debit posting and a credit posting.
POSTINGS_PER_ENTRY = 2
BATCH_ENTRIES = 32_000
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
    # CPU seconds the ledger process spent in the run: near `seconds` means the ledger's Python
    # was the bottleneck, far below it means the database was.
    cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        """Acknowledged entries per second."""
        return self.entries / self.seconds


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _wal_writes(server: PostgresServer) -> int:
    """WAL flushes to disk so far (the server is durable, so each one is an fdatasync)."""
    return int(server.execute("SELECT wal_sync FROM pg_stat_wal"))


def _settle(server: PostgresServer) -> None:
    """Starts a measured run from the same state on both sides: the previous run's dirty pages
    written out, so that neither side pays for the other's checkpoint."""
    server.execute("CHECKPOINT")


def _cpu_seconds(process: LedgerProcess) -> float:
    """User + system CPU seconds of the ledger process so far (Linux /proc)."""
    assert process.process is not None
    fields = Path(f"/proc/{process.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _make_durable(server: PostgresServer, database: str) -> None:
    """Commits wait for their WAL flush in `database` (the harness server defaults to not waiting)."""
    server.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = on')
    shown = server.execute("SHOW synchronous_commit", database=database)
    if shown != "on":
        raise RuntimeError(f"synchronous_commit is {shown!r} in {database}")


class PgBench:
    """pgbench's transfer script on its own durable database; runs repeatedly, books kept."""

    def __init__(self, server: PostgresServer, scratch: Path) -> None:
        self.server = server
        self.script = scratch / "transfer.sql"
        self.transactions = 0

    def setup(self) -> None:
        """Creates the accounts and the history table."""
        self.server.execute("CREATE DATABASE pgbench")
        _make_durable(self.server, "pgbench")
        self.server.execute(
            "CREATE TABLE bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL);"
            f"INSERT INTO bench_accounts SELECT i, 0 FROM generate_series(1, {ACCOUNTS}) i;"
            "CREATE TABLE bench_history (id bigserial PRIMARY KEY, source int, target int, delta int,"
            " at timestamptz)",
            database="pgbench",
        )
        self.script.write_text(PGBENCH_SCRIPT)

    def run(self) -> tuple[float, int]:
        """One pgbench run: its transfer rate and the WAL flushes it caused."""
        binary = Path(os.environ.get("FINMESH_PG_BIN", DEFAULT_PG_BIN)) / "pgbench"
        _settle(self.server)
        before = _wal_writes(self.server)
        done = subprocess.run(
            [
                str(binary), "-n", "-f", str(self.script), "-c", str(CONCURRENCY), "-j", "2",
                "-t", str(PGBENCH_TRANSACTIONS_PER_CLIENT), "-D", f"accounts={ACCOUNTS}",
                self.server.dsn("pgbench"),
            ],
            capture_output=True, text=True, timeout=PGBENCH_TIMEOUT_S, check=True,
        )  # fmt: skip
        syncs = _wal_writes(self.server) - before
        self.transactions += CONCURRENCY * PGBENCH_TRANSACTIONS_PER_CLIENT
        found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
        if found is None:
            raise RuntimeError(f"pgbench printed no rate:\n{done.stdout}\n{done.stderr}")
        return float(found.group(1)), syncs

    def verify(self) -> None:
        """Fails loudly unless pgbench's balances sum to zero with one history row per transaction."""
        total, rows = self.server.execute(
            "SELECT (SELECT sum(balance) FROM bench_accounts), (SELECT count(*) FROM bench_history)",
            database="pgbench",
        ).split("|")
        if int(total) != 0 or int(rows) != self.transactions:
            raise RuntimeError(f"pgbench's books do not balance: sum {total}, {rows} history rows")


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
        _settle(self.server)
        before = _wal_writes(self.server)
        try:
            async with channel(f"127.0.0.1:{process.port}", identity=None, ca=None) as connection:
                cpu_before = _cpu_seconds(process)
                measured = await load(service_grpc.LedgerServiceStub(connection))
                cpu = _cpu_seconds(process) - cpu_before
        finally:
            await process.stop()
        return Run(
            measured.entries,
            measured.seconds,
            _wal_writes(self.server) - before,
            measured.latencies_ms,
            cpu,
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
                source, target = self._pair(pairs, hot=hot, number=number)
                latencies.append(await self._post(stub, f"{label}.{number:06d}", source, target))

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        return Run(SINGLE_ENTRIES, time.perf_counter() - began, 0, latencies)

    def _pair(self, pairs: random.Random, *, hot: bool, number: int) -> tuple[str, str]:
        """Two distinct accounts; with `hot`, the first account is one of them, alternating sides."""
        source, target = pairs.sample(self.users, 2)
        if hot:
            source, target = (self.users[0], target) if number % 2 else (source, self.users[0])
            if source == target:
                other = self.users[1]
                source, target = (self.users[0], other) if number % 2 else (other, self.users[0])
        return source, target

    async def batches(self, stub: service_grpc.LedgerServiceAsyncStub, *, hot: bool, label: str) -> Run:
        """BATCH_ENTRIES transfers in batches of BATCH_SIZE from CONCURRENCY clients."""
        pairs = random.Random(label)
        remaining = list(range(BATCH_ENTRIES // BATCH_SIZE))

        async def client() -> None:
            while remaining:
                number = remaining.pop()
                batch = []
                for index in range(BATCH_SIZE):
                    source, target = self._pair(pairs, hot=hot, number=index)
                    batch.append(_transfer(f"{label}.{number:04d}.{index:04d}", source, target, 1 + index))
                response = await stub.CreateJournalEntries(
                    service.CreateJournalEntriesRequest(
                        request_id=f"bench-{label}-{number:04d}", entries=batch
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


@dataclass
class Rounds:
    """ROUNDS alternating pgbench and ledger batch runs, so that both see the same machine."""

    pgbench: list[tuple[float, int]]
    batch: list[Run]
    batch_hot: list[Run]

    @property
    def pgbench_tps(self) -> float:
        """The median pgbench rate."""
        return statistics.median(tps for tps, _ in self.pgbench)

    def l1(self, per_entry: int = 1) -> float:
        """The median over rounds of ledger batch rate / pgbench rate, the ledger's rate counted in
        `per_entry` units per entry (1: transfers, POSTINGS_PER_ENTRY: postings)."""
        return statistics.median(
            per_entry * run.rate / tps for run, (tps, _) in zip(self.batch, self.pgbench, strict=True)
        )

    def l2(self) -> float:
        """The median over rounds of hot batch rate / uniform batch rate."""
        return statistics.median(
            hot.rate / uniform.rate for hot, uniform in zip(self.batch_hot, self.batch, strict=True)
        )

    def l3(self, per_entry: int = 1) -> float:
        """Ledger entries (or, with `per_entry`, postings) per WAL flush over every uniform batch run."""
        entries = sum(run.entries for run in self.batch)
        return per_entry * entries / max(sum(run.wal_writes for run in self.batch), 1)


async def _ledger(bench: LedgerBench, pgbench: PgBench) -> tuple[dict[str, Run], Rounds]:
    await bench.run(bench.setup)
    pgbench.setup()
    # One unmeasured run of each first: both sides then start from tables past their first
    # autovacuum and analyze, which otherwise lands on whichever side runs first.
    pgbench.run()
    await bench.run(partial(bench.batches, hot=False, label="warmup"))
    rounds = Rounds([], [], [])
    for number in range(ROUNDS):
        rounds.pgbench.append(pgbench.run())
        rounds.batch.append(await bench.run(partial(bench.batches, hot=False, label=f"batch{number}")))
        rounds.batch_hot.append(await bench.run(partial(bench.batches, hot=True, label=f"batch-hot{number}")))
    runs = {
        "uniform": await bench.run(lambda stub: bench.singles(stub, hot=False, label="uniform")),
        "hot": await bench.run(lambda stub: bench.singles(stub, hot=True, label="hot")),
        "single_client": await bench.run(lambda stub: bench.latency(stub, rate=0)),
    }
    target = LOAD_FRACTION * runs["uniform"].rate
    runs["loaded"] = await bench.run(lambda stub: bench.latency(stub, rate=target))
    await bench.run(bench.verify)
    pgbench.verify()
    return runs, rounds


def run() -> list[Figure]:
    """Runs pgbench and the ledger side by side on one durable PostgreSQL; returns the figures."""
    server = PostgresServer(durable=True)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            server.start()
            name = f"ledger_{uuid.uuid4().hex[:8]}"
            database_url = server.create_database(name)
            _make_durable(server, name)
            bench = LedgerBench(server, database_url, Path(scratch))
            runs, rounds = asyncio.run(_ledger(bench, PgBench(server, Path(scratch))))
        finally:
            server.close()
    uniform, hot = runs["uniform"], runs["hot"]
    pgbench_tps = rounds.pgbench_tps
    single, loaded = runs["single_client"], runs["loaded"]
    detail = {
        "concurrency": CONCURRENCY,
        "accounts": ACCOUNTS,
        "rounds": ROUNDS,
        "pgbench_tps": [round(tps, 1) for tps, _ in rounds.pgbench],
        "pgbench_transactions_per_round": CONCURRENCY * PGBENCH_TRANSACTIONS_PER_CLIENT,
        "pgbench_wal_writes": [writes for _, writes in rounds.pgbench],
        "ledger_uniform_entries_per_s": round(uniform.rate, 1),
        "ledger_hot_entries_per_s": round(hot.rate, 1),
        "ledger_batch_entries_per_s": [round(run.rate, 1) for run in rounds.batch],
        "ledger_batch_hot_entries_per_s": [round(run.rate, 1) for run in rounds.batch_hot],
        "ledger_batch_wal_writes": [run.wal_writes for run in rounds.batch],
        "ledger_batch_cpu_fraction": [round(run.cpu_s / run.seconds, 2) for run in rounds.batch],
        "batch_size": BATCH_SIZE,
        "entries": {name: measured.entries for name, measured in runs.items()},
        "wal_writes": {name: measured.wal_writes for name, measured in runs.items()},
        "ledger_cpu_fraction": {
            name: round(measured.cpu_s / measured.seconds, 2) for name, measured in runs.items()
        },
        "note": (
            "one entry = one transfer = two postings. L1 and L3 count postings as the issue "
            "defines them (ledger postings/s over pgbench transfers/s); L1_transfers and "
            "L3_entries count transfers on both sides, like for like"
        ),
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
        Figure("ledger", "L1", rounds.l1(POSTINGS_PER_ENTRY), "ratio", ">=1.0", detail),
        Figure("ledger", "L1_transfers", rounds.l1(), "ratio", "", {}),
        Figure("ledger", "L2", rounds.l2(), "ratio", ">=0.75", {}),
        Figure("ledger", "L3", rounds.l3(POSTINGS_PER_ENTRY), "postings", ">=10", {}),
        Figure("ledger", "L3_entries", rounds.l3(), "entries", "", {}),
        Figure("ledger", "L1_single", uniform.rate / pgbench_tps, "ratio", "", {}),
        Figure("ledger", "L2_single", hot.rate / uniform.rate, "ratio", "", {}),
        Figure("ledger", "L3_single", uniform.entries / max(uniform.wal_writes, 1), "entries", "", {}),
        Figure(
            "ledger", "p50_ms", latency["single_client_p50_ms"], "ms", "", {"client": "single", **latency}
        ),
        Figure(
            "ledger", "p99_ms", latency["single_client_p99_ms"], "ms", "", {"client": "single", **latency}
        ),
        Figure("ledger", "p50_ms_loaded", latency["loaded_p50_ms"], "ms", "", {"load": LOAD_FRACTION}),
        Figure("ledger", "p99_ms_loaded", latency["loaded_p99_ms"], "ms", "", {"load": LOAD_FRACTION}),
    ]
