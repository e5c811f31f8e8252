"""The event bus: one interface, three implementations.

`SqliteBus` is the embedded default of a local mesh (a durable log in one SQLite file that every
process of the mesh shares); `InProcessBus` keeps everything in memory, for a single process and
for tests; `KafkaBus` talks to Kafka with aiokafka. All give the same guarantees to the outbox
relay and the consumer helper:

- `publish(messages)` returns only when every message is stored and acknowledged; otherwise it
  raises `BusError` and the caller retries the whole call (at-least-once: some messages of a failed
  call may have been stored, so a retry may duplicate them; consumers deduplicate on the event id).
- Messages with the same key go to the same partition and are delivered in publish order.
- A subscription belongs to a consumer group; the group's committed offsets say where a new
  subscription of that group starts. Nothing is committed implicitly: `commit()` commits, per
  partition, the position after the last message that `fetch()` returned, so call it only after
  those messages were processed. Messages fetched but not committed are delivered again to the
  next subscription of the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

FETCH_TIMEOUT_MS = 500
FETCH_RECORDS_MAX = 500


class BusError(Exception):
    """The bus could not do what was asked (not acknowledged, not reachable, not committed)."""


@dataclass(frozen=True, slots=True)
class BusMessage:
    """A message to publish: the topic, the partitioning key (aggregate id), payload and headers."""

    topic: str
    key: str
    value: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class ReceivedMessage(BusMessage):
    """A message as delivered to a subscriber, with its place in the topic's log."""

    partition: int
    offset: int


class Subscription(Protocol):
    """Messages of some topics for one consumer group; iterate it or call `fetch()`."""

    def __aiter__(self) -> AsyncIterator[ReceivedMessage]:
        """Yields messages one by one, waiting for new ones; call `commit()` after processing."""
        ...

    async def fetch(
        self, *, timeout_ms: int = FETCH_TIMEOUT_MS, records_max: int = FETCH_RECORDS_MAX
    ) -> list[ReceivedMessage]:
        """The next messages (up to `records_max`), or [] if none arrived within `timeout_ms`."""
        ...

    async def commit(self) -> None:
        """Commits, per partition, the position after the last message returned so far."""
        ...

    async def close(self) -> None:
        """Leaves the group without committing anything more."""
        ...


class EventBus(Protocol):
    """Publishes messages to topics and hands them out to consumer groups."""

    async def start(self) -> None:
        """Connects (if there is anything to connect to)."""
        ...

    async def stop(self) -> None:
        """Closes every subscription and the producer."""
        ...

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        """Returns when every message is acknowledged; raises `BusError` otherwise."""
        ...

    async def subscribe(self, topics: Sequence[str], group_id: str) -> Subscription:
        """A subscription of `group_id` to `topics`, starting at the group's committed offsets
        (from the beginning of each partition for a new group)."""
        ...


class _SubscriptionIteration:
    """`__aiter__` on top of `fetch()`, shared by every implementation."""

    async def fetch(
        self, *, timeout_ms: int = FETCH_TIMEOUT_MS, records_max: int = FETCH_RECORDS_MAX
    ) -> list[ReceivedMessage]:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    async def __aiter__(self) -> AsyncIterator[ReceivedMessage]:
        while not self.closed:
            for message in await self.fetch():
                yield message


# -- in process ------------------------------------------------------------------------------------


def partition_for_key(key: str, partitions: int) -> int:
    """The partition of a key on the in-process and SQLite buses (CRC-32: stable across runs and
    processes, unlike Python's salted `hash`)."""
    return zlib.crc32(key.encode()) % partitions


