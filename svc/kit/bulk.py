"""Bulk statements: inserts by PostgreSQL's COPY where it is available (one executemany
elsewhere), and membership in long value lists as one array parameter.

A group commit writes thousands of rows per transaction. Through SQLAlchemy's executemany every
row pays for parameter processing in Python and PostgreSQL parses a multi-row INSERT; COPY
(binary, through asyncpg) streams the rows with neither, which is what lets a batch of postings
cost a small multiple of one. The rows are the same dictionaries an INSERT would take, bound
through each column's type first, so both paths store exactly the same values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, ColumnElement, Table, any_, bindparam, insert
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TypeDecorator

# Below this many rows a plain INSERT is as cheap as starting a COPY.
COPY_ROWS_MIN = 16
# One encoder for every row: json.dumps with non-default separators builds a new one per call.
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"))
_EMPTY_JSON_OBJECT = "{}"

Binder = Callable[[Any], Any]


def _binder(column_type: Any, dialect: Dialect) -> Binder | None:
    """How a Python value of this column type becomes what asyncpg's COPY encoder takes."""
    if isinstance(column_type, TypeDecorator):
        return partial(column_type.process_bind_param, dialect=dialect)
    if isinstance(column_type, JSON):
        return _json_text
    return None


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if not value and isinstance(value, dict):
        return _EMPTY_JSON_OBJECT
    return _JSON_ENCODER.encode(value)


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Inserts `rows` (dicts keyed by column name, all with the same keys) into `table`."""
    if not rows:
        return
    connection = await session.connection()
    dialect = connection.dialect
    if dialect.name != "postgresql" or len(rows) < COPY_ROWS_MIN:
        await connection.execute(insert(table), list(rows))
        return
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    # SQLAlchemy's asyncpg adapter begins the database transaction with the first statement it
    # runs; a COPY sent first on the driver would commit on its own, outside the unit of work.
    if driver is None or not driver.is_in_transaction():
        await connection.execute(insert(table), list(rows))
        return
    names = list(rows[0].keys())
    binders = [
        (position, binder)
        for position, name in enumerate(names)
        if (binder := _binder(table.c[name].type, dialect)) is not None
    ]
    values_of = itemgetter(*names)
    records: list[Sequence[Any]] = []
    for row in rows:
        values = list(values_of(row)) if len(names) > 1 else [row[names[0]]]
        for position, binder in binders:
            values[position] = binder(values[position])
        records.append(values)
    # The connection's search_path names the service's schema; COPY resolves the table there.
    await driver.copy_records_to_table(table.name, records=records, columns=names)


def one_of(session: AsyncSession, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN values`. On PostgreSQL one array parameter (`column = ANY($1)`): an IN list
    of a thousand values costs a thousand placeholders rendered in Python on every execution."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)
