"""The SQLite bus: the in-process bus's behaviours on a file, and events crossing OS processes.

The cross-process tests run `tests/kit/sqlite_bus_child.py` as other processes on the same bus
file, as `make run` does with one process per service.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from svc.kit.bus import (
    BusError,
    BusMessage,
    InProcessBus,
    ReceivedMessage,
    SqliteBus,
    Subscription,
    partition_for_key,
)
from svc.kit.config import KitSettings, load_settings
from svc.kit.consumer import EventConsumer
from svc.kit.db import Database
from svc.kit.launcher import Endpoint, Layout, child_environment
from svc.kit.outbox import OutboxRelay
from svc.kit.server import ServiceApp
from svc.kit.tables import inbox
from tests.kit.conftest import probe_catalog
from tests.kit.sqlite_bus_child import APPEND_TOPIC
from tests.kit.test_events import (
    TEST_EVENT_TOPIC,
    assert_exactly_once_in_order,
    change_state,
    recording_handler,
    seen_rows,
    test_metadata,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
TOPIC = "kit-test.sqlite-bus"
POLL_INTERVAL_MS = 20
CHILD_TIMEOUT_S = 30


@pytest.fixture
async def service_db(database: Database) -> Database:
    """The migrated kit database (SQLite and PostgreSQL) plus the event tests' own tables."""
    async with database.engine.begin() as connection:
        await connection.run_sync(test_metadata.create_all)
    return database


@pytest.fixture
async def sqlite_bus(tmp_path: Path) -> AsyncIterator[SqliteBus]:
    bus = SqliteBus(tmp_path / "bus.db", partitions=3, poll_interval_ms=POLL_INTERVAL_MS)
    await bus.start()
    yield bus
    await bus.stop()


async def fetch_all(
    subscription: Subscription, count: int, *, records_max: int = 500
) -> list[ReceivedMessage]:
    """Fetches until `count` messages arrived; fails the test after a few seconds."""
    received: list[ReceivedMessage] = []
    async with asyncio.timeout(10):
        while len(received) < count:
            received.extend(await subscription.fetch(timeout_ms=200, records_max=records_max))
    return received


def message(key: str, sequence: int, topic: str = TOPIC) -> BusMessage:
    return BusMessage(topic, key, f"{key}:{sequence}".encode(), {"seq": str(sequence), "key": key})


# -- the log ---------------------------------------------------------------------------------------


async def test_publish_keeps_each_key_in_order_with_gap_free_offsets(sqlite_bus: SqliteBus) -> None:
    keys = [f"acc-{n}" for n in range(6)]
    for call in range(3):
        await sqlite_bus.publish([message(key, call * 10 + n) for n in range(10) for key in keys])
    subscription = await sqlite_bus.subscribe([TOPIC], "g")
    received = await fetch_all(subscription, 180, records_max=7)
    assert await subscription.fetch(timeout_ms=50) == []

    per_key: dict[str, list[int]] = defaultdict(list)
    per_partition: dict[int, list[int]] = defaultdict(list)
    for item in received:
        assert item.partition == partition_for_key(item.key, 3)
        assert item.value == f"{item.key}:{item.headers['seq']}".encode()
        per_key[item.key].append(int(item.headers["seq"]))
        per_partition[item.partition].append(item.offset)
    assert all(sequence == list(range(30)) for sequence in per_key.values())
    assert all(offsets == list(range(len(offsets))) for offsets in per_partition.values())
    assert len(per_partition) > 1
    assert [(m.key, m.offset) for m in await sqlite_bus.messages(TOPIC)] == sorted(
        ((m.key, m.offset) for m in received), key=lambda pair: (partition_for_key(pair[0], 3), pair[1])
    )


