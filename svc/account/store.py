"""The account service's tables and queries (SQLAlchemy Core).

Schema (migrations/versions/account_0001_initial.py):
- account_accounts: one row per (user, asset, kind) with its two ledger accounts, status and the
  counts of ACTIVE freezes per scope. Balances are not stored: they live in the ledger and the cache.
- account_freezes: every freeze, with the ledger entry holding an AMOUNT freeze.
Amounts are NUMERIC(78,0) on PostgreSQL and decimal TEXT on SQLite (whose NUMERIC affinity would
turn integers above 2^63 into floats); Python sees int on both.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from svc.account.domain import Account, Freeze, FreezeState, Kind, Scope, Status
from svc.kit.amount import Amount

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 1_000


metadata = MetaData()

accounts = Table(
    "account_accounts",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("asset", String(49), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("ledger_account_id", String(36), nullable=False, unique=True),
    Column("ledger_account_code", String(256), nullable=False),
    Column("frozen_account_id", String(36), nullable=False, unique=True),
    Column("frozen_account_code", String(256), nullable=False),
    Column("amount_freezes", Integer, nullable=False),
    Column("account_freezes", Integer, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("close_time_us", BigInteger, nullable=True),
)

freezes = Table(
    "account_freezes",
    metadata,
    Column("freeze_id", String(36), primary_key=True),
    Column("account_id", String(36), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("asset", String(49), nullable=False),
    Column("scope", SmallInteger, nullable=False),
    Column("amount", Amount, nullable=False),
    Column("original_amount", Amount, nullable=False),
    Column("reason", SmallInteger, nullable=False),
    Column("reason_detail", String(1024), nullable=False),
    Column("case_reference", String(128), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("hold_entry_id", String(128), nullable=False),
    Column("hold_version", Integer, nullable=False),
    Column("placed_by", String(128), nullable=False),
    Column("action_request_id", String(64), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=True),
    Column("end_time_us", BigInteger, nullable=True),
    Column("ended_by", String(128), nullable=False),
    Column("end_note", String(1024), nullable=False),
    Column("capture_entry_id", String(128), nullable=False),
    Column("version", BigInteger, nullable=False),
)


def _account_of(row: Any) -> Account:
    values = dict(row._mapping)
    values["kind"] = Kind(values["kind"])
    values["status"] = Status(values["status"])
    return Account(**values)


def _freeze_of(row: Any) -> Freeze:
    values = dict(row._mapping)
    values["scope"] = Scope(values["scope"])
    values["state"] = FreezeState(values["state"])
    return Freeze(**values)


def _values(record: Account | Freeze) -> dict[str, Any]:
    return {name: int(value) if isinstance(value, int) else value for name, value in asdict(record).items()}


async def insert_account(session: AsyncSession, account: Account) -> None:
    """Adds an account; (user, asset, kind) is unique, so a concurrent open raises IntegrityError."""
    await session.execute(insert(accounts).values(**_values(account)))


async def account_by_id(session: AsyncSession, account_id: str, *, lock: bool = False) -> Account | None:
    """One account, locked FOR UPDATE when asked (PostgreSQL; SQLite holds the database lock)."""
    query = select(accounts).where(accounts.c.account_id == account_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _account_of(row) if row is not None else None


async def accounts_by_id(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, Account]:
    """The accounts of these ids that exist."""
    query = select(accounts).where(accounts.c.account_id.in_(sorted(set(account_ids))))
    return {row.account_id: _account_of(row) for row in await session.execute(query)}


async def account_by_owner(session: AsyncSession, user_id: str, asset: str, kind: Kind) -> Account | None:
    """The account of a user for an asset and kind."""
    query = select(accounts).where(
        accounts.c.user_id == user_id, accounts.c.asset == asset, accounts.c.kind == int(kind)
    )
    row = (await session.execute(query)).first()
    return _account_of(row) if row is not None else None


async def accounts_by_ledger_ids(session: AsyncSession, ledger_ids: Sequence[str]) -> list[Account]:
    """The accounts whose own or frozen-holds ledger account is among `ledger_ids`."""
    ids = sorted(set(ledger_ids))
    query = select(accounts).where(
        or_(accounts.c.ledger_account_id.in_(ids), accounts.c.frozen_account_id.in_(ids))
    )
    return [_account_of(row) for row in await session.execute(query)]


async def list_accounts(
    session: AsyncSession,
    user_id: str,
    *,
    after: tuple[str, int] | None,
    limit: int,
    asset: str,
    chain: str,
    kind: int,
    statuses: Sequence[Status],
) -> list[Account]:
    """A user's accounts ordered by asset then kind, after the cursor, filtered."""
    query = select(accounts).where(
        accounts.c.user_id == user_id, accounts.c.status.in_([int(status) for status in statuses])
    )
    if after is not None:
        query = query.where(tuple_(accounts.c.asset, accounts.c.kind) > tuple_(*after))
    if asset:
        query = query.where(accounts.c.asset == asset)
    if chain:
        query = query.where(accounts.c.asset.startswith(f"{chain}:", autoescape=True))
    if kind:
        query = query.where(accounts.c.kind == kind)
    rows = await session.execute(query.order_by(accounts.c.asset, accounts.c.kind).limit(limit))
    return [_account_of(row) for row in rows]


