"""Fixtures shared by the whole suite: real servers from the harness, and a database per backend.

Backends: every test that takes a database runs on PostgreSQL. On the embedded default (SQLite)
run the kit and the services that hold money and identity (SQLITE_EVERYWHERE) in full, and in
every other service the tests marked `embedded`: its main flow, so that `make run` is proven
service by service without running each integration test twice. FINMESH_TEST_BACKENDS=all runs
every test on both.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from svc.kit import migrate
from svc.kit.db import Database

pytest_plugins = ["tests.harness.fixtures"]

BACKENDS = ("sqlite", "postgresql")
SQLITE_EVERYWHERE = frozenset({"kit", "ledger", "account", "auth", "user", "wallet"})
ALL_BACKENDS_ENV = "FINMESH_TEST_BACKENDS"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(ALL_BACKENDS_ENV) == "all":
        return
    kept, dropped = [], []
    for item in items:
        on_sqlite = "sqlite" in getattr(getattr(item, "callspec", None), "params", {}).values()
        folder = item.path.parent.name
        if on_sqlite and folder not in SQLITE_EVERYWHERE and item.get_closest_marker("embedded") is None:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


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