async def test_commit_stores_what_was_fetched_and_the_rest_comes_again(
    sqlite_bus: SqliteBus, tmp_path: Path
) -> None:
    await sqlite_bus.publish([message("a", n) for n in range(10)])
    partition = partition_for_key("a", 3)
    first = await sqlite_bus.subscribe([TOPIC], "g")
    assert [m.offset for m in await first.fetch(records_max=4)] == [0, 1, 2, 3]
    await first.commit()
    assert [m.offset for m in await first.fetch(records_max=3)] == [4, 5, 6]  # not committed
    with pytest.raises(BusError, match="already has a subscription"):
        await sqlite_bus.subscribe([TOPIC], "g")
    await first.close()
    with pytest.raises(BusError, match="closed"):
        await first.commit()
    assert await sqlite_bus.committed("g", TOPIC, partition) == 4

    second = await sqlite_bus.subscribe([TOPIC], "g")
    assert [m.offset for m in await fetch_all(second, 6)] == [4, 5, 6, 7, 8, 9]
    await second.commit()
    other_group = await sqlite_bus.subscribe([TOPIC], "other")
    assert len(await fetch_all(other_group, 10)) == 10
    await second.close()
    await other_group.close()

    # Another process (another bus on the same file) starts where the group committed.
    elsewhere = SqliteBus(tmp_path / "bus.db")
    await elsewhere.start()
    try:
        assert elsewhere.partitions == 3  # the file's count
        await elsewhere.publish([message("a", 10)])
        resumed = await elsewhere.subscribe([TOPIC], "g")
        assert [(m.offset, m.headers["seq"]) for m in await resumed.fetch()] == [(10, "10")]
    finally:
        await elsewhere.stop()


async def test_a_failed_publish_stores_nothing(sqlite_bus: SqliteBus) -> None:
    unstorable = BusMessage(TOPIC, "b", object(), {})  # type: ignore[arg-type]
    with pytest.raises(BusError, match="publish of 3 messages failed"):
        await sqlite_bus.publish([message("a", 0), message("b", 0), unstorable])
    assert await sqlite_bus.messages(TOPIC) == []
    await sqlite_bus.publish([message("a", 1)])
    assert [(m.key, m.offset) for m in await sqlite_bus.messages(TOPIC)] == [("a", 0)]


