"""Fixtures shared by the whole suite: real servers from the harness, and a database per backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from svc.kit import migrate
from svc.kit.db import Database

pytest_plugins = ["tests.harness.fixtures"]

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend: an SQLite file, and a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    server = request.getfixturevalue("postgres_server")
    return str(server.create_database(f"t_{uuid.uuid4().hex[:16]}"))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A migrated database (kit tables) on each backend, in a schema named like a service's."""
    db = Database(database_url, schema="kit_test")
    await migrate.upgrade(db)
    yield db
    await db.dispose()
