"""Integration-test harness: real PostgreSQL, Redis and Kafka (KRaft) on loopback.

- servers.py:       PostgresServer, RedisServer, KafkaBroker, ServerStartError (import from here)
- postgres.py, redis_server.py, kafka_broker.py: one server each
- process.py:       process groups, free ports, scratch dirs, clean-up at interpreter exit
- fixtures.py:      the pytest fixtures; tests/conftest.py registers them with
                    pytest_plugins = ["tests.harness.fixtures"]

Deliberately imports nothing: pytest may import this package under two names (`harness` and
`tests.harness`) and the server modules must exist once. Import from tests.harness.servers.
"""