class InProcessBus:
    """The embedded bus: per-topic, per-partition append-only logs and per-group committed offsets,
    in memory. Same semantics as Kafka for the kit (ordered per key, at-least-once, manual commit),
    but nothing survives the process; one subscription per consumer group and topic at a time."""

    def __init__(self, *, partitions: int = 1) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.partitions = partitions
        self._logs: dict[str, list[list[ReceivedMessage]]] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._members: dict[tuple[str, str], _InProcessSubscription] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._stopped = False

    async def start(self) -> None:
        """Nothing to connect to; allows publishing again after `stop()`."""
        self._stopped = False

    async def stop(self) -> None:
        """Closes every subscription; the logs and committed offsets are kept."""
        self._stopped = True
        for subscription in list(self._members.values()):
            await subscription.close()

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        """Appends the messages to their topics' logs (all of them, in order)."""
        if self._stopped:
            raise BusError("the in-process bus is stopped")
        for message in messages:
            partitions = self._partitions(message.topic)
            partition = partition_for_key(message.key, self.partitions)
            entries = partitions[partition]
            entries.append(
                ReceivedMessage(
                    topic=message.topic,
                    key=message.key,
                    value=message.value,
                    headers=dict(message.headers),
                    partition=partition,
                    offset=len(entries),
                )
            )
        self._wake()

    async def subscribe(self, topics: Sequence[str], group_id: str) -> Subscription:
        """A subscription of `group_id` to `topics` from the group's committed offsets."""
        if self._stopped:
            raise BusError("the in-process bus is stopped")
        for topic in topics:
            if (group_id, topic) in self._members:
                raise BusError(f"consumer group {group_id!r} already has a subscription to {topic!r}")
        subscription = _InProcessSubscription(self, list(topics), group_id)
        for topic in topics:
            self._members[(group_id, topic)] = subscription
            self._partitions(topic)
        return subscription

    def messages(self, topic: str) -> list[ReceivedMessage]:
        """Everything published to `topic` so far, partition by partition (for tests and tools)."""
        return [message for entries in self._logs.get(topic, []) for message in entries]

    def committed(self, group_id: str, topic: str, partition: int = 0) -> int:
        """The committed offset of a group on a partition (0 if nothing was committed)."""
        return self._committed.get((group_id, topic, partition), 0)

    def _partitions(self, topic: str) -> list[list[ReceivedMessage]]:
        return self._logs.setdefault(topic, [[] for _ in range(self.partitions)])

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self, timeout_s: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)

    def _leave(self, subscription: _InProcessSubscription) -> None:
        for topic in subscription.topics:
            if self._members.get((subscription.group_id, topic)) is subscription:
                del self._members[(subscription.group_id, topic)]
        self._wake()


class _InProcessSubscription(_SubscriptionIteration):
    def __init__(self, bus: InProcessBus, topics: list[str], group_id: str) -> None:
        self.bus = bus
        self.topics = topics
        self.group_id = group_id
        self._positions: dict[tuple[str, int], int] = {}
        for topic in topics:
            for partition in range(bus.partitions):
                self._positions[(topic, partition)] = bus.committed(group_id, topic, partition)
        self._first = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def fetch(
        self, *, timeout_ms: int = FETCH_TIMEOUT_MS, records_max: int = FETCH_RECORDS_MAX
    ) -> list[ReceivedMessage]:
        deadline = time.monotonic() + timeout_ms / 1000
        while not self._closed:
            batch = self._take(records_max)
            if batch:
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await self.bus._wait(remaining)
        return []

    def _take(self, records_max: int) -> list[ReceivedMessage]:
        # Start at a different partition each time, so that a busy one does not starve the others.
        places = list(self._positions)
        self._first = (self._first + 1) % len(places)
        batch: list[ReceivedMessage] = []
        for topic, partition in places[self._first :] + places[: self._first]:
            position = self._positions[(topic, partition)]
            entries = self.bus._partitions(topic)[partition]
            taken = entries[position : position + records_max - len(batch)]
            batch.extend(taken)
            self._positions[(topic, partition)] = position + len(taken)
            if len(batch) >= records_max:
                break
        return batch

    async def commit(self) -> None:
        if self._closed:
            raise BusError("the subscription is closed")
        for (topic, partition), position in self._positions.items():
            self.bus._committed[(self.group_id, topic, partition)] = position

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.bus._leave(self)


# -- SQLite ----------------------------------------------------------------------------------------

# Keys are spread over this many partitions; fixed for the life of a bus file (it is recorded in
# the file, and a bus opened with another count is refused).
SQLITE_BUS_PARTITIONS = 4
SQLITE_BUS_BUSY_TIMEOUT_MS = 30_000
# A subscription that found nothing looks again after this long; at once when a publish of the
# same process (the same SqliteBus) appended something.
SQLITE_BUS_POLL_INTERVAL_MS = 100
# Records are kept at least this long, and after that until every known group has committed them.
SQLITE_BUS_RETENTION_S = 7 * 24 * 3600
SQLITE_BUS_PURGE_INTERVAL_S = 600
SQLITE_BUS_PURGE_BATCH_SIZE_MAX = 1_000
# Opening a new file races with the other processes of the mesh (switching it to WAL, creating the
# schema); a refusal that the busy timeout does not cover is retried this often, this far apart.
SQLITE_BUS_OPEN_ATTEMPTS_MAX = 20
SQLITE_BUS_OPEN_RETRY_MS = 50
SQLITE_BUS_META_PARTITIONS = "partitions"

