"""The transactional outbox: events are rows written in the same transaction as the state change,
and a relay publishes them to the bus afterwards, in order, at least once.

    async with database.transaction() as session:
        session.add(account)                      # the state change
        await add_event(session, AccountOpened(meta=EventMeta(aggregate_id=account.id, ...)),
                  producer="accounts")            # its event: both or neither

    relay = OutboxRelay(database, bus)
    await relay.start()

Ordering: the relay publishes the oldest unpublished rows in id order and waits for the bus to
acknowledge them before marking them published, so the events of one aggregate (one key) reach
the bus in the order their transactions wrote them, given that a service serialises the changes
of one aggregate (it locks or versions the aggregate's row before writing its event). A failed
publish leaves the rows unpublished; they are retried, possibly duplicated, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from finmesh.events.v1 import event_meta_pb2
from google.protobuf.message import Message
from opentelemetry import propagate
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.bulk import insert_rows, one_of
from svc.kit.bus import BusMessage, EventBus
from svc.kit.db import Database
from svc.kit.tables import outbox

log = logging.getLogger(__name__)

META_FIELD = "meta"
HEADER_EVENT_TYPE = "event-type"
HEADER_EVENT_ID = "event-id"
HEADER_CONTENT_TYPE = "content-type"
CONTENT_TYPE_PROTOBUF = "application/x-protobuf"

RELAY_BATCH_SIZE_MAX = 500
# Below KafkaBus's record batch size, so one relay batch is one record batch per partition.
RELAY_BATCH_BYTES_MAX = 512 * 1024
RELAY_POLL_INTERVAL_MS = 200
RELAY_RETRY_BACKOFF_MS = 100
RELAY_RETRY_BACKOFF_MAX_MS = 5_000
RELAY_STOP_GRACE_MS = 5_000
# Published rows are kept this long (for inspection and replay), then deleted in batches.
OUTBOX_RETENTION_S = 7 * 24 * 3600
OUTBOX_PURGE_INTERVAL_S = 600
OUTBOX_PURGE_BATCH_SIZE_MAX = 1_000


class OutboxError(ValueError):
    """An event cannot go to the outbox: not an event message, no topic, no aggregate id."""


def event_topic(event: Message) -> str:
    """The topic of an event message, from its `(finmesh.events.v1.topic)` message option."""
    options = event.DESCRIPTOR.GetOptions()
    topic: str = options.Extensions[event_meta_pb2.topic]
    if not topic:
        raise OutboxError(
            f"event message {event.DESCRIPTOR.full_name} has no topic: "
            'set option (finmesh.events.v1.topic) = "<topic>" on it'
        )
    return topic


def event_meta(event: Message) -> event_meta_pb2.EventMeta:
    """The `EventMeta meta = 1` field of an event message (raises OutboxError if it has none)."""
    field = event.DESCRIPTOR.fields_by_name.get(META_FIELD)
    if (
        field is None
        or field.message_type is None
        or field.message_type.full_name != "finmesh.events.v1.EventMeta"
    ):
        raise OutboxError(
            f"{event.DESCRIPTOR.full_name} is not an event message: it needs `EventMeta meta = 1`"
        )
    meta: event_meta_pb2.EventMeta = getattr(event, META_FIELD)
    return meta


async def add_event(session: AsyncSession, event: Message, *, producer: str) -> str:
    """Stamps the event's meta and adds it to the outbox, in the session's (the caller's) transaction.

    Sets `meta.event_id` (a new UUID) if empty, `meta.occurred_at` (now) if unset and
    `meta.producer`; `meta.aggregate_id` is required and becomes the bus key. The headers carry
    the event type and the W3C trace context of the current span. Returns the event id.
    """
    return (await add_events(session, [event], producer=producer))[0]


async def add_events(session: AsyncSession, events: Sequence[Message], *, producer: str) -> list[str]:
    """`add_event` for many events in one statement: a service that commits a batch of state
    changes writes their events with one round trip, not one per event. Returns the event ids."""
    if not producer:
        raise OutboxError("producer (the service's name) is required")
    if not events:
        return []
    now = datetime.now(UTC)
    trace_headers: dict[str, str] = {}
    propagate.inject(trace_headers)
    rows = [_outbox_row(event, producer, now, trace_headers) for event in events]
    await insert_rows(session, outbox, rows)
    return [str(row["event_id"]) for row in rows]


def _outbox_row(
    event: Message, producer: str, now: datetime, trace_headers: dict[str, str]
) -> dict[str, object]:
    meta = event_meta(event)
    topic = event_topic(event)
    if not meta.aggregate_id:
        raise OutboxError(f"{event.DESCRIPTOR.full_name}: meta.aggregate_id is required (it is the key)")
    if not meta.event_id:
        meta.event_id = str(uuid.uuid4())
    if not meta.HasField("occurred_at"):
        meta.occurred_at.FromDatetime(now)
    meta.producer = producer
    event_type = event.DESCRIPTOR.full_name
    headers = {
        HEADER_EVENT_TYPE: event_type,
        HEADER_EVENT_ID: meta.event_id,
        HEADER_CONTENT_TYPE: CONTENT_TYPE_PROTOBUF,
        **trace_headers,
    }
    return {
        "event_id": meta.event_id,
        "topic": topic,
        "key": meta.aggregate_id,
        "event_type": event_type,
        "payload": event.SerializeToString(),
        "headers": headers,
        "created_at": now,
        "published_at": None,
        "attempts": 0,
    }


class OutboxRelay:
    """Publishes outbox rows to the bus, oldest first, and marks them published once acknowledged.

    `start()` runs it in the background (polling every `poll_interval_ms`, or at once after
    `notify()`); `run_once()` publishes one batch. On a bus failure the rows stay unpublished and
    the relay retries with exponential backoff (from `retry_backoff_ms`, capped at
    `retry_backoff_max_ms`). On PostgreSQL the batch is locked with FOR UPDATE SKIP LOCKED and kept
    locked until marked, so several relays (replicas) can run: each publishes rows that no other
    holds, and holds back a key whose earlier rows another relay is publishing. On SQLite one relay
    runs per database; it does not keep a transaction open while publishing (that would hold the
    database's write lock), but marks the rows in a second transaction after the acknowledgement.
    """

    def __init__(
        self,
        database: Database,
        bus: EventBus,
        *,
        batch_size_max: int = RELAY_BATCH_SIZE_MAX,
        batch_bytes_max: int = RELAY_BATCH_BYTES_MAX,
        poll_interval_ms: int = RELAY_POLL_INTERVAL_MS,
        retry_backoff_ms: int = RELAY_RETRY_BACKOFF_MS,
        retry_backoff_max_ms: int = RELAY_RETRY_BACKOFF_MAX_MS,
        retention_s: int = OUTBOX_RETENTION_S,
        purge_interval_s: int = OUTBOX_PURGE_INTERVAL_S,
        purge_batch_size_max: int = OUTBOX_PURGE_BATCH_SIZE_MAX,
    ) -> None:
        if batch_size_max < 1:
            raise ValueError("batch_size_max must be at least 1")
        self.database = database
        self.bus = bus
        self.batch_size_max = batch_size_max
        self.batch_bytes_max = batch_bytes_max
        self.poll_interval_ms = poll_interval_ms
        self.retry_backoff_ms = retry_backoff_ms
        self.retry_backoff_max_ms = retry_backoff_max_ms
        self.retention_s = retention_s
        self.purge_interval_s = purge_interval_s
        self.purge_batch_size_max = purge_batch_size_max
        self.published_total = 0
        self.failures_total = 0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._last_purge = 0.0

    @property
    def running(self) -> bool:
        """Whether the background task is running."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Starts publishing in the background."""
        if self.running:
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stops the background task: lets the current batch finish within a grace period."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        done, _ = await asyncio.wait({task}, timeout=RELAY_STOP_GRACE_MS / 1000)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=RELAY_STOP_GRACE_MS / 1000)

    def notify(self) -> None:
        """Wakes the background task now (for example right after committing an event)."""
        self._wake.set()

    async def run_once(self) -> int:
        """Publishes the oldest unpublished rows as one batch; returns how many were published.

        Raises the bus's error if the batch was not acknowledged (the rows stay unpublished).
        """
        if self.database.dialect == "postgresql":
            return await self._run_once_locking()
        return await self._run_once_single()

    async def pending(self) -> int:
        """How many outbox rows are not published yet."""
        async with self.database.transaction() as session:
            count = await session.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
            )
        return int(count or 0)

    async def drain(self, timeout_s: float) -> None:
        """Waits until every row is published (publishing itself if not started); TimeoutError after
        `timeout_s`. For tests and for shutting a service down cleanly."""
        async with asyncio.timeout(timeout_s):
            failures = 0
            while True:
                if not self.running:
                    try:
                        await self.run_once()
                        failures = 0
                    except Exception as exc:
                        failures += 1
                        log.warning("outbox relay: publish failed (attempt %d): %r", failures, exc)
                        await asyncio.sleep(self._backoff_s(failures))
                        continue
                if await self.pending() == 0:
                    return
                if self.running:
                    self.notify()
                    await asyncio.sleep(self.poll_interval_ms / 1000)

    async def purge(self, *, now: datetime | None = None) -> int:
        """Deletes rows published more than `retention_s` ago, in batches; returns how many."""
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=self.retention_s)
        purged = 0
        while True:
            async with self.database.transaction() as session:
                oldest = (
                    select(outbox.c.id)
                    .where(outbox.c.published_at.is_not(None), outbox.c.published_at < cutoff)
                    .order_by(outbox.c.id)
                    .limit(self.purge_batch_size_max)
                    .scalar_subquery()
                )
                result = await session.execute(delete(outbox).where(outbox.c.id.in_(oldest)))
                deleted = int(getattr(result, "rowcount", 0) or 0)
            purged += deleted
            if deleted < self.purge_batch_size_max:
                return purged

    # -- internals ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                published = await self.run_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.failures_total += 1
                log.warning("outbox relay: publish failed (attempt %d), retrying: %r", failures, exc)
                await self._sleep(self._backoff_s(failures))
                continue
            await self._maybe_purge()
            if published == 0:
                await self._sleep(self.poll_interval_ms / 1000)

    async def _sleep(self, seconds: float) -> None:
        if self._stopping:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _backoff_s(self, failures: int) -> float:
        backoff_ms = min(self.retry_backoff_max_ms, self.retry_backoff_ms << min(failures - 1, 30))
        return backoff_ms / 1000

    async def _maybe_purge(self) -> None:
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._last_purge < self.purge_interval_s:
            return
        self._last_purge = loop_time
        try:
            purged = await self.purge()
        except Exception as exc:
            log.warning("outbox relay: purge failed: %r", exc)
            return
        if purged:
            log.info("outbox relay: purged %d published rows", purged)

    def _select_batch(self, *, locking: bool) -> Any:
        query = (
            select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.payload, outbox.c.headers)
            .where(outbox.c.published_at.is_(None))
            .order_by(outbox.c.id)
            .limit(self.batch_size_max)
        )
        return query.with_for_update(skip_locked=True) if locking else query

    def _cap_bytes(self, rows: Sequence[Any]) -> list[Any]:
        kept: list[Any] = []
        size = 0
        for row in rows:
            size += len(row.payload) + len(row.key) + sum(len(k) + len(v) for k, v in row.headers.items())
            if kept and size > self.batch_bytes_max:
                break
            kept.append(row)
        return kept

    async def _publish(self, rows: Sequence[Any]) -> None:
        messages = [
            BusMessage(topic=row.topic, key=row.key, value=row.payload, headers=dict(row.headers))
            for row in rows
        ]
        await self.bus.publish(messages)

    async def _count_attempt(self, ids: list[int]) -> None:
        with contextlib.suppress(Exception):
            async with self.database.transaction() as session:
                await session.execute(
                    update(outbox).where(outbox.c.id.in_(ids)).values(attempts=outbox.c.attempts + 1)
                )

    async def _mark_published(self, session: AsyncSession, ids: list[int]) -> None:
        await session.execute(
            update(outbox)
            .where(one_of(session, outbox.c.id, ids), outbox.c.published_at.is_(None))
            .values(published_at=datetime.now(UTC), attempts=outbox.c.attempts + 1)
        )

    async def _run_once_single(self) -> int:
        async with self.database.transaction() as session:
            rows = self._cap_bytes((await session.execute(self._select_batch(locking=False))).all())
        if not rows:
            return 0
        ids = [row.id for row in rows]
        try:
            await self._publish(rows)
        except Exception:
            await self._count_attempt(ids)
            raise
        async with self.database.transaction() as session:
            await self._mark_published(session, ids)
        self.published_total += len(ids)
        return len(ids)

    async def _run_once_locking(self) -> int:
        ids: list[int] = []
        try:
            async with self.database.transaction() as session:
                rows = list((await session.execute(self._select_batch(locking=True))).all())
                if not rows:
                    return 0
                rows = self._cap_bytes(await self._without_held_back_keys(session, rows))
                if not rows:
                    return 0
                ids = [row.id for row in rows]
                await self._publish(rows)
                await self._mark_published(session, ids)
        except Exception:
            if ids:  # after the rollback released the rows' locks
                await self._count_attempt(ids)
            raise
        self.published_total += len(ids)
        return len(ids)

    async def _without_held_back_keys(self, session: AsyncSession, rows: list[Any]) -> list[Any]:
        # A row is held back if an earlier unpublished row of its key is not in this batch: another
        # relay has it locked (or it became visible late); publishing ours now would reorder.
        ids = [row.id for row in rows]
        keys = sorted({row.key for row in rows})
        earliest_foreign: dict[str, int] = dict(
            (
                await session.execute(
                    select(outbox.c.key, func.min(outbox.c.id))
                    .where(
                        outbox.c.published_at.is_(None),
                        one_of(session, outbox.c.key, keys),
                        ~one_of(session, outbox.c.id, ids),
                        outbox.c.id < max(ids),
                    )
                    .group_by(outbox.c.key)
                )
            ).all()
        )
        if not earliest_foreign:
            return rows
        return [
            row for row in rows if not (row.key in earliest_foreign and earliest_foreign[row.key] < row.id)
        ]
