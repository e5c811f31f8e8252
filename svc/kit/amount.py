"""Money in the database: integer base units, exact on every backend."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

# The largest amount any asset can hold: an EVM uint256, and 78 decimal digits.
AMOUNT_MAX = 2**256 - 1


class Amount(TypeDecorator[int]):
    """A base-unit amount: NUMERIC(78,0) on PostgreSQL, decimal text on SQLite; int in Python."""

    impl = Numeric(78, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Text on SQLite, where NUMERIC affinity would store large integers as floats."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(78))
        return dialect.type_descriptor(Numeric(78, 0))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        """int -> the driver's exact type (Decimal of an int is exact)."""
        if value is None:
            return None
        assert isinstance(value, int) and 0 <= value <= AMOUNT_MAX, value
        return str(value) if dialect.name == "sqlite" else Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        """The driver's value -> int, refusing anything that is not a whole number."""
        if value is None:
            return None
        amount = int(value)
        assert amount == Decimal(value), value
        return amount
