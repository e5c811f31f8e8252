"""Events through the kit's public API: outbox, relay, buses, consumer with inbox and dead letters.

Most tests run on SQLite and PostgreSQL (the `database` fixture) with the in-process bus; the
Kafka tests use the real broker of the harness, stopped and restarted in the middle of a stream.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from finmesh.events.v1 import account_events_pb2, event_meta_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import migrate
from svc.kit.bus import BusMessage, InProcessBus, KafkaBus, ReceivedMessage, Subscription
from svc.kit.consumer import (
    HEADER_DLQ_ATTEMPTS,
    HEADER_DLQ_ERROR,
    EventConsumer,
    EventDecodeError,
    decode_event,
    dlq_topic,
)
from svc.kit.db import Database
from svc.kit.outbox import (
    HEADER_EVENT_TYPE,
    OutboxError,
    OutboxRelay,
    add_event,
    event_meta,
    event_topic,
)
from svc.kit.tables import inbox, outbox

# -- the event types used by the tests ---------------------------------------------------------------

# A real event of the contracts; the tests only fill its meta and a string field.
SampleEvent = account_events_pb2.AccountClosed
TEST_EVENT_NAME = SampleEvent.DESCRIPTOR.full_name
TEST_EVENT_TOPIC = event_topic(SampleEvent())


def _event_without_topic() -> type[Message]:
    """An event-shaped message without the topic option (no contract has one: the linter forbids it)."""
    name = "finmesh.events.v1.KitTestEventWithoutTopic"
    pool = descriptor_pool.Default()
    try:
        pool.FindMessageTypeByName(name)
    except KeyError:
        file = descriptor_pb2.FileDescriptorProto(
            name="finmesh/events/v1/kit_test_events.proto",
            package="finmesh.events.v1",
            dependency=["finmesh/events/v1/event_meta.proto"],
            syntax="proto3",
        )
        message = file.message_type.add(name=name.rsplit(".", 1)[1])
        message.field.add(
            name="meta",
            number=1,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
            type_name=".finmesh.events.v1.EventMeta",
        )
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def make_event(aggregate_id: str, version: int, note: str = "") -> Message:
    """A test event for version `version` of aggregate `aggregate_id`."""
    event = SampleEvent(reason=note)
    meta = event_meta(event)
    meta.aggregate_type = "kit_test_account"
    meta.aggregate_id = aggregate_id
    meta.aggregate_version = version
    return event


# -- a small service schema: state changes and what a consumer saw -----------------------------------

test_metadata = MetaData()
changes = Table(
    "kit_test_changes",
    test_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("aggregate_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
)
seen = Table(
    "kit_test_seen",
    test_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("aggregate_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
)


@pytest.fixture
async def service_db(database: Database) -> Database:
    """The migrated kit database plus the test service's own tables."""
    async with database.engine.begin() as connection:
        await connection.run_sync(test_metadata.create_all)
    return database


async def change_state(database: Database, aggregate_id: str, version: int, note: str = "") -> str:
    """One state change and its event, in one transaction; returns the event id."""
    async with database.transaction() as session:
        await session.execute(changes.insert().values(aggregate_id=aggregate_id, version=version))
        return await add_event(session, make_event(aggregate_id, version, note), producer="kit-test")


def recording_handler(run: str) -> Callable[[AsyncSession, Message, ReceivedMessage], Awaitable[None]]:
    """A handler that records the events of this run (aggregate ids start with `run`) in `seen`."""

    async def handle(session: AsyncSession, event: Message, message: ReceivedMessage) -> None:
        meta = event_meta(event)
        if meta.aggregate_id.startswith(run):
            await session.execute(
                seen.insert().values(
                    event_id=meta.event_id, aggregate_id=meta.aggregate_id, version=meta.aggregate_version
                )
            )

    return handle


