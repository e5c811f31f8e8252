"""A second process for the SQLite bus tests: `python -m tests.kit.sqlite_bus_child <mode> ...`.

relay <bus file> <service db file> <run> <aggregates> <versions>
    writes `aggregates` x `versions` state changes with their events to its own SQLite
    service database while an OutboxRelay publishes them to the bus; prints the event ids
    (JSON) once every one is published.
append <bus file> <writer> <batches> <batch size> <go file>
    opens the bus, prints "ready", waits for `go file` to exist, then publishes `batches`
    calls of `batch size` messages on topic `kit-test.appends`, keys `<writer>-0..4`, headers
    naming the writer and a sequence number.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TYPE_CHECKING

# Only the bus at the top: an appending writer starts in a fraction of a second; the relay mode
# imports the database, outbox and protobuf modules itself.
from svc.kit.bus import BusMessage, SqliteBus

if TYPE_CHECKING:
    from google.protobuf.message import Message

APPEND_TOPIC = "kit-test.appends"
APPEND_KEYS = 5
APPEND_PAUSE_S = 0.002
DRAIN_TIMEOUT_S = 20


def make_event(aggregate_id: str, version: int) -> Message:
    """The same event type as the in-process tests use (AccountClosed), for one aggregate version."""
    from finmesh.events.v1 import account_events_pb2

    from svc.kit.outbox import event_meta

    event = account_events_pb2.AccountClosed()
    meta = event_meta(event)
    meta.aggregate_type = "kit_test_account"
    meta.aggregate_id = aggregate_id
    meta.aggregate_version = version
    return event


async def relay(bus_path: str, db_path: str, run: str, aggregates: int, versions: int) -> None:
    from svc.kit import migrate
    from svc.kit.db import Database
    from svc.kit.outbox import OutboxRelay, add_event

    database = Database(f"sqlite+aiosqlite:///{db_path}")
    await migrate.upgrade(database)
    bus = SqliteBus(bus_path)
    await bus.start()
    outbox_relay = OutboxRelay(database, bus, batch_size_max=25, poll_interval_ms=10)
    await outbox_relay.start()
    event_ids: list[str] = []
    try:
        for version in range(1, versions + 1):
            for number in range(aggregates):
                async with database.transaction() as session:
                    event_ids.append(
                        await add_event(session, make_event(f"{run}-{number}", version), producer="kit-child")
                    )
                outbox_relay.notify()
        await outbox_relay.drain(timeout_s=DRAIN_TIMEOUT_S)
    finally:
        await outbox_relay.stop()
        await bus.stop()
        await database.dispose()
    print(json.dumps(event_ids), flush=True)


async def append(bus_path: str, writer: str, batches: int, batch_size: int) -> None:
    bus = SqliteBus(bus_path)
    await bus.start()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "go", from the test, to every writer at once
    sequence = 0
    began = time.time()
    try:
        for _ in range(batches):
            messages = []
            for _ in range(batch_size):
                messages.append(
                    BusMessage(
                        topic=APPEND_TOPIC,
                        key=f"{writer}-{sequence % APPEND_KEYS}",
                        value=f"{writer}:{sequence}".encode(),
                        headers={"writer": writer, "seq": str(sequence)},
                    )
                )
                sequence += 1
            await bus.publish(messages)
            await asyncio.sleep(APPEND_PAUSE_S)  # like a relay between batches: the other writer's turn
        ended = time.time()
    finally:
        await bus.stop()
    print(json.dumps({"began": began, "ended": ended}), flush=True)


def main(argv: list[str]) -> None:
    mode, *arguments = argv
    if mode == "relay":
        bus_path, db_path, run, aggregates, versions = arguments
        asyncio.run(relay(bus_path, db_path, run, int(aggregates), int(versions)))
    elif mode == "append":
        bus_path, writer, batches, batch_size = arguments
        asyncio.run(append(bus_path, writer, int(batches), int(batch_size)))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