# "partition" and "offset" are SQL keywords, hence quoted. bus_heads holds each partition's next
# offset, so that offsets are never reused after the records below them were purged.
_SQLITE_BUS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bus_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS bus_records (
        topic TEXT NOT NULL, "partition" INTEGER NOT NULL, "offset" INTEGER NOT NULL,
        key TEXT NOT NULL, value BLOB NOT NULL, headers TEXT NOT NULL, appended_at REAL NOT NULL,
        PRIMARY KEY (topic, "partition", "offset"))""",
    "CREATE INDEX IF NOT EXISTS bus_records_appended_at ON bus_records (appended_at)",
    """CREATE TABLE IF NOT EXISTS bus_heads (
        topic TEXT NOT NULL, "partition" INTEGER NOT NULL, next_offset INTEGER NOT NULL,
        PRIMARY KEY (topic, "partition"))""",
    """CREATE TABLE IF NOT EXISTS bus_offsets (
        group_id TEXT NOT NULL, topic TEXT NOT NULL, "partition" INTEGER NOT NULL,
        committed INTEGER NOT NULL, committed_at REAL NOT NULL,
        PRIMARY KEY (group_id, topic, "partition"))""",
    'CREATE INDEX IF NOT EXISTS bus_offsets_place ON bus_offsets (topic, "partition")',
)
_SQLITE_BUS_INSERT_RECORD = (
    'INSERT INTO bus_records (topic, "partition", "offset", key, value, headers, appended_at) '
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_BUS_SET_HEAD = (
    'INSERT INTO bus_heads (topic, "partition", next_offset) VALUES (?, ?, ?) '
    'ON CONFLICT (topic, "partition") DO UPDATE SET next_offset = excluded.next_offset'
)
_SQLITE_BUS_SET_OFFSET = (
    'INSERT INTO bus_offsets (group_id, topic, "partition", committed, committed_at) VALUES (?, ?, ?, ?, ?) '
    'ON CONFLICT (group_id, topic, "partition") DO UPDATE '
    "SET committed = excluded.committed, committed_at = excluded.committed_at"
)
# A record goes once it is older than the cutoff and no group that knows its topic (every group
# has a row per partition from its first subscription) still has it at or beyond its position.
_SQLITE_BUS_PURGE = """
    DELETE FROM bus_records WHERE rowid IN (
        SELECT r.rowid FROM bus_records AS r
        WHERE r.appended_at < ?
          AND NOT EXISTS (
              SELECT 1 FROM bus_offsets AS o
              WHERE o.topic = r.topic AND o."partition" = r."partition" AND o.committed <= r."offset")
        ORDER BY r.appended_at
        LIMIT ?)
"""

T = TypeVar("T")


def _in_write_transaction(connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Runs `work` in one write transaction (the write lock taken at BEGIN): all of it or nothing."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = work(connection)
        connection.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise
    return result


class _SqliteConnections:
    """Connections to one bus file for worker threads: each is used by one thread at a time."""

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `work` on an idle connection (or a new one); call it from a worker thread."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._connect()
        try:
            return work(connection)
        finally:
            with self._lock:
                keep = not self._closed
                if keep:
                    self._idle.append(connection)
            if not keep:
                connection.close()

    def close(self) -> None:
        """Closes the idle connections now and the busy ones when their work is done."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_ms / 1000,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,
        )
        try:
            connection.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            # The relay marks outbox rows published once publish() returns: a commit must be on disk.
            connection.execute("PRAGMA synchronous=FULL")
        except BaseException:
            connection.close()
            raise
        return connection


