"""The harness servers are real and work, through the same client libraries the services use."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.harness.servers import KafkaBroker, PostgresServer, RedisServer


@pytest.mark.postgres
async def test_postgres_sql_round_trip(postgres_server: PostgresServer, pg_database_url: str) -> None:
    assert pg_database_url.startswith(f"postgresql+asyncpg://{postgres_server.user}:")
    assert f"@127.0.0.1:{postgres_server.port}/t_" in pg_database_url
    dsn = pg_database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        version = await conn.fetchval("SHOW server_version")
        assert int(version.split(".")[0]) >= 15
        assert await conn.fetchval("SELECT current_database()") == dsn.rsplit("/", 1)[1]
        assert await conn.fetchval("SELECT inet_server_port()") == postgres_server.port
        # The database is fresh: only the system schemas, no user tables.
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0

        await conn.execute("CREATE TABLE account (id bigint PRIMARY KEY, owner text NOT NULL, cents bigint)")
        async with conn.transaction():
            await conn.executemany(
                "INSERT INTO account VALUES ($1, $2, $3)", [(i, f"owner-{i}", i * 100) for i in range(1, 51)]
            )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO account VALUES (1, 'dup', 0)")
        total = await conn.fetchval("SELECT sum(cents) FROM account")
        assert total == sum(i * 100 for i in range(1, 51))
        row = await conn.fetchrow("SELECT owner, cents FROM account WHERE id = $1", 42)
        assert (row["owner"], row["cents"]) == ("owner-42", 4200)
    finally:
        await conn.close()


@pytest.mark.postgres
def test_postgres_databases_are_separate(postgres_server: PostgresServer, pg_database_url: str) -> None:
    name = pg_database_url.rsplit("/", 1)[1]
    listed = postgres_server.execute("SELECT datname FROM pg_database ORDER BY datname").splitlines()
    assert name in listed
    other = f"t_other_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(other)
    assert url == postgres_server.url(other)
    postgres_server.drop_database(other)
    assert other not in postgres_server.execute("SELECT datname FROM pg_database").splitlines()


@pytest.mark.redis
async def test_redis_set_get(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = aioredis.from_url(redis_server.url)
    try:
        key = f"harness:{uuid.uuid4().hex}"
        assert await client.set(key, b"value-1", ex=60)
        assert await client.get(key) == b"value-1"
        assert await client.incr(f"{key}:n") == 1
        assert 0 < await client.ttl(key) <= 60
        info = await client.info("server")
        assert int(info["tcp_port"]) == redis_server.port
    finally:
        await client.aclose()


async def _consume(bootstrap: str, topic: str, group: str, want: int, within: float = 60.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + within
        while len(got) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                got.extend(record.value for record in records)
        # Nothing beyond what we expected is there.
        for records in (await consumer.getmany(timeout_ms=500)).values():
            got.extend(record.value for record in records)
        await consumer.commit()
    finally:
        await consumer.stop()
    return got


@pytest.mark.kafka
async def test_kafka_survives_restart_and_crash(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic = f"harness-{uuid.uuid4().hex[:8]}"
    group = f"harness-group-{uuid.uuid4().hex[:8]}"

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(100):
            await producer.send_and_wait(topic, str(i).encode(), key=b"aggregate-1")

        # Clean stop, then start again on the same port and data directory.
        await asyncio.to_thread(kafka_broker.stop)
        await asyncio.to_thread(kafka_broker.restart)
        assert kafka_broker.bootstrap_servers == bootstrap

        # The same idempotent producer carries on after the restart.
        for i in range(100, 200):
            await producer.send_and_wait(topic, str(i).encode(), key=b"aggregate-1")
    finally:
        await producer.stop()

    got = await _consume(bootstrap, topic, group, want=200)
    assert [int(v) for v in got] == list(range(200))

    # A hard kill (as in a crash) keeps the data and the group's committed offsets.
    try:
        await asyncio.to_thread(kafka_broker.kill)
    finally:
        await asyncio.to_thread(kafka_broker.restart)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"200", key=b"aggregate-1")
    finally:
        await producer.stop()
    assert await _consume(bootstrap, topic, group, want=1) == [b"200"]