async def update_account(session: AsyncSession, account: Account) -> None:
    """Writes an account's status, freeze counts, version and times (the rest is immutable)."""
    result = await session.execute(
        update(accounts)
        .where(accounts.c.account_id == account.account_id, accounts.c.version == account.version - 1)
        .values(
            status=int(account.status),
            amount_freezes=account.amount_freezes,
            account_freezes=account.account_freezes,
            version=account.version,
            update_time_us=account.update_time_us,
            close_time_us=account.close_time_us,
        )
    )
    # Writers lock the row first, so the version they read is still the stored one.
    assert getattr(result, "rowcount", 0) == 1, account


async def insert_freeze(session: AsyncSession, freeze: Freeze) -> None:
    """Adds a freeze."""
    await session.execute(insert(freezes).values(**_values(freeze)))


async def update_freeze(session: AsyncSession, freeze: Freeze) -> None:
    """Writes a freeze's amount, hold, state and end fields."""
    result = await session.execute(
        update(freezes)
        .where(freezes.c.freeze_id == freeze.freeze_id, freezes.c.version == freeze.version - 1)
        .values(
            amount=freeze.amount,
            state=int(freeze.state),
            hold_entry_id=freeze.hold_entry_id,
            hold_version=freeze.hold_version,
            end_time_us=freeze.end_time_us,
            ended_by=freeze.ended_by,
            end_note=freeze.end_note,
            capture_entry_id=freeze.capture_entry_id,
            version=freeze.version,
        )
    )
    assert getattr(result, "rowcount", 0) == 1, freeze


async def freeze_by_id(session: AsyncSession, freeze_id: str) -> Freeze | None:
    """One freeze."""
    row = (await session.execute(select(freezes).where(freezes.c.freeze_id == freeze_id))).first()
    return _freeze_of(row) if row is not None else None


async def present_freeze_ids(session: AsyncSession, freeze_ids: Sequence[str]) -> set[str]:
    """Which of `freeze_ids` have a freeze record."""
    if not freeze_ids:
        return set()
    query = select(freezes.c.freeze_id).where(freezes.c.freeze_id.in_(sorted(set(freeze_ids))))
    return set((await session.execute(query)).scalars())


async def list_freezes(
    session: AsyncSession,
    *,
    account_id: str,
    after: tuple[int, str] | None,
    limit: int,
    filters: dict[str, Any],
) -> list[Freeze]:
    """Freezes newest first (by create time, then id), of one account or of all ('' for all)."""
    query = select(freezes)
    if account_id:
        query = query.where(freezes.c.account_id == account_id)
    for name, value in filters.items():
        query = query.where(freezes.c[name] == value)
    if after is not None:
        query = query.where(tuple_(freezes.c.create_time_us, freezes.c.freeze_id) < tuple_(*after))
    order = (freezes.c.create_time_us.desc(), freezes.c.freeze_id.desc())
    return [_freeze_of(row) for row in await session.execute(query.order_by(*order).limit(limit))]


async def expired_freeze_ids(session: AsyncSession, now_us: int, limit: int) -> list[tuple[str, str]]:
    """(account id, freeze id) of ACTIVE freezes whose expire time passed, oldest first."""
    query = (
        select(freezes.c.account_id, freezes.c.freeze_id)
        .where(freezes.c.state == int(FreezeState.ACTIVE), freezes.c.expire_time_us <= now_us)
        .order_by(freezes.c.expire_time_us)
        .limit(limit)
    )
    return [(row.account_id, row.freeze_id) for row in await session.execute(query)]


def encode_token(position: dict[str, Any]) -> str:
    """An opaque page token for a position in a listing."""
    return base64.urlsafe_b64encode(json.dumps(position, sort_keys=True).encode()).decode()


def decode_token(token: str) -> dict[str, Any] | None:
    """The position of a page token; None when it is not one of ours."""
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        return None
    return position if isinstance(position, dict) else None