class SqliteBus:
    """The embedded bus of a local mesh: a durable log in one SQLite file that every process of the
    mesh opens (stdlib sqlite3 in worker threads, so the event loop never waits on the file).

    The file is in WAL mode, so readers never block the writer nor each other; writers queue on
    SQLite's write lock, waiting up to `busy_timeout_ms`. `bus_records` holds the messages as
    (topic, partition, offset, key, value, headers as JSON, appended_at); the partition is the
    CRC-32 of the key modulo the file's partition count, and each partition's offsets are
    assigned from `bus_heads` inside the appending transaction, so they are unique and gap-free
    across processes. `publish` appends a whole call in one transaction (all or nothing, in call
    order). `bus_offsets` holds each group's committed position per (topic, partition); a group
    is registered there, at offset 0, by its first subscription.

    A subscription polls for records beyond its positions, `records_max` at most per fetch; when
    it finds nothing it waits `poll_interval_ms`, or less when this bus published meanwhile.
    Delivery is at-least-once, like the other buses: `commit()` stores the position after the last
    record fetched, and whatever was fetched but not committed comes again to the group's next
    subscription. One subscription per (group, topic) at a time is supported: this bus refuses a
    second one in the same process, but subscriptions of one group in two processes (the same
    service started twice) are not coordinated, and each would receive every record.

    Retention: a record older than `retention_s` that every group known for its topic has
    committed is deleted, `purge_batch_size_max` at a time, every `purge_interval_s` while the bus
    is started (and by `purge()`). A group that is never used again keeps its records; records of
    a topic that no group ever subscribed to go after `retention_s`.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        partitions: int | None = None,
        poll_interval_ms: int = SQLITE_BUS_POLL_INTERVAL_MS,
        busy_timeout_ms: int = SQLITE_BUS_BUSY_TIMEOUT_MS,
        retention_s: int = SQLITE_BUS_RETENTION_S,
        purge_interval_s: int = SQLITE_BUS_PURGE_INTERVAL_S,
        purge_batch_size_max: int = SQLITE_BUS_PURGE_BATCH_SIZE_MAX,
    ) -> None:
        """`partitions`: the partition count of a new file (default `SQLITE_BUS_PARTITIONS`); for
        an existing file, None takes the file's count and another number is refused."""
        if partitions is not None and partitions < 1:
            raise ValueError("partitions must be at least 1")
        if purge_batch_size_max < 1:
            raise ValueError("purge_batch_size_max must be at least 1")
        self.path = Path(path)
        self.partitions = partitions or SQLITE_BUS_PARTITIONS
        self.poll_interval_ms = poll_interval_ms
        self.busy_timeout_ms = busy_timeout_ms
        self.retention_s = retention_s
        self.purge_interval_s = purge_interval_s
        self.purge_batch_size_max = purge_batch_size_max
        self._requested_partitions = partitions
        self._connections: _SqliteConnections | None = None
        self._open_lock = asyncio.Lock()
        self._members: dict[tuple[str, str], _SqliteSubscription] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._published = 0  # publish calls of this bus, so a fetch sees one that raced its query
        self._purge_task: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        """Opens the file (creating it and its schema if needed) and starts the periodic purge;
        raises `BusError` if the file cannot be used. Allows publishing again after `stop()`."""
        self._stopped = False
        await self._open()
        if self._purge_task is None or self._purge_task.done():
            self._purge_task = asyncio.create_task(self._purge_periodically(), name="sqlite-bus-purge")

    async def stop(self) -> None:
        """Closes every subscription and the file's connections; the log stays in the file."""
        self._stopped = True
        task, self._purge_task = self._purge_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        for subscription in list(self._members.values()):
            await subscription.close()
        async with self._open_lock:
            connections, self._connections = self._connections, None
        if connections is not None:
            connections.close()

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        """Appends the messages in one transaction: when it returns all of them are in the file (in
        call order, offsets assigned); on `BusError` none of them is."""
        if self._stopped:
            raise BusError("the SQLite bus is stopped")
        if not messages:
            return
        batch = list(messages)
        await self._call(
            f"publish of {len(batch)} messages",
            lambda connection: _in_write_transaction(connection, lambda c: self._append(c, batch)),
        )
        self._published += 1
        self._wake()

    async def subscribe(self, topics: Sequence[str], group_id: str) -> Subscription:
        """A subscription of `group_id` to `topics` from the group's committed offsets (from the
        first record kept for a new group); `BusError` if this bus has one for a topic already."""
        if self._stopped:
            raise BusError("the SQLite bus is stopped")
        wanted = list(dict.fromkeys(topics))
        if not wanted:
            raise ValueError("a subscription needs at least one topic")
        self._check_free(wanted, group_id)
        positions = await self._call(
            f"subscription of {group_id!r} to {wanted}",
            lambda connection: _in_write_transaction(connection, lambda c: self._join(c, wanted, group_id)),
        )
        self._check_free(wanted, group_id)  # another subscribe() may have won while we waited
        subscription = _SqliteSubscription(self, wanted, group_id, positions)
        for topic in wanted:
            self._members[(group_id, topic)] = subscription
        return subscription

    async def purge(self, *, now: float | None = None) -> int:
        """Deletes records older than `retention_s` (before `now`, a Unix time) that every known
        group of their topic has committed, in batches; returns how many."""
        cutoff = (time.time() if now is None else now) - self.retention_s
        purged = 0
        while True:
            deleted = await self._call(
                "purge",
                lambda connection: _in_write_transaction(
                    connection,
                    lambda c: int(c.execute(_SQLITE_BUS_PURGE, (cutoff, self.purge_batch_size_max)).rowcount),
                ),
            )
            purged += deleted
            if deleted < self.purge_batch_size_max:
                return purged

    async def messages(self, topic: str) -> list[ReceivedMessage]:
        """Every record of `topic` still kept, partition by partition (for tests and tools)."""

        def read(connection: sqlite3.Connection) -> list[ReceivedMessage]:
            rows = connection.execute(
                'SELECT topic, "partition", "offset", key, value, headers FROM bus_records '
                'WHERE topic = ? ORDER BY "partition", "offset"',
                (topic,),
            )
            return [_received(*row) for row in rows]

        return await self._call(f"reading {topic!r}", read)

    async def committed(self, group_id: str, topic: str, partition: int = 0) -> int:
        """The committed offset of a group on a partition (0 if nothing was committed)."""

        def read(connection: sqlite3.Connection) -> int:
            row = connection.execute(
                'SELECT committed FROM bus_offsets WHERE group_id = ? AND topic = ? AND "partition" = ?',
                (group_id, topic, partition),
            ).fetchone()
            return int(row[0]) if row else 0

        return await self._call("reading committed offsets", read)

    # -- internals ---------------------------------------------------------------------------------

    async def _open(self) -> None:
        if self._connections is not None:
            return
        async with self._open_lock:
            if self._connections is not None:
                return
            connections = _SqliteConnections(self.path, self.busy_timeout_ms)
            try:
                self.partitions = await asyncio.to_thread(connections.run, self._prepare)
            except BaseException as exc:
                connections.close()
                if isinstance(exc, sqlite3.Error | OSError):
                    raise BusError(f"cannot open the SQLite bus {self.path}: {exc!r}") from exc
                raise
            self._connections = connections

    def _prepare(self, connection: sqlite3.Connection) -> int:
        # Runs in a worker thread. Returns the file's partition count.
        for attempt in range(1, SQLITE_BUS_OPEN_ATTEMPTS_MAX + 1):
            try:
                mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise BusError(f"{self.path} cannot be put in WAL mode (journal mode {mode!r})")
                return _in_write_transaction(connection, self._create_schema)
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or attempt == SQLITE_BUS_OPEN_ATTEMPTS_MAX:
                    raise
                time.sleep(SQLITE_BUS_OPEN_RETRY_MS / 1000)
        raise AssertionError("unreachable")  # pragma: no cover

    def _create_schema(self, connection: sqlite3.Connection) -> int:
        for statement in _SQLITE_BUS_SCHEMA:
            connection.execute(statement)
        connection.execute(
            "INSERT OR IGNORE INTO bus_meta (name, value) VALUES (?, ?)",
            (SQLITE_BUS_META_PARTITIONS, str(self.partitions)),
        )
        row = connection.execute(
            "SELECT value FROM bus_meta WHERE name = ?", (SQLITE_BUS_META_PARTITIONS,)
        ).fetchone()
        partitions = int(row[0])
        if self._requested_partitions is not None and partitions != self._requested_partitions:
            raise BusError(
                f"{self.path} has {partitions} partitions, not {self._requested_partitions}: "
                "the partition count of a bus file cannot change"
            )
        return partitions

    async def _call(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._stopped:  # do not reopen behind stop()
            raise BusError("the SQLite bus is stopped")
        await self._open()
        connections = self._connections
        if connections is None:
            raise BusError("the SQLite bus is stopped")
        try:
            return await asyncio.to_thread(connections.run, work)
        except sqlite3.Error as exc:
            raise BusError(f"{what} failed on {self.path}: {exc!r}") from exc

    def _append(self, connection: sqlite3.Connection, messages: list[BusMessage]) -> None:
        # Inside the write transaction: nobody else can append until it ends.
        now = time.time()
        heads: dict[tuple[str, int], int] = {}
        records: list[tuple[str, int, int, str, bytes, str, float]] = []
        for message in messages:
            place = (message.topic, partition_for_key(message.key, self.partitions))
            if place not in heads:
                row = connection.execute(
                    'SELECT next_offset FROM bus_heads WHERE topic = ? AND "partition" = ?', place
                ).fetchone()
                heads[place] = int(row[0]) if row else 0
            offset = heads[place]
            heads[place] = offset + 1
            records.append(
                (
                    message.topic,
                    place[1],
                    offset,
                    message.key,
                    message.value,
                    json.dumps(message.headers),
                    now,
                )
            )
        connection.executemany(_SQLITE_BUS_INSERT_RECORD, records)
        connection.executemany(
            _SQLITE_BUS_SET_HEAD, [(topic, partition, head) for (topic, partition), head in heads.items()]
        )

    def _join(
        self, connection: sqlite3.Connection, topics: list[str], group_id: str
    ) -> dict[tuple[str, int], int]:
        # Registers the group for every partition (so that purging waits for it); returns where it is.
        now = time.time()
        connection.executemany(
            'INSERT OR IGNORE INTO bus_offsets (group_id, topic, "partition", committed, committed_at) '
            "VALUES (?, ?, ?, 0, ?)",
            [(group_id, topic, partition, now) for topic in topics for partition in range(self.partitions)],
        )
        positions: dict[tuple[str, int], int] = {}
        for topic in topics:
            rows = connection.execute(
                'SELECT "partition", committed FROM bus_offsets WHERE group_id = ? AND topic = ?',
                (group_id, topic),
            )
            committed = {int(partition): int(offset) for partition, offset in rows}
            for partition in range(self.partitions):
                positions[(topic, partition)] = committed.get(partition, 0)
        return positions

    def _check_free(self, topics: list[str], group_id: str) -> None:
        for topic in topics:
            if (group_id, topic) in self._members:
                raise BusError(f"consumer group {group_id!r} already has a subscription to {topic!r}")

    async def _purge_periodically(self) -> None:
        while True:
            try:
                purged = await self.purge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("SQLite bus: purge failed: %r", exc)
            else:
                if purged:
                    log.info("SQLite bus: purged %d records", purged)
            await asyncio.sleep(self.purge_interval_s)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self, timeout_s: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)

    def _leave(self, subscription: _SqliteSubscription) -> None:
        for topic in subscription.topics:
            if self._members.get((subscription.group_id, topic)) is subscription:
                del self._members[(subscription.group_id, topic)]
        self._wake()


