"""Persistence: one async SQLAlchemy engine per service, SQLite by default, PostgreSQL in production.

Each service owns its data: on PostgreSQL a schema of its own (set as the connection's
search_path), on SQLite a database file of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
POOL_SIZE_MAX = 10


class Database:
    """An engine and its session factory; `transaction()` is the unit of work."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        parsed = make_url(url)
        self.url = url
        self.dialect = parsed.get_backend_name()
        self.schema = schema if self.dialect == "postgresql" else None
        self.engine: AsyncEngine = _create_engine(url, self.dialect, self.schema)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one database transaction: committed on success, rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def _create_engine(url: str, dialect: str, schema: str | None) -> AsyncEngine:
    if dialect == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _make_sqlite_transactions_serializable(engine)
        return engine
    if dialect == "postgresql":
        connect_args: dict[str, Any] = {}
        if schema:
            connect_args["server_settings"] = {"search_path": schema}
        return create_async_engine(
            url, pool_size=POOL_SIZE_MAX, max_overflow=0, pool_pre_ping=True, connect_args=connect_args
        )
    raise ValueError(f"unsupported database {dialect!r}: use sqlite+aiosqlite:// or postgresql+asyncpg://")


def _make_sqlite_transactions_serializable(engine: AsyncEngine) -> None:
    # pysqlite opens transactions lazily and only before DML, so two readers can both decide to
    # write and one fails with "database is locked" after reading stale state. Taking the write
    # lock at BEGIN (IMMEDIATE) serialises transactions, which is what money code needs.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
