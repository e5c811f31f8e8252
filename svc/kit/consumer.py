"""The consumer helper: decodes events, runs the handler exactly once in effect, parks poison.

    async def on_entry(session: AsyncSession, event: Message, message: ReceivedMessage) -> None:
        ...  # writes through `session`: committed together with the inbox row

    consumer = EventConsumer(database, bus, name="notifications", topics=["finmesh.ledger.v1.entries"],
                             handler=on_entry)
    await consumer.start()

Each message is handled in one database transaction together with its inbox row
(kit_inbox, unique on (consumer, event_id)): a delivery of an event this consumer already
processed is dropped, so redeliveries (the bus is at-least-once) have no effect. A handler that
raises is retried with exponential backoff; after `max_attempts` the message is parked in the
dead-letter topic `<topic>.dlq`, with the error and the attempts in its headers, and the consumer
moves on. A message that cannot be decoded is parked at once. Offsets are committed after the
messages of a fetch are processed (handled, dropped as duplicates or parked).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import pkgutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry import propagate, trace
from sqlalchemy import Insert, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.bus import BusMessage, EventBus, ReceivedMessage, Subscription
from svc.kit.db import Database
from svc.kit.outbox import HEADER_EVENT_TYPE, OutboxError, event_meta
from svc.kit.tables import inbox

log = logging.getLogger(__name__)

EVENTS_PACKAGE = "finmesh.events.v1"
DLQ_SUFFIX = ".dlq"
HEADER_DLQ_ERROR = "dlq-error"
HEADER_DLQ_ERROR_TYPE = "dlq-error-type"
HEADER_DLQ_ATTEMPTS = "dlq-attempts"
HEADER_DLQ_CONSUMER = "dlq-consumer"
HEADER_DLQ_TOPIC = "dlq-original-topic"
HEADER_DLQ_PARTITION = "dlq-original-partition"
HEADER_DLQ_OFFSET = "dlq-original-offset"
DLQ_ERROR_CHARS_MAX = 2_000

CONSUMER_ATTEMPTS_MAX = 5
CONSUMER_BACKOFF_MS = 100
CONSUMER_BACKOFF_MAX_MS = 10_000
CONSUMER_FETCH_TIMEOUT_MS = 500
CONSUMER_FETCH_RECORDS_MAX = 200
CONSUMER_STOP_GRACE_MS = 5_000

Handler = Callable[[AsyncSession, Message, ReceivedMessage], Awaitable[None]]


class EventDecodeError(ValueError):
    """A message is not a decodable finmesh event (no or unknown event type, bad payload)."""


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return topic + DLQ_SUFFIX


def event_class(event_type: str) -> type[Message]:
    """The generated class of an event type (full proto name) of the finmesh.events.v1 package."""
    if not event_type.startswith(EVENTS_PACKAGE + "."):
        raise EventDecodeError(f"{event_type!r} is not an event type of {EVENTS_PACKAGE}")
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(event_type)
    except KeyError:
        _import_event_modules()
        try:
            descriptor = pool.FindMessageTypeByName(event_type)
        except KeyError:
            raise EventDecodeError(f"unknown event type {event_type!r}") from None
    return message_factory.GetMessageClass(descriptor)


def decode_event(event_type: str | None, payload: bytes) -> Message:
    """Parses a payload into its event class, named by the `event-type` header."""
    if not event_type:
        raise EventDecodeError(f"no {HEADER_EVENT_TYPE!r} header")
    event = event_class(event_type)()
    try:
        event.ParseFromString(payload)
    except DecodeError as exc:
        raise EventDecodeError(f"payload is not a valid {event_type}: {exc}") from exc
    try:
        meta = event_meta(event)
    except OutboxError as exc:
        raise EventDecodeError(str(exc)) from exc
    if not meta.event_id:
        raise EventDecodeError(f"{event_type} without meta.event_id")
    return event


_imported_event_modules = False


def _import_event_modules() -> None:
    # The generated modules register their messages in the default descriptor pool on import.
    global _imported_event_modules
    if _imported_event_modules:
        return
    _imported_event_modules = True
    package = importlib.import_module(EVENTS_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.endswith("_pb2"):
            try:
                importlib.import_module(f"{EVENTS_PACKAGE}.{module.name}")
            except Exception as exc:
                log.warning("cannot import %s.%s: %r", EVENTS_PACKAGE, module.name, exc)


@dataclass
class ConsumerStats:
    """What a consumer did since it was made."""

    handled: int = 0
    duplicates: int = 0
    parked: int = 0
    failed_attempts: int = 0


class EventConsumer:
    """Consumes `topics` as consumer group `name`, running `handler` once per event (see module doc)."""

    def __init__(
        self,
        database: Database,
        bus: EventBus,
        *,
        name: str,
        topics: Sequence[str],
        handler: Handler,
        max_attempts: int = CONSUMER_ATTEMPTS_MAX,
        backoff_ms: int = CONSUMER_BACKOFF_MS,
        backoff_max_ms: int = CONSUMER_BACKOFF_MAX_MS,
        fetch_timeout_ms: int = CONSUMER_FETCH_TIMEOUT_MS,
        fetch_records_max: int = CONSUMER_FETCH_RECORDS_MAX,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        self.database = database
        self.bus = bus
        self.name = name
        self.topics = list(topics)
        self.handler = handler
        self.max_attempts = max_attempts
        self.backoff_ms = backoff_ms
        self.backoff_max_ms = backoff_max_ms
        self.fetch_timeout_ms = fetch_timeout_ms
        self.fetch_records_max = fetch_records_max
        self.stats = ConsumerStats()
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._fetching = False
        self._tracer = trace.get_tracer(__name__)

    @property
    def running(self) -> bool:
        """Whether the background task is running."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Subscribes (as consumer group `name`) and starts consuming in the background."""
        if self.running:
            return
        self._stopping = False
        self._subscription = await self.bus.subscribe(self.topics, self.name)
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.name}")

    async def stop(self) -> None:
        """Stops after the current message (within a grace period) and leaves the group; messages
        fetched but not committed are delivered again to the group's next subscription."""
        task, self._task = self._task, None
        self._stopping = True
        if task is not None:
            if self._fetching:
                task.cancel()  # waiting for messages: nothing in hand to finish
            await _stop_task(task, CONSUMER_STOP_GRACE_MS)
        await self._close_subscription()

    # -- internals ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                subscription = self._subscription
                if subscription is None:
                    subscription = self._subscription = await self.bus.subscribe(self.topics, self.name)
                self._fetching = True
                try:
                    batch = await subscription.fetch(
                        timeout_ms=self.fetch_timeout_ms, records_max=self.fetch_records_max
                    )
                finally:
                    self._fetching = False
                if not batch and getattr(subscription, "closed", False):
                    # Closed under us (the bus stopped): fetching again would return at once,
                    # forever, and starve the event loop. Subscribe again after a backoff.
                    raise ConnectionError("the subscription was closed")
                for message in batch:
                    await self._process(message)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The subscription is broken: start again from the last commit (repeats are dropped).
                failures += 1
                log.warning("consumer %s: %r; subscribing again", self.name, exc)
                await self._close_subscription()
                await self._sleep_ms(self._backoff_ms(failures))
                continue
            if batch:
                try:
                    await subscription.commit()
                except Exception as exc:
                    # A later commit covers these offsets; until then a restart would redeliver them.
                    log.warning("consumer %s: commit failed: %r", self.name, exc)

    async def _process(self, message: ReceivedMessage) -> None:
        try:
            event = decode_event(message.headers.get(HEADER_EVENT_TYPE), message.value)
        except EventDecodeError as exc:
            log.error("consumer %s: undecodable message at %s", self.name, _where(message))
            await self._park(message, exc, attempts=0)
            return
        event_id = event_meta(event).event_id
        context = propagate.extract(message.headers)
        with self._tracer.start_as_current_span(
            f"{message.topic} process",
            context=context,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "finmesh",
                "messaging.operation.type": "process",
                "messaging.destination.name": message.topic,
                "messaging.consumer.group.name": self.name,
                "messaging.message.id": event_id,
                "messaging.destination.partition.id": str(message.partition),
                "messaging.kafka.offset": message.offset,
            },
        ) as span:
            error: Exception | None = None
            for attempt in range(1, self.max_attempts + 1):
                try:
                    async with self.database.transaction() as session:
                        if not await self._claim(session, event_id, message.topic):
                            self.stats.duplicates += 1
                            span.set_attribute("finmesh.duplicate", True)
                            return
                        await self.handler(session, event, message)
                    self.stats.handled += 1
                    return
                except Exception as exc:
                    error = exc
                    self.stats.failed_attempts += 1
                    span.record_exception(exc)
                    log.warning(
                        "consumer %s: handler failed on %s (attempt %d of %d): %r",
                        self.name,
                        event_id,
                        attempt,
                        self.max_attempts,
                        exc,
                    )
                    if attempt < self.max_attempts:
                        await self._sleep_ms(self._backoff_ms(attempt))
            assert error is not None
            span.set_status(
                trace.Status(trace.StatusCode.ERROR, f"parked after {self.max_attempts} attempts")
            )
            await self._park(message, error, attempts=self.max_attempts)

    async def _claim(self, session: AsyncSession, event_id: str, topic: str) -> bool:
        values = {
            "consumer": self.name,
            "event_id": event_id,
            "topic": topic,
            "processed_at": datetime.now(UTC),
        }
        statement: Insert
        if self.database.dialect == "postgresql":
            statement = postgresql.insert(inbox).values(values).on_conflict_do_nothing()
        elif self.database.dialect == "sqlite":
            statement = sqlite.insert(inbox).values(values).on_conflict_do_nothing()
        else:  # pragma: no cover - Database refuses other dialects
            statement = insert(inbox).values(values)
        result = await session.execute(statement.returning(inbox.c.event_id))
        return result.scalar_one_or_none() is not None

    async def _park(self, message: ReceivedMessage, error: Exception, *, attempts: int) -> None:
        headers = dict(message.headers)
        headers.update(
            {
                HEADER_DLQ_ERROR: f"{type(error).__name__}: {error}"[:DLQ_ERROR_CHARS_MAX],
                HEADER_DLQ_ERROR_TYPE: f"{type(error).__module__}.{type(error).__qualname__}",
                HEADER_DLQ_ATTEMPTS: str(attempts),
                HEADER_DLQ_CONSUMER: self.name,
                HEADER_DLQ_TOPIC: message.topic,
                HEADER_DLQ_PARTITION: str(message.partition),
                HEADER_DLQ_OFFSET: str(message.offset),
            }
        )
        parked = BusMessage(
            topic=dlq_topic(message.topic), key=message.key, value=message.value, headers=headers
        )
        failures = 0
        while True:  # never drop: the offset is not committed until the message is parked
            try:
                await self.bus.publish([parked])
                break
            except Exception as exc:
                failures += 1
                log.warning("consumer %s: cannot park %s: %r", self.name, _where(message), exc)
                await self._sleep_ms(self._backoff_ms(failures))
        self.stats.parked += 1
        log.error(
            "consumer %s: parked %s in %s: %s",
            self.name,
            _where(message),
            parked.topic,
            headers[HEADER_DLQ_ERROR],
        )

    def _backoff_ms(self, failures: int) -> int:
        return int(min(self.backoff_max_ms, self.backoff_ms << min(failures - 1, 30)))

    async def _sleep_ms(self, milliseconds: int) -> None:
        await asyncio.sleep(milliseconds / 1000)

    async def _close_subscription(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.close()


async def _stop_task(task: asyncio.Task[None], grace_ms: int) -> None:
    """Waits up to `grace_ms` for a task that was asked to stop, then cancels it and waits for that."""
    done, _ = await asyncio.wait({task}, timeout=grace_ms / 1000)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=grace_ms / 1000)
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed: %r", task.get_name(), task.exception())


def _where(message: ReceivedMessage) -> str:
    return f"{message.topic}[{message.partition}]@{message.offset}"