def _received(
    topic: str, partition: int, offset: int, key: str, value: bytes, headers: str
) -> ReceivedMessage:
    return ReceivedMessage(
        topic=topic,
        key=key,
        value=bytes(value),
        headers=dict(json.loads(headers)),
        partition=int(partition),
        offset=int(offset),
    )


def _read_records(
    connection: sqlite3.Connection,
    topics: list[str],
    places: list[tuple[str, int]],
    positions: dict[tuple[str, int], int],
    records_max: int,
) -> list[ReceivedMessage]:
    # One cheap look at the heads first: most polls find nothing new and stop there.
    marks = ",".join("?" * len(topics))
    heads = {
        (str(topic), int(partition)): int(head)
        for topic, partition, head in connection.execute(
            f'SELECT topic, "partition", next_offset FROM bus_heads WHERE topic IN ({marks})', topics
        )
    }
    batch: list[ReceivedMessage] = []
    for topic, partition in places:
        position = positions[(topic, partition)]
        if heads.get((topic, partition), 0) <= position:
            continue
        rows = connection.execute(
            'SELECT topic, "partition", "offset", key, value, headers FROM bus_records '
            'WHERE topic = ? AND "partition" = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?',
            (topic, partition, position, records_max - len(batch)),
        )
        batch.extend(_received(*row) for row in rows)
        if len(batch) >= records_max:
            break
    return batch