async def seen_rows(database: Database) -> list[Any]:
    async with database.transaction() as session:
        return list((await session.execute(select(seen).order_by(seen.c.id))).all())


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Polls `predicate` until true; fails the test after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await predicate():  # noqa: ASYNC110 - polls the database, nothing to wait on
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def assert_exactly_once_in_order(
    rows: Sequence[Any], expected_ids: set[str], versions: dict[str, int]
) -> None:
    """Every expected event seen once, and each aggregate's versions seen as 1, 2, ..., n."""
    ids = [row.event_id for row in rows]
    assert len(ids) == len(set(ids)), "an event was handled twice"
    assert set(ids) == expected_ids, f"missing {len(expected_ids - set(ids))} events"
    per_key: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        per_key[row.aggregate_id].append(row.version)
    for aggregate_id, count in versions.items():
        assert per_key[aggregate_id] == list(range(1, count + 1)), f"order broken for {aggregate_id}"


@pytest.fixture
async def in_process_bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus(partitions=3)
    await bus.start()
    yield bus
    await bus.stop()


# -- the outbox ------------------------------------------------------------------------------------


def test_decode_event_finds_the_class_by_its_type_name() -> None:
    # A type whose module this test does not import: the consumer finds it in finmesh.events.v1.
    meta = event_meta_pb2.EventMeta(event_id=str(uuid.uuid4()), aggregate_id="entry-1")
    meta_bytes = meta.SerializeToString()
    payload = bytes([0x0A, len(meta_bytes)]) + meta_bytes  # field 1 (meta), length-delimited
    event = decode_event("finmesh.events.v1.EntryPosted", payload)
    assert event.DESCRIPTOR.full_name == "finmesh.events.v1.EntryPosted"
    assert event_meta(event) == meta
    with pytest.raises(EventDecodeError, match="not an event type"):
        decode_event("google.protobuf.Timestamp", b"")
    with pytest.raises(EventDecodeError, match="unknown event type"):
        decode_event("finmesh.events.v1.NoSuchEvent", b"")
    with pytest.raises(EventDecodeError, match=r"without meta\.event_id"):
        decode_event(TEST_EVENT_NAME, b"")


async def test_outbox_row_is_written_in_the_state_change_transaction(service_db: Database) -> None:
    event_id = await change_state(service_db, "acc-1", 1)

    with pytest.raises(RuntimeError, match="rolled back"):
        async with service_db.transaction() as session:
            await session.execute(changes.insert().values(aggregate_id="acc-2", version=1))
            await add_event(session, make_event("acc-2", 1), producer="kit-test")
            raise RuntimeError("rolled back")

    async with service_db.transaction() as session:
        state = (await session.execute(select(changes.c.aggregate_id))).scalars().all()
        rows = (await session.execute(select(outbox))).all()
    assert state == ["acc-1"]
    assert [(row.event_id, row.key, row.topic, row.published_at) for row in rows] == [
        (event_id, "acc-1", TEST_EVENT_TOPIC, None)
    ]
    assert rows[0].event_type == TEST_EVENT_NAME
    stored = decode_event(rows[0].headers[HEADER_EVENT_TYPE], rows[0].payload)
    meta = event_meta(stored)
    assert meta.event_id == event_id and meta.producer == "kit-test" and meta.HasField("occurred_at")
    assert uuid.UUID(event_id).version == 4


async def test_add_event_refuses_a_message_without_topic_or_aggregate(service_db: Database) -> None:
    async with service_db.transaction() as session:
        no_topic = _event_without_topic()()
        event_meta(no_topic).aggregate_id = "acc-1"
        with pytest.raises(OutboxError, match=r"no topic: set option \(finmesh.events.v1.topic\)"):
            await add_event(session, no_topic, producer="kit-test")
        with pytest.raises(OutboxError, match="aggregate_id is required"):
            await add_event(session, SampleEvent(), producer="kit-test")
        with pytest.raises(OutboxError, match="not an event message"):
            await add_event(session, event_meta_pb2.EventMeta(aggregate_id="x"), producer="kit-test")
    assert event_topic(SampleEvent()) == TEST_EVENT_TOPIC


