"""Bulk statements store exactly what a plain INSERT stores, on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import JSON, BigInteger, Column, LargeBinary, MetaData, String, Table, select

from svc.kit.amount import AMOUNT_MAX, Amount
from svc.kit.bulk import COPY_ROWS_MIN, insert_rows, one_of
from svc.kit.db import Database

metadata = MetaData()
rows_table = Table(
    "kit_bulk_probe",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(64), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("payload", LargeBinary, nullable=True),
)


@pytest.fixture
async def probe_database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, schema="kit_bulk")
    async with db.engine.begin() as connection:
        if db.dialect == "postgresql":
            await connection.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS kit_bulk")
        await connection.run_sync(metadata.create_all)
    yield db
    await db.dispose()


def _row(number: int) -> dict[str, object]:
    return {
        "id": number,
        "name": f"row-{number}",
        "amount": AMOUNT_MAX - number,
        "labels": {"n": str(number), "nested": {"ok": number % 2 == 0}},
        "payload": bytes([number % 256]) * 3 if number % 3 else None,
    }


@pytest.mark.parametrize("count", [1, COPY_ROWS_MIN, 1_000])
async def test_rows_round_trip_exactly(probe_database: Database, count: int) -> None:
    rows = [_row(number) for number in range(count)]
    async with probe_database.transaction() as session:
        await insert_rows(session, rows_table, rows)
    async with probe_database.transaction() as session:
        stored = (await session.execute(select(rows_table).order_by(rows_table.c.id))).mappings().all()
    assert [dict(row) for row in stored] == rows


@pytest.mark.parametrize("first", [True, False], ids=["first-statement", "after-a-read"])
async def test_rows_are_part_of_the_transaction(probe_database: Database, first: bool) -> None:
    with pytest.raises(RuntimeError):
        async with probe_database.transaction() as session:
            if not first:
                await session.execute(select(rows_table.c.id).limit(1))
            await insert_rows(session, rows_table, [_row(number) for number in range(100)])
            raise RuntimeError("abort")
    async with probe_database.transaction() as session:
        assert (await session.execute(select(rows_table))).all() == []


async def test_one_of_matches_membership(probe_database: Database) -> None:
    async with probe_database.transaction() as session:
        await insert_rows(session, rows_table, [_row(number) for number in range(50)])
    wanted = [3, 17, 42, 99]
    async with probe_database.transaction() as session:
        found = await session.execute(select(rows_table.c.id).where(one_of(session, rows_table.c.id, wanted)))
        names = await session.execute(
            select(rows_table.c.id).where(
                ~one_of(session, rows_table.c.name, [f"row-{n}" for n in range(1, 50)])
            )
        )
        assert sorted(found.scalars()) == [3, 17, 42]
        assert list(names.scalars()) == [0]