class _SqliteSubscription(_SubscriptionIteration):
    def __init__(
        self, bus: SqliteBus, topics: list[str], group_id: str, positions: dict[tuple[str, int], int]
    ) -> None:
        self.bus = bus
        self.topics = topics
        self.group_id = group_id
        self._positions = dict(positions)
        self._committed = dict(positions)
        self._first = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def fetch(
        self, *, timeout_ms: int = FETCH_TIMEOUT_MS, records_max: int = FETCH_RECORDS_MAX
    ) -> list[ReceivedMessage]:
        deadline = time.monotonic() + timeout_ms / 1000
        while not self._closed:
            published = self.bus._published
            batch = await self._take(max(1, records_max))
            if batch:
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if self.bus._published == published:  # else: a publish raced the query, look again now
                await self.bus._wait(min(remaining, self.bus.poll_interval_ms / 1000))
        return []

    async def _take(self, records_max: int) -> list[ReceivedMessage]:
        # Start at a different partition each time, so that a busy one does not starve the others.
        places = list(self._positions)
        self._first = (self._first + 1) % len(places)
        places = places[self._first :] + places[: self._first]
        positions = dict(self._positions)
        batch = await self.bus._call(
            f"fetch for {self.group_id!r}",
            lambda connection: _read_records(connection, self.topics, places, positions, records_max),
        )
        if self._closed:
            return []
        for message in batch:
            self._positions[(message.topic, message.partition)] = message.offset + 1
        return batch

    async def commit(self) -> None:
        if self._closed:
            raise BusError("the subscription is closed")
        changed = {
            place: position
            for place, position in self._positions.items()
            if self._committed[place] != position
        }
        if not changed:
            return
        now = time.time()
        rows = [
            (self.group_id, topic, partition, position, now)
            for (topic, partition), position in changed.items()
        ]
        await self.bus._call(
            f"commit for {self.group_id!r}",
            lambda connection: _in_write_transaction(
                connection, lambda c: c.executemany(_SQLITE_BUS_SET_OFFSET, rows)
            ),
        )
        self._committed.update(changed)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.bus._leave(self)


# -- Kafka -----------------------------------------------------------------------------------------

KAFKA_LINGER_MS = 5
# One publish() call should fit in one record batch per partition, so that a partition's share of
# a call is stored or refused as a whole (the outbox relay keeps its batches below this).
KAFKA_BATCH_BYTES_MAX = 1024 * 1024
KAFKA_REQUEST_TIMEOUT_MS = 15_000
KAFKA_PUBLISH_TIMEOUT_MS = 30_000
KAFKA_CLOSE_TIMEOUT_MS = 5_000
KAFKA_RETRY_BACKOFF_MS = 100
KAFKA_SESSION_TIMEOUT_MS = 10_000
KAFKA_HEARTBEAT_INTERVAL_MS = 1_000
KAFKA_ERROR_TOPIC_ALREADY_EXISTS = 36
# Topics the bus creates: partitions bound a consumer group's parallelism; the replication factor
# suits one broker (local mesh, tests) and is raised through configuration in production.
KAFKA_TOPIC_PARTITIONS = 3
KAFKA_TOPIC_REPLICATION_FACTOR = 1


