"""pytest fixtures for the real servers. Registered by tests/conftest.py:

    pytest_plugins = ["tests.harness.fixtures"]

A server that cannot start raises ServerStartError (reason + log tail): every test that uses it
errors; nothing is skipped. Session servers start on first use, once per session.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from .servers import KafkaBroker, PostgresServer, RedisServer, S3Server
from .softhsm import SoftHsmToken


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def softhsm() -> Iterator[SoftHsmToken]:
    """One SoftHSM2 token for the whole session, defined once here: a process loads one PKCS#11
    module configuration, so a second session token (a fixture re-bound in another conftest is
    another fixture) would be invisible to the module."""
    token = SoftHsmToken().start()
    token.activate()
    try:
        yield token
    finally:
        token.close()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One S3-compatible endpoint for the session; tests use buckets of their own."""
    server = S3Server()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One broker for the session. A test may stop/kill/restart it (same port and data) but
    must leave it running: use try/finally with `kafka_broker.restart()`."""
    broker = KafkaBroker()
    try:
        broker.start()
        yield broker
    finally:
        broker.close()


@pytest.fixture
def pg_database_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy async URL (postgresql+asyncpg://...) of a fresh, empty database for this test.

    Dropped afterwards (WITH (FORCE), so connections left open don't matter).
    """
    stem = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t_{stem}_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)
