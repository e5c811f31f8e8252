"""The event bus: one interface, two implementations.

`InProcessBus` is the embedded default (in memory, one process); `KafkaBus` talks to Kafka with
aiokafka. Both give the same guarantees to the outbox relay and the consumer helper:

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
import logging
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
    """`__aiter__` on top of `fetch()`, shared by both implementations."""

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
    """The partition of a key on the in-process bus (stable across runs)."""
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