async def test_relay_purges_published_rows_after_the_retention_period(
    service_db: Database, in_process_bus: InProcessBus
) -> None:
    for version in range(1, 6):
        await change_state(service_db, "acc-1", version)
    relay = OutboxRelay(service_db, in_process_bus, retention_s=3600, purge_batch_size_max=2)
    await relay.drain(timeout_s=10)
    assert await relay.purge() == 0  # published just now: kept
    assert await relay.purge(now=datetime.now(UTC) + timedelta(hours=2)) == 5
    async with service_db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(outbox)) == 0


# -- relay and consumer on the in-process bus --------------------------------------------------------


async def test_relay_and_consumer_deliver_every_event_once_in_order(
    service_db: Database, in_process_bus: InProcessBus
) -> None:
    run = "r-" + uuid.uuid4().hex[:8]
    relay = OutboxRelay(service_db, in_process_bus, batch_size_max=37, poll_interval_ms=20)
    consumer = EventConsumer(
        service_db, in_process_bus, name="kit-test", topics=[TEST_EVENT_TOPIC], handler=recording_handler(run)
    )
    await relay.start()
    await consumer.start()
    try:
        versions = {f"{run}-{n}": 40 for n in range(5)}
        expected = set()
        for version in range(1, 41):
            for aggregate_id in versions:
                expected.add(await change_state(service_db, aggregate_id, version))
        await relay.drain(timeout_s=30)
        await wait_for(lambda: _seen_count(service_db, 200), 30, "200 events handled")
    finally:
        await consumer.stop()
        await relay.stop()
    assert_exactly_once_in_order(await seen_rows(service_db), expected, versions)
    assert consumer.stats.handled == 200 and consumer.stats.duplicates == 0
    async with service_db.transaction() as session:
        inboxed = await session.scalar(
            select(func.count()).select_from(inbox).where(inbox.c.consumer == "kit-test")
        )
    assert inboxed == 200