async def test_a_fetch_wakes_on_a_publish_of_its_process_and_polls_for_others(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    here = SqliteBus(path, poll_interval_ms=60_000)  # only a publish of this bus wakes it early
    there = SqliteBus(path, poll_interval_ms=POLL_INTERVAL_MS)
    await here.start()
    await there.start()
    try:
        local = await here.subscribe([TOPIC], "local")
        remote = await there.subscribe([TOPIC], "remote")
        fetches = [asyncio.create_task(sub.fetch(timeout_ms=10_000)) for sub in (local, remote)]
        await asyncio.sleep(0.1)
        began = time.monotonic()
        await here.publish([message("a", 0)])
        received = await asyncio.wait_for(asyncio.gather(*fetches), 5)
        elapsed = time.monotonic() - began
    finally:
        await here.stop()
        await there.stop()
    assert [[m.value for m in batch] for batch in received] == [[b"a:0"], [b"a:0"]]
    assert elapsed < 2, f"took {elapsed:.2f} s"


async def test_purge_keeps_young_records_and_what_some_group_has_not_committed(tmp_path: Path) -> None:
    bus = SqliteBus(tmp_path / "bus.db", partitions=1, retention_s=3600, purge_batch_size_max=2)
    await bus.start()
    try:
        await bus.publish([message("a", n) for n in range(5)])
        await bus.publish([message("a", n, topic="kit-test.nobody") for n in range(3)])
        ahead = await bus.subscribe([TOPIC], "ahead")
        await fetch_all(ahead, 5)
        await ahead.commit()
        behind = await bus.subscribe([TOPIC], "behind")
        await fetch_all(behind, 3, records_max=3)
        await behind.commit()
        idle = await bus.subscribe([TOPIC], "idle")  # known, nothing committed: holds every record
        later = time.time() + 2 * 3600

        assert await bus.purge() == 0  # young
        assert await bus.purge(now=later) == 3  # only the topic no group reads
        await fetch_all(idle, 5)
        await idle.commit()
        assert await bus.purge(now=later) == 3  # offsets 0-2: "behind" is at 3
        assert [m.offset for m in await bus.messages(TOPIC)] == [3, 4]

        await bus.publish([message("a", 5)])  # offsets go on after a purge
        newcomer = await bus.subscribe([TOPIC], "newcomer")
        assert [m.offset for m in await fetch_all(newcomer, 3)] == [3, 4, 5]
    finally:
        await bus.stop()


async def test_the_partition_count_of_a_file_cannot_change(tmp_path: Path) -> None:
    first = SqliteBus(tmp_path / "bus.db", partitions=3)
    await first.start()
    await first.stop()
    with pytest.raises(BusError, match="has 3 partitions, not 5"):
        await SqliteBus(tmp_path / "bus.db", partitions=5).start()
    with pytest.raises(BusError, match="stopped"):
        await first.publish([message("a", 0)])


# -- relay and consumer ----------------------------------------------------------------------------


async def test_relay_and_consumer_deliver_every_event_once_in_order(
    service_db: Database, sqlite_bus: SqliteBus
) -> None:
    run = "s-" + uuid.uuid4().hex[:8]
    relay = OutboxRelay(service_db, sqlite_bus, batch_size_max=37, poll_interval_ms=20)
    consumer = EventConsumer(
        service_db, sqlite_bus, name="kit-test", topics=[TEST_EVENT_TOPIC], handler=recording_handler(run)
    )
    await relay.start()
    await consumer.start()
    try:
        versions = {f"{run}-{n}": 30 for n in range(5)}
        expected = set()
        for version in range(1, 31):
            for aggregate_id in versions:
                expected.add(await change_state(service_db, aggregate_id, version))
        await relay.drain(timeout_s=20)
        await wait_for(lambda: _seen_count(service_db, 150), 20, "150 events handled")
    finally:
        await consumer.stop()
        await relay.stop()
    assert_exactly_once_in_order(await seen_rows(service_db), expected, versions)
    assert consumer.stats.handled == 150 and consumer.stats.duplicates == 0
    assert await _inboxed(service_db) == expected


# -- across processes ------------------------------------------------------------------------------


async def test_events_from_another_process_arrive_exactly_once(service_db: Database, tmp_path: Path) -> None:
    """A child process writes 200 state changes while its relay publishes their events to the bus
    file; this process consumes them into its inbox (on SQLite and on PostgreSQL)."""
    run = "x-" + uuid.uuid4().hex[:8]
    bus_path = tmp_path / "bus.db"
    aggregates, versions = 5, 40
    bus = SqliteBus(bus_path, poll_interval_ms=POLL_INTERVAL_MS)
    await bus.start()
    consumer = EventConsumer(
        service_db, bus, name="kit-test", topics=[TEST_EVENT_TOPIC], handler=recording_handler(run)
    )
    await consumer.start()
    child = await _spawn(
        "relay", str(bus_path), str(tmp_path / "child.db"), run, str(aggregates), str(versions)
    )
    try:
        stdout, stderr = await asyncio.wait_for(child.communicate(), CHILD_TIMEOUT_S)
        assert child.returncode == 0, stderr.decode()
        expected = set(json.loads(stdout.decode().strip().splitlines()[-1]))
        assert len(expected) == aggregates * versions
        await wait_for(lambda: _seen_count(service_db, len(expected)), 20, "every event handled")
    finally:
        await _reap(child)
        await consumer.stop()
        await bus.stop()
    assert_exactly_once_in_order(
        await seen_rows(service_db), expected, {f"{run}-{n}": versions for n in range(aggregates)}
    )
    assert consumer.stats.handled == len(expected) and consumer.stats.duplicates == 0
    assert await _inboxed(service_db) == expected


async def test_two_processes_appending_at_once_keep_offsets_unique_and_gap_free(tmp_path: Path) -> None:
    bus_path = tmp_path / "bus.db"  # created by whichever child opens it first
    writers, batches, batch_size = ("w1", "w2"), 80, 10
    children = [
        await _spawn("append", str(bus_path), writer, str(batches), str(batch_size)) for writer in writers
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdin is not None
            line = await asyncio.wait_for(child.stdout.readline(), CHILD_TIMEOUT_S)
            assert line.strip() == b"ready", line
        for child in children:
            assert child.stdin is not None
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        results = await asyncio.wait_for(
            asyncio.gather(*(child.communicate() for child in children)), CHILD_TIMEOUT_S
        )
        spans = []
        for child, (stdout, stderr) in zip(children, results, strict=True):
            assert child.returncode == 0, stderr.decode()
            spans.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    finally:
        for child in children:
            await _reap(child)

    bus = SqliteBus(bus_path)
    try:
        records = await bus.messages(APPEND_TOPIC)
    finally:
        await bus.stop()
    assert len(records) == len(writers) * batches * batch_size
    per_partition: dict[int, list[ReceivedMessage]] = defaultdict(list)
    for record in records:
        per_partition[record.partition].append(record)
    switches = 0
    for partition, entries in per_partition.items():
        assert [entry.offset for entry in entries] == list(range(len(entries))), f"partition {partition}"
        order = [entry.headers["writer"] for entry in entries]
        switches += sum(1 for before, after in itertools.pairwise(order) if before != after)
        per_key: dict[str, list[int]] = defaultdict(list)
        for entry in entries:
            per_key[entry.key].append(int(entry.headers["seq"]))
        assert all(sequence == sorted(sequence) for sequence in per_key.values())
    # Both were appending at the same time, and their records interleave (each writer pauses
    # between batches, as a relay does; SQLite's write lock is not fair to a writer that never does).
    assert max(span["began"] for span in spans) < min(span["ended"] for span in spans)
    assert switches >= batches // 4, f"only {switches} switches between the writers"
    took = max(span["ended"] for span in spans) - min(span["began"] for span in spans)
    print(f"\ntwo appending processes: {switches} switches between writers, {took:.2f} s")


# -- wiring ----------------------------------------------------------------------------------------


async def test_the_service_app_builds_the_bus_its_settings_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = probe_catalog().service("probe-a")
    monkeypatch.setenv("FINMESH_BUS", "sqlite")
    monkeypatch.setenv("FINMESH_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings(KitSettings)
    bus = ServiceApp(entry, settings).bus
    assert isinstance(bus, SqliteBus) and bus.path == tmp_path / "data" / "bus.db"
    chosen = KitSettings(bus="sqlite", bus_path=tmp_path / "elsewhere.db")
    assert ServiceApp(entry, chosen).bus.path == tmp_path / "elsewhere.db"  # type: ignore[attr-defined]
    assert isinstance(ServiceApp(entry, KitSettings(bus="inprocess")).bus, InProcessBus)


def test_the_launcher_gives_every_child_the_shared_sqlite_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = Endpoint("ledger", "finmesh.ledger.v1.LedgerService", "127.0.0.1", 50501, 9501)
    layout = Layout(tmp_path / "var")
    monkeypatch.delenv("FINMESH_BUS", raising=False)
    monkeypatch.delenv("FINMESH_BUS_PATH", raising=False)
    env = child_environment(endpoint, layout, 5.0)
    assert env["FINMESH_BUS"] == "sqlite"
    assert env["FINMESH_BUS_PATH"] == str((tmp_path / "var" / "data" / "bus.db").resolve())
    monkeypatch.setenv("FINMESH_BUS", "inprocess")  # the user's choice stands
    env = child_environment(endpoint, layout, 5.0)
    assert env["FINMESH_BUS"] == "inprocess" and "FINMESH_BUS_PATH" not in env


# -- helpers ---------------------------------------------------------------------------------------


async def _spawn(*arguments: str) -> asyncio.subprocess.Process:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.kit.sqlite_bus_child",
        *arguments,
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _reap(child: asyncio.subprocess.Process) -> None:
    """Kills the child if it is still running (a failed test) and waits for it, a bounded time."""
    if child.returncode is None:
        child.kill()
    await asyncio.wait_for(child.wait(), CHILD_TIMEOUT_S)


async def _seen_count(database: Database, count: int) -> bool:
    return len(await seen_rows(database)) == count


async def _inboxed(database: Database) -> set[str]:
    async with database.transaction() as session:
        rows = await session.execute(select(inbox.c.event_id).where(inbox.c.consumer == "kit-test"))
        count = await session.scalar(select(func.count()).select_from(inbox))
    ids = set(rows.scalars())
    assert count == len(ids)
    return ids