class KafkaBus:
    """Kafka through aiokafka.

    Producer: idempotent (`enable_idempotence=True`, `acks="all"`), short linger so a publish call
    is sent as few record batches; the message key (aggregate id) chooses the partition. After any
    failed publish the producer is discarded and a new one (new producer id) is made on the next
    call, so that no batch of the failed call can still be delivered behind a retry.
    Consumers: `enable_auto_commit=False`, `auto_offset_reset="earliest"`, offsets committed by
    `Subscription.commit()` after processing. Topics are created when first used, with
    `topic_partitions` and `topic_replication_factor` (unless `create_topics` is off).
    `topic_prefix` namespaces every topic on the cluster (for example per environment or test
    run): it is added when publishing and subscribing and removed from received messages.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "finmesh",
        linger_ms: int = KAFKA_LINGER_MS,
        batch_bytes_max: int = KAFKA_BATCH_BYTES_MAX,
        request_timeout_ms: int = KAFKA_REQUEST_TIMEOUT_MS,
        publish_timeout_ms: int = KAFKA_PUBLISH_TIMEOUT_MS,
        retry_backoff_ms: int = KAFKA_RETRY_BACKOFF_MS,
        create_topics: bool = True,
        topic_partitions: int = KAFKA_TOPIC_PARTITIONS,
        topic_replication_factor: int = KAFKA_TOPIC_REPLICATION_FACTOR,
        topic_prefix: str = "",
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.linger_ms = linger_ms
        self.batch_bytes_max = batch_bytes_max
        self.request_timeout_ms = request_timeout_ms
        self.publish_timeout_ms = publish_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.create_topics = create_topics
        self.topic_partitions = topic_partitions
        self.topic_replication_factor = topic_replication_factor
        self.topic_prefix = topic_prefix
        self._producer: Any = None
        self._known_topics: set[str] = set()
        self._subscriptions: set[_KafkaSubscription] = set()
        self._publish_lock = asyncio.Lock()
        self._stopped = False

    async def start(self) -> None:
        """Starts the producer (raises `BusError` if the broker cannot be reached)."""
        self._stopped = False
        await self._ensure_producer()

    async def stop(self) -> None:
        """Closes every subscription and the producer (waiting a bounded time for in-flight data)."""
        self._stopped = True
        for subscription in list(self._subscriptions):
            await subscription.close()
        await self._discard_producer(flush=True)

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        """Sends the messages and waits for every acknowledgement (acks=all).

        Raises `BusError` if any message is not acknowledged within `publish_timeout_ms`; some of
        them may have been stored anyway, so the caller retries the whole call.
        """
        if self._stopped:
            raise BusError("the Kafka bus is stopped")
        if not messages:
            return
        async with self._publish_lock:
            try:
                await asyncio.wait_for(self._publish(messages), self.publish_timeout_ms / 1000)
            except Exception as exc:
                await self._discard_producer(flush=False)
                if isinstance(exc, BusError):
                    raise
                raise BusError(f"publish of {len(messages)} messages failed: {exc!r}") from exc

    async def _publish(self, messages: Sequence[BusMessage]) -> None:
        await self.ensure_topics({self.topic_prefix + message.topic for message in messages})
        producer = await self._ensure_producer()
        futures: list[asyncio.Future[Any]] = []
        try:
            for message in messages:
                futures.append(
                    await producer.send(
                        self.topic_prefix + message.topic,
                        value=message.value,
                        key=message.key.encode(),
                        headers=[(name, value.encode()) for name, value in message.headers.items()],
                    )
                )
        finally:
            # Let every queued message settle before reporting, so none is still in flight.
            results = await asyncio.gather(*futures, return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise BusError(
                f"{len(failures)} of {len(messages)} messages not acknowledged: {failures[0]!r}"
            ) from failures[0]

    async def subscribe(self, topics: Sequence[str], group_id: str) -> Subscription:
        """Joins `group_id` for `topics` (created if missing); raises `BusError` if unreachable."""
        from aiokafka import AIOKafkaConsumer

        if self._stopped:
            raise BusError("the Kafka bus is stopped")
        cluster_topics = [self.topic_prefix + topic for topic in topics]
        await self.ensure_topics(set(cluster_topics))
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=self.request_timeout_ms,
            retry_backoff_ms=self.retry_backoff_ms,
            session_timeout_ms=KAFKA_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=KAFKA_HEARTBEAT_INTERVAL_MS,
        )
        subscription = _KafkaSubscription(self, consumer)
        consumer.subscribe(cluster_topics, listener=subscription.listener())
        try:
            await consumer.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), KAFKA_CLOSE_TIMEOUT_MS / 1000)
            raise BusError(f"cannot subscribe to {list(topics)}: {exc!r}") from exc
        self._subscriptions.add(subscription)
        return subscription

    async def ensure_topics(self, topics: set[str]) -> None:
        """Creates the (cluster, prefixed) topics that this bus has not seen yet, if `create_topics`."""
        missing = sorted(topics - self._known_topics)
        if not missing or not self.create_topics:
            self._known_topics.update(missing)
            return
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            await admin.start()
            response = await admin.create_topics(
                [NewTopic(topic, self.topic_partitions, self.topic_replication_factor) for topic in missing]
            )
        except Exception as exc:
            raise BusError(f"cannot create topics {missing}: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        for topic, error_code, *rest in response.topic_errors:
            if error_code not in (0, KAFKA_ERROR_TOPIC_ALREADY_EXISTS):
                raise BusError(f"cannot create topic {topic!r}: error {error_code} {rest}")
        self._known_topics.update(missing)

    async def _ensure_producer(self) -> Any:
        if self._producer is not None:
            return self._producer
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=self.linger_ms,
            max_batch_size=self.batch_bytes_max,
            max_request_size=self.batch_bytes_max,
            request_timeout_ms=self.request_timeout_ms,
            retry_backoff_ms=self.retry_backoff_ms,
        )
        try:
            await producer.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), KAFKA_CLOSE_TIMEOUT_MS / 1000)
            raise BusError(f"cannot connect to Kafka at {self.bootstrap_servers}: {exc!r}") from exc
        self._producer = producer
        return producer

    async def _discard_producer(self, *, flush: bool) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        if flush:
            try:
                await asyncio.wait_for(producer.stop(), KAFKA_CLOSE_TIMEOUT_MS / 1000)
                return
            except Exception as exc:
                log.warning("Kafka producer did not close cleanly: %r", exc)
        # Drop whatever it still holds, so that nothing of it is delivered later, behind the retry
        # of the same messages by a new producer (aiokafka's stop() would wait for the broker).
        with contextlib.suppress(Exception):
            producer._closed = True
            producer._message_accumulator.fail_all(BusError("producer discarded"))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer._sender.close(), KAFKA_CLOSE_TIMEOUT_MS / 1000)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.client.close(), KAFKA_CLOSE_TIMEOUT_MS / 1000)

    def _forget(self, subscription: _KafkaSubscription) -> None:
        self._subscriptions.discard(subscription)


class _KafkaSubscription(_SubscriptionIteration):
    def __init__(self, bus: KafkaBus, consumer: Any) -> None:
        self.bus = bus
        self.consumer = consumer
        self._pending: dict[Any, int] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def listener(self) -> Any:
        from aiokafka import ConsumerRebalanceListener

        pending = self._pending

        class _DropRevoked(ConsumerRebalanceListener):  # type: ignore[misc]
            # Offsets of revoked partitions can no longer be committed by this member; their
            # messages go to the new owner from the last commit (the inbox drops repeats).
            async def on_partitions_revoked(self, revoked: Any) -> None:
                for partition in revoked:
                    pending.pop(partition, None)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                return None

        return _DropRevoked()

    async def fetch(
        self, *, timeout_ms: int = FETCH_TIMEOUT_MS, records_max: int = FETCH_RECORDS_MAX
    ) -> list[ReceivedMessage]:
        if self._closed:
            return []
        try:
            records = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=records_max)
        except Exception as exc:
            raise BusError(f"fetch failed: {exc!r}") from exc
        batch: list[ReceivedMessage] = []
        for partition, entries in records.items():
            for record in entries:
                batch.append(
                    ReceivedMessage(
                        topic=record.topic.removeprefix(self.bus.topic_prefix),
                        key=record.key.decode(errors="replace") if record.key is not None else "",
                        value=record.value if record.value is not None else b"",
                        headers={name: value.decode(errors="replace") for name, value in record.headers},
                        partition=record.partition,
                        offset=record.offset,
                    )
                )
                self._pending[partition] = record.offset + 1
        return batch

    async def commit(self) -> None:
        if self._closed:
            raise BusError("the subscription is closed")
        if not self._pending:
            return
        offsets = dict(self._pending)
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:
            raise BusError(f"commit of {offsets} failed: {exc!r}") from exc
        for partition, offset in offsets.items():
            if self._pending.get(partition) == offset:
                del self._pending[partition]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.bus._forget(self)
        try:
            await asyncio.wait_for(self.consumer.stop(), KAFKA_CLOSE_TIMEOUT_MS / 1000)
        except Exception as exc:
            log.warning("Kafka consumer did not close cleanly: %r", exc)