class FlakyBus:
    """An in-process bus whose publish fails now and then, after storing part of the messages."""

    def __init__(self, inner: InProcessBus, fail_every: int) -> None:
        self.inner = inner
        self.fail_every = fail_every
        self.calls = 0
        self.failures = 0

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        self.calls += 1
        if self.calls % self.fail_every == 0:
            self.failures += 1
            await self.inner.publish(messages[: len(messages) // 2])  # stored, but not acknowledged
            raise ConnectionError("broker went away")
        await self.inner.publish(messages)

    async def subscribe(self, topics: Sequence[str], group_id: str) -> Subscription:
        return await self.inner.subscribe(topics, group_id)


async def test_relay_retries_a_failed_publish_without_loss_or_reordering(
    service_db: Database, in_process_bus: InProcessBus
) -> None:
    run = "f-" + uuid.uuid4().hex[:8]
    bus = FlakyBus(in_process_bus, fail_every=3)
    relay = OutboxRelay(service_db, bus, batch_size_max=10, poll_interval_ms=10, retry_backoff_ms=5)
    consumer = EventConsumer(
        service_db, in_process_bus, name="kit-test", topics=[TEST_EVENT_TOPIC], handler=recording_handler(run)
    )
    versions = {f"{run}-{n}": 30 for n in range(3)}
    expected = set()
    for version in range(1, 31):
        for aggregate_id in versions:
            expected.add(await change_state(service_db, aggregate_id, version))
    await relay.start()
    await consumer.start()
    try:
        await relay.drain(timeout_s=30)
        await wait_for(lambda: _seen_count(service_db, 90), 30, "90 events handled")
    finally:
        await consumer.stop()
        await relay.stop()
    assert bus.failures >= 3
    assert consumer.stats.duplicates > 0  # the half-stored batches came again
    assert_exactly_once_in_order(await seen_rows(service_db), expected, versions)


@pytest.mark.postgres
async def test_several_relays_on_postgresql_keep_order_per_key(
    pg_database_url: str, in_process_bus: InProcessBus
) -> None:
    """Three relay replicas on one PostgreSQL outbox (FOR UPDATE SKIP LOCKED) share the work and
    still publish each aggregate's events in order. (SQLite runs one relay per database.)"""
    service_db = Database(pg_database_url, schema="kit_test")
    await migrate.upgrade(service_db)
    async with service_db.engine.begin() as connection:
        await connection.run_sync(test_metadata.create_all)
    run = "m-" + uuid.uuid4().hex[:8]
    versions = {f"{run}-{n}": 50 for n in range(4)}
    expected = set()
    for version in range(1, 51):
        for aggregate_id in versions:
            expected.add(await change_state(service_db, aggregate_id, version))
    relays = [
        OutboxRelay(
            Database(pg_database_url, schema="kit_test"), in_process_bus, batch_size_max=7, poll_interval_ms=5
        )
        for _ in range(3)
    ]
    consumer = EventConsumer(
        service_db, in_process_bus, name="kit-test", topics=[TEST_EVENT_TOPIC], handler=recording_handler(run)
    )
    await consumer.start()
    try:
        for relay in relays:
            await relay.start()
        await relays[0].drain(timeout_s=30)
        await wait_for(lambda: _seen_count(service_db, 200), 30, "200 events handled")
    finally:
        await consumer.stop()
        for relay in relays:
            await relay.stop()
            await relay.database.dispose()
    try:
        assert sum(1 for relay in relays if relay.published_total > 0) >= 2, (
            "the relays did not share the work"
        )
        assert_exactly_once_in_order(await seen_rows(service_db), expected, versions)
    finally:
        await service_db.dispose()


async def test_a_duplicate_delivery_is_dropped_by_the_inbox(
    service_db: Database, in_process_bus: InProcessBus
) -> None:
    run = "d-" + uuid.uuid4().hex[:8]
    event_id = await change_state(service_db, f"{run}-1", 1)
    relay = OutboxRelay(service_db, in_process_bus)
    await relay.drain(timeout_s=10)
    # Deliver it again: the relay republishes a row it had already published (as after a crash
    # between the acknowledgement and the commit).
    async with service_db.transaction() as session:
        await session.execute(update(outbox).values(published_at=None))
    await relay.drain(timeout_s=10)
    assert len(in_process_bus.messages(TEST_EVENT_TOPIC)) == 2

    consumer = EventConsumer(
        service_db, in_process_bus, name="kit-test", topics=[TEST_EVENT_TOPIC], handler=recording_handler(run)
    )
    await consumer.start()
    try:
        await wait_for(lambda: _committed(in_process_bus, "kit-test", 2), 10, "both deliveries committed")
    finally:
        await consumer.stop()
    assert [row.event_id for row in await seen_rows(service_db)] == [event_id]
    assert (consumer.stats.handled, consumer.stats.duplicates) == (1, 1)


async def test_a_poison_message_is_parked_in_the_dead_letter_topic(
    service_db: Database, in_process_bus: InProcessBus
) -> None:
    run = "p-" + uuid.uuid4().hex[:8]
    attempts: dict[str, int] = defaultdict(int)
    record = recording_handler(run)

    async def handler(session: AsyncSession, event: Message, message: ReceivedMessage) -> None:
        await record(session, event, message)  # rolled back with the failure below
        attempts[event_meta(event).aggregate_id] += 1
        if event_meta(event).aggregate_id == f"{run}-poison":
            raise ValueError("cannot apply this event")

    good_1 = await change_state(service_db, f"{run}-good", 1)
    poison = await change_state(service_db, f"{run}-poison", 1)
    good_2 = await change_state(service_db, f"{run}-good", 2)
    await in_process_bus.publish(
        [
            BusMessage(
                TEST_EVENT_TOPIC, f"{run}-x", b"\xff\x00 not protobuf", {HEADER_EVENT_TYPE: TEST_EVENT_NAME}
            ),
            BusMessage(
                TEST_EVENT_TOPIC, f"{run}-y", b"", {HEADER_EVENT_TYPE: "finmesh.events.v1.NoSuchEvent"}
            ),
        ]
    )
    relay = OutboxRelay(service_db, in_process_bus)
    await relay.drain(timeout_s=10)
    consumer = EventConsumer(
        service_db,
        in_process_bus,
        name="kit-test",
        topics=[TEST_EVENT_TOPIC],
        handler=handler,
        max_attempts=3,
        backoff_ms=1,
    )
    await consumer.start()
    try:
        await wait_for(lambda: _committed(in_process_bus, "kit-test", 5), 10, "all five messages committed")
    finally:
        await consumer.stop()

    assert attempts[f"{run}-poison"] == 3
    assert {row.event_id for row in await seen_rows(service_db)} == {good_1, good_2}
    parked = in_process_bus.messages(dlq_topic(TEST_EVENT_TOPIC))
    by_reason = {message.headers[HEADER_DLQ_ATTEMPTS]: message for message in parked}
    assert len(parked) == 3 and set(by_reason) == {"0", "3"}
    poisoned = [message for message in parked if message.headers[HEADER_DLQ_ATTEMPTS] == "3"]
    assert len(poisoned) == 1
    assert poisoned[0].headers[HEADER_DLQ_ERROR] == "ValueError: cannot apply this event"
    assert event_meta(decode_event(TEST_EVENT_NAME, poisoned[0].value)).event_id == poison
    undecodable = [message for message in parked if message.headers[HEADER_DLQ_ATTEMPTS] == "0"]
    assert {message.key for message in undecodable} == {f"{run}-x", f"{run}-y"}
    assert all("EventDecodeError" in message.headers[HEADER_DLQ_ERROR] for message in undecodable)
    assert consumer.stats.parked == 3
    async with service_db.transaction() as session:
        inboxed = set((await session.execute(select(inbox.c.event_id))).scalars())
    assert inboxed == {good_1, good_2}


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """Finished spans of this process, from a tracer provider that records them."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_trace_context_travels_in_headers(
    service_db: Database, in_process_bus: InProcessBus, spans: InMemorySpanExporter
) -> None:
    run = "t-" + uuid.uuid4().hex[:8]
    handled_in: list[trace.SpanContext] = []

    async def handler(session: AsyncSession, event: Message, message: ReceivedMessage) -> None:
        handled_in.append(trace.get_current_span().get_span_context())

    with trace.get_tracer("kit-test").start_as_current_span("place order") as producer_span:
        await change_state(service_db, f"{run}-1", 1)
    await OutboxRelay(service_db, in_process_bus).drain(timeout_s=10)
    message = in_process_bus.messages(TEST_EVENT_TOPIC)[-1]
    trace_id = producer_span.get_span_context().trace_id
    assert message.headers["traceparent"].split("-")[1] == format(trace_id, "032x")

    consumer = EventConsumer(
        service_db, in_process_bus, name="kit-test", topics=[TEST_EVENT_TOPIC], handler=handler
    )
    await consumer.start()
    try:
        await wait_for(lambda: _as_true(bool(handled_in)), 10, "the event handled")
    finally:
        await consumer.stop()
    assert handled_in[0].trace_id == trace_id
    consumer_spans: list[ReadableSpan] = [
        span for span in spans.get_finished_spans() if span.name == f"{TEST_EVENT_TOPIC} process"
    ]
    mine = [span for span in consumer_spans if span.context.trace_id == trace_id]
    assert len(mine) == 1 and mine[0].kind == trace.SpanKind.CONSUMER
    assert mine[0].parent is not None and mine[0].parent.span_id == producer_span.get_span_context().span_id


# -- Kafka -----------------------------------------------------------------------------------------


@pytest.mark.kafka
async def test_kafka_broker_killed_mid_stream_loses_nothing(service_db: Database, kafka_broker: Any) -> None:
    """1,000 state changes over 10 aggregates; the broker is killed after a third of the stream and
    restarted: every event arrives, the inbox sees each exactly once, each key stays in order."""
    run = "k-" + uuid.uuid4().hex[:8]
    total, aggregates, writers = 1000, 10, 4
    versions = {f"{run}-{n}": total // aggregates for n in range(aggregates)}
    ids = list(versions)
    expected: set[str] = set()
    written = 0

    def kafka_bus() -> KafkaBus:
        return KafkaBus(
            kafka_broker.bootstrap_servers,
            client_id=f"kit-test-{run}",
            request_timeout_ms=2_000,
            publish_timeout_ms=2_000,
            topic_partitions=3,
            topic_prefix=f"{run}.",  # a fresh topic, so that only this run's events are on it
        )

    producer_bus, consumer_bus = kafka_bus(), kafka_bus()
    relay = OutboxRelay(
        service_db, producer_bus, batch_size_max=100, poll_interval_ms=20, retry_backoff_max_ms=1_000
    )
    consumer = EventConsumer(
        service_db,
        consumer_bus,
        name=f"kit-test-{run}",
        topics=[TEST_EVENT_TOPIC],
        handler=recording_handler(run),
    )

    restarted = asyncio.Event()

    async def write(writer: int) -> None:
        # A third of the stream before the kill, some while the broker is down, the rest after.
        nonlocal written
        mine = [aggregate_id for n, aggregate_id in enumerate(ids) if n % writers == writer]
        for version in range(1, total // aggregates + 1):
            for aggregate_id in mine:
                if written >= 2 * total // 3:
                    await restarted.wait()
                expected.add(await change_state(service_db, aggregate_id, version))
                written += 1
                await asyncio.sleep(0.005)

    async with asyncio.timeout(240):
        await producer_bus.start()
        await consumer_bus.start()
        await consumer.start()
        await relay.start()
        try:
            writing = [asyncio.create_task(write(writer)) for writer in range(writers)]
            await wait_for(lambda: _as_true(written >= total // 3), 60, "a third of the stream written")
            await wait_for(lambda: _as_true(relay.published_total > 0), 30, "the relay publishing")
            kafka_broker.kill()
            published_at_kill, written_at_kill = relay.published_total, written
            # Keep it down until the relay has felt it (a publish not acknowledged in time).
            await wait_for(lambda: _as_true(relay.failures_total > 0), 30, "the relay to see the outage")
            written_during_outage = written - written_at_kill
            restart_began = time.monotonic()
            await asyncio.to_thread(kafka_broker.restart)
            restart_s, written_at_restart = time.monotonic() - restart_began, written
            restarted.set()
            await asyncio.gather(*writing)
            await relay.drain(timeout_s=90)
            await wait_for(lambda: _seen_count(service_db, total), 90, f"{total} events handled")
        finally:
            restarted.set()
            await asyncio.to_thread(kafka_broker.start)  # leave it running for the next test
            await consumer.stop()
            await relay.stop()
            await consumer_bus.stop()
            await producer_bus.stop()

    assert published_at_kill < total and written_at_kill < total, "the broker was not stopped mid-stream"
    assert written_during_outage > 0, "state changes stopped while the broker was down"
    assert written_at_restart < total, "the stream ended before the broker came back"
    rows = await seen_rows(service_db)
    assert_exactly_once_in_order(rows, expected, versions)
    async with service_db.transaction() as session:
        inboxed = list(
            (
                await session.execute(select(inbox.c.event_id).where(inbox.c.consumer == f"kit-test-{run}"))
            ).scalars()
        )
        unpublished = await session.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
        )
    assert sorted(inboxed) == sorted(expected)  # each event exactly once in the inbox
    assert unpublished == 0
    print(
        f"\nkafka outage on {service_db.dialect}: published before kill {published_at_kill}, "
        f"written while down {written_during_outage}+, after restart ({restart_s:.1f} s) "
        f"{total - written_at_restart}, relay failures {relay.failures_total}, "
        f"duplicates dropped {consumer.stats.duplicates}"
    )


# -- helpers -----------------------------------------------------------------------------------------


async def _seen_count(database: Database, count: int) -> bool:
    async with database.transaction() as session:
        return (await session.scalar(select(func.count()).select_from(seen))) == count


async def _committed(bus: InProcessBus, group_id: str, count: int) -> bool:
    return (
        sum(bus.committed(group_id, TEST_EVENT_TOPIC, partition) for partition in range(bus.partitions))
        == count
    )


async def _as_true(value: bool) -> bool:
    return value
