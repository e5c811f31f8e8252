"""The ledger's tables and queries (SQLAlchemy Core).

Schema (migrations/versions/ledger_0001_initial.py):
- ledger_state: one row holding the global `last_sequence` and `last_post_time_us`; every
  posting transaction locks it first, so sequences are assigned in commit order, also across
  replicas.
- ledger_accounts: the chart of accounts with the four balance columns (current balance).
- ledger_entries / ledger_postings: immutable entries; only a PENDING entry's resolution
  fields change, once.
- ledger_balance_history: one row per (account, entry that touched it) with the balance right
  after; balances as of a sequence or time and statements are read from it.
- ledger_entries.tx_hash (migrations/versions/ledger_0002_entry_lookups.py): the lower-case
  hash of the entry's chain transfer, so that entries are found by on-chain transaction.
Amounts are NUMERIC(78,0) on PostgreSQL and decimal TEXT on SQLite (whose NUMERIC affinity
would turn integers above 2^63 into floats); Python sees int on both.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from finmesh.ledger.v1 import ledger_resources_pb2 as resources
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.amount import Amount
from svc.kit.bulk import insert_rows, one_of
from svc.ledger import domain
from svc.ledger.domain import (
    Account,
    AccountStatus,
    AccountType,
    Balance,
    BalanceAfter,
    Constraint,
    Entry,
    Kind,
    PendingStatus,
    Posting,
    Side,
)

# Bounds one IN (...) list: SQLite allows 32,766 variables, asyncpg 32,767 parameters.
IN_LIST_ITEMS_MAX = 1_000
PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 1_000
STATE_ROW_ID = 1


metadata = MetaData()

state = Table(
    "ledger_state",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("last_sequence", BigInteger, nullable=False),
    Column("last_post_time_us", BigInteger, nullable=False),
)

accounts = Table(
    "ledger_accounts",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("code", String(256), nullable=False, unique=True),
    Column("type", SmallInteger, nullable=False),
    Column("asset", String(49), nullable=False),
    Column("balance_constraint", SmallInteger, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("debits_blocked", Boolean, nullable=False),
    Column("credits_blocked", Boolean, nullable=False),
    Column("display_name", String(128), nullable=False),
    Column("description", String(1024), nullable=False),
    Column("owner_user_id", String(64), nullable=False),
    Column("chain", String(32), nullable=False),
    Column("chain_address", String(42), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("close_time_us", BigInteger, nullable=True),
    Column("debits_posted", Amount, nullable=False),
    Column("credits_posted", Amount, nullable=False),
    Column("debits_pending", Amount, nullable=False),
    Column("credits_pending", Amount, nullable=False),
    Column("last_sequence", BigInteger, nullable=False),
)

entries = Table(
    "ledger_entries",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("entry_id", String(128), nullable=False, unique=True),
    Column("kind", SmallInteger, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("post_time_us", BigInteger, nullable=False),
    Column("pending_entry_id", String(128), nullable=False),
    Column("corrects_entry_id", String(128), nullable=False),
    Column("timeout_ms", BigInteger, nullable=True),
    Column("category", String(64), nullable=False),
    Column("description", String(256), nullable=False),
    Column("correlation_id", String(128), nullable=False),
    Column("chain_transfer", LargeBinary, nullable=False),
    Column("entry_metadata", JSON, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("pending_status", SmallInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=True),
    Column("resolved_by_entry_id", String(128), nullable=False),
    Column("resolve_time_us", BigInteger, nullable=True),
    Column("tx_hash", String(66), nullable=False),
)

postings = Table(
    "ledger_postings",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("position", SmallInteger, primary_key=True, autoincrement=False),
    Column("account_id", String(36), nullable=False),
    Column("account_code", String(256), nullable=False),
    Column("side", SmallInteger, nullable=False),
    Column("asset", String(49), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("memo", String(128), nullable=False),
)

history = Table(
    "ledger_balance_history",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("debits_posted", Amount, nullable=False),
    Column("credits_posted", Amount, nullable=False),
    Column("debits_pending", Amount, nullable=False),
    Column("credits_pending", Amount, nullable=False),
)

BALANCE_COLUMNS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")


@dataclass(frozen=True, slots=True)
class AccountRecord:
    """An account row: the domain account plus its descriptive fields."""

    account: Account
    display_name: str = ""
    description: str = ""
    owner_user_id: str = ""
    chain: str = ""
    chain_address: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    created_by: str = ""
    create_time_us: int = 0
    update_time_us: int = 0
    close_time_us: int | None = None
    last_sequence: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A point of the ledger's history: the last sequence included and its commit time."""

    sequence: int
    time_us: int


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), IN_LIST_ITEMS_MAX):
        yield items[start : start + IN_LIST_ITEMS_MAX]


def _balance_of(row: Any) -> Balance:
    return Balance(row.debits_posted, row.credits_posted, row.debits_pending, row.credits_pending)


def _account_of(row: Any) -> AccountRecord:
    account = Account(
        account_id=row.account_id,
        code=row.code,
        type=AccountType(row.type),
        asset=row.asset,
        constraint=Constraint(row.balance_constraint),
        status=AccountStatus(row.status),
        debits_blocked=row.debits_blocked,
        credits_blocked=row.credits_blocked,
        balance=_balance_of(row),
    )
    assert domain.constraint_violation(account.constraint, account.balance) is None, account
    return AccountRecord(
        account=account,
        display_name=row.display_name,
        description=row.description,
        owner_user_id=row.owner_user_id,
        chain=row.chain,
        chain_address=row.chain_address,
        labels=dict(row.labels),
        created_by=row.created_by,
        create_time_us=row.create_time_us,
        update_time_us=row.update_time_us,
        close_time_us=row.close_time_us,
        last_sequence=row.last_sequence,
    )


def account_values(record: AccountRecord) -> dict[str, Any]:
    """The row of an account record."""
    account = record.account
    return {
        "account_id": account.account_id,
        "code": account.code,
        "type": int(account.type),
        "asset": account.asset,
        "balance_constraint": int(account.constraint),
        "status": int(account.status),
        "debits_blocked": account.debits_blocked,
        "credits_blocked": account.credits_blocked,
        "display_name": record.display_name,
        "description": record.description,
        "owner_user_id": record.owner_user_id,
        "chain": record.chain,
        "chain_address": record.chain_address,
        "labels": record.labels,
        "created_by": record.created_by,
        "create_time_us": record.create_time_us,
        "update_time_us": record.update_time_us,
        "close_time_us": record.close_time_us,
        "last_sequence": record.last_sequence,
        **dict(zip(BALANCE_COLUMNS, account.balance.columns(), strict=True)),
    }


async def insert_account(session: AsyncSession, record: AccountRecord) -> None:
    """Adds an account to the chart of accounts (the code is unique: IntegrityError if taken)."""
    assert record.account.balance == domain.ZERO
    await session.execute(insert(accounts).values(**account_values(record)))


async def account_by_id(
    session: AsyncSession, account_id: str, *, lock: bool = False
) -> AccountRecord | None:
    """One account, locked FOR UPDATE when asked (PostgreSQL; SQLite holds the database lock)."""
    query = select(accounts).where(accounts.c.account_id == account_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _account_of(row) if row is not None else None


async def account_by_code(session: AsyncSession, code: str) -> AccountRecord | None:
    """One account by its code."""
    row = (await session.execute(select(accounts).where(accounts.c.code == code))).first()
    return _account_of(row) if row is not None else None


async def update_account(session: AsyncSession, account_id: str, values: dict[str, Any]) -> None:
    """Changes an account's descriptive fields, blocks or status (never its balance here)."""
    assert not set(values) & set(BALANCE_COLUMNS), values
    await session.execute(update(accounts).where(accounts.c.account_id == account_id).values(**values))


async def list_accounts(
    session: AsyncSession, *, after_code: str, limit: int, filters: dict[str, Any], code_prefix: str
) -> list[AccountRecord]:
    """Accounts ordered by code, after `after_code`, matching equality filters and a code prefix."""
    query = select(accounts).where(accounts.c.code > after_code)
    for name, value in filters.items():
        query = query.where(accounts.c[name] == value)
    if code_prefix:
        query = query.where(accounts.c.code.startswith(code_prefix, autoescape=True))
    rows = (await session.execute(query.order_by(accounts.c.code).limit(limit))).all()
    return [_account_of(row) for row in rows]


async def lock_accounts(
    session: AsyncSession, account_ids: Iterable[str], codes: Iterable[str]
) -> dict[str, AccountRecord]:
    """The accounts named by id or code, locked FOR UPDATE in account id order (no deadlocks)."""
    ids = set(account_ids)
    code_list = sorted(set(codes))
    for chunk in _chunks(code_list):
        query = select(accounts.c.account_id).where(one_of(session, accounts.c.code, chunk))
        found = await session.execute(query)
        ids.update(found.scalars())
    records: dict[str, AccountRecord] = {}
    for chunk in _chunks(sorted(ids)):
        query = select(accounts).where(one_of(session, accounts.c.account_id, chunk))
        query = query.order_by(accounts.c.account_id)
        for row in await session.execute(query.with_for_update()):
            records[row.account_id] = _account_of(row)
    return records


async def lock_state(session: AsyncSession) -> Snapshot:
    """Locks the ledger's sequence row: one posting transaction at a time assigns sequences."""
    query = select(state).where(state.c.id == STATE_ROW_ID).with_for_update()
    row = (await session.execute(query)).one()
    return Snapshot(row.last_sequence, row.last_post_time_us)


async def snapshot(session: AsyncSession) -> Snapshot:
    """The last committed sequence and its commit time."""
    row = (await session.execute(select(state).where(state.c.id == STATE_ROW_ID))).one()
    return Snapshot(row.last_sequence, row.last_post_time_us)


async def snapshot_at_time(session: AsyncSession, time_us: int) -> Snapshot:
    """The last entry committed at or before `time_us` (post times never decrease with sequence)."""
    query = select(entries.c.sequence, entries.c.post_time_us).where(entries.c.post_time_us <= time_us)
    row = (await session.execute(query.order_by(entries.c.sequence.desc()).limit(1))).first()
    return Snapshot(row.sequence, row.post_time_us) if row is not None else Snapshot(0, 0)


async def snapshot_at_sequence(session: AsyncSession, sequence: int) -> Snapshot:
    """The last entry with sequence <= `sequence`."""
    query = select(entries.c.sequence, entries.c.post_time_us).where(entries.c.sequence <= sequence)
    row = (await session.execute(query.order_by(entries.c.sequence.desc()).limit(1))).first()
    return Snapshot(row.sequence, row.post_time_us) if row is not None else Snapshot(0, 0)


def _entry_of(row: Any, entry_postings: Sequence[Posting]) -> Entry:
    return Entry(
        sequence=row.sequence,
        entry_id=row.entry_id,
        kind=Kind(row.kind),
        postings=tuple(entry_postings),
        fingerprint=row.fingerprint,
        post_time_us=row.post_time_us,
        pending_entry_id=row.pending_entry_id,
        corrects_entry_id=row.corrects_entry_id,
        timeout_ms=row.timeout_ms,
        category=row.category,
        description=row.description,
        correlation_id=row.correlation_id,
        chain_transfer=row.chain_transfer,
        metadata=tuple(sorted(row.entry_metadata.items())),
        created_by=row.created_by,
        pending_status=PendingStatus(row.pending_status),
        expire_time_us=row.expire_time_us,
        resolved_by_entry_id=row.resolved_by_entry_id,
        resolve_time_us=row.resolve_time_us,
    )


async def _entries_where(
    session: AsyncSession, condition: Any, *, descending: bool = False, limit: int | None = None
) -> list[Entry]:
    order = entries.c.sequence.desc() if descending else entries.c.sequence
    rows = (await session.execute(select(entries).where(condition).order_by(order).limit(limit))).all()
    if not rows:
        return []
    sequences = [row.sequence for row in rows]
    by_sequence: dict[int, list[Posting]] = {sequence: [] for sequence in sequences}
    for start in range(0, len(sequences), IN_LIST_ITEMS_MAX):
        chunk = sequences[start : start + IN_LIST_ITEMS_MAX]
        query = (
            select(postings)
            .where(one_of(session, postings.c.sequence, chunk))
            .order_by(postings.c.sequence, postings.c.position)
        )
        for posting in await session.execute(query):
            by_sequence[posting.sequence].append(
                Posting(
                    posting.account_id,
                    posting.account_code,
                    Side(posting.side),
                    posting.asset,
                    posting.amount,
                    posting.memo,
                )
            )
    return [_entry_of(row, by_sequence[row.sequence]) for row in rows]


async def entries_by_id(session: AsyncSession, entry_ids: Iterable[str]) -> dict[str, Entry]:
    """The entries with these ids, with their postings."""
    found: dict[str, Entry] = {}
    for chunk in _chunks(sorted(set(entry_ids))):
        for entry in await _entries_where(session, one_of(session, entries.c.entry_id, chunk)):
            found[entry.entry_id] = entry
    return found


async def entry_by_id(session: AsyncSession, entry_id: str) -> Entry | None:
    """One entry by id."""
    return (await entries_by_id(session, [entry_id])).get(entry_id)


async def expired_pending_ids(session: AsyncSession, now_us: int, limit: int) -> list[str]:
    """Ids of PENDING entries whose hold passed its expire time, oldest first."""
    query = (
        select(entries.c.entry_id)
        .where(entries.c.pending_status == int(PendingStatus.PENDING), entries.c.expire_time_us <= now_us)
        .order_by(entries.c.expire_time_us)
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def write_book(session: AsyncSession, book: domain.Book, previous: Snapshot) -> None:
    """Writes what `apply_batch` decided: new entries, resolved holds, balances and history."""
    if not book.created:
        return
    assert book.last_sequence == previous.sequence + len(book.created), (book.last_sequence, previous)
    await insert_rows(
        session,
        entries,
        [
            {
                "sequence": entry.sequence,
                "entry_id": entry.entry_id,
                "kind": int(entry.kind),
                "fingerprint": entry.fingerprint,
                "post_time_us": entry.post_time_us,
                "pending_entry_id": entry.pending_entry_id,
                "corrects_entry_id": entry.corrects_entry_id,
                "timeout_ms": entry.timeout_ms,
                "category": entry.category,
                "description": entry.description,
                "correlation_id": entry.correlation_id,
                "chain_transfer": entry.chain_transfer,
                "entry_metadata": dict(entry.metadata),
                "created_by": entry.created_by,
                "pending_status": int(entry.pending_status),
                "expire_time_us": entry.expire_time_us,
                "resolved_by_entry_id": "",
                "resolve_time_us": None,
                "tx_hash": tx_hash(entry.chain_transfer),
            }
            for entry in book.created
        ],
    )
    await insert_rows(
        session,
        postings,
        [
            {
                "sequence": entry.sequence,
                "position": position,
                "account_id": posting.account_id,
                "account_code": posting.account_code,
                "side": int(posting.side),
                "asset": posting.asset,
                "amount": posting.amount,
                "memo": posting.memo,
            }
            for entry in book.created
            for position, posting in enumerate(entry.postings)
        ],
    )
    await insert_rows(session, history, [_history_row(after) for after in book.history])
    connection = await session.connection()
    if book.resolved:
        await connection.execute(
            update(entries)
            .where(
                and_(
                    entries.c.entry_id == bindparam("b_entry_id"),
                    entries.c.pending_status == int(PendingStatus.PENDING),
                )
            )
            .values(
                pending_status=bindparam("b_status"),
                resolved_by_entry_id=bindparam("b_resolved_by"),
                resolve_time_us=bindparam("b_resolve_time"),
            ),
            [
                {
                    "b_entry_id": entry.entry_id,
                    "b_status": int(entry.pending_status),
                    "b_resolved_by": entry.resolved_by_entry_id,
                    "b_resolve_time": entry.resolve_time_us,
                }
                for entry in book.resolved.values()
            ],
        )
    last_by_account: dict[str, BalanceAfter] = {after.account.account_id: after for after in book.history}
    await connection.execute(
        update(accounts)
        .where(accounts.c.account_id == bindparam("b_account_id"))
        .values(
            last_sequence=bindparam("b_sequence"),
            **{column: bindparam(f"b_{column}") for column in BALANCE_COLUMNS},
        ),
        [
            {
                "b_account_id": account_id,
                "b_sequence": after.sequence,
                **{
                    f"b_{column}": value
                    for column, value in zip(BALANCE_COLUMNS, after.account.balance.columns(), strict=True)
                },
            }
            for account_id, after in last_by_account.items()
        ],
    )
    await connection.execute(
        update(state)
        .where(state.c.id == STATE_ROW_ID)
        .values(last_sequence=book.last_sequence, last_post_time_us=book.now_us)
    )


def tx_hash(chain_transfer: bytes) -> str:
    """The lower-case transaction hash of a serialized ChainTransferRef; empty when there is none."""
    return resources.ChainTransferRef.FromString(chain_transfer).tx_hash.lower() if chain_transfer else ""


def _history_row(after: BalanceAfter) -> dict[str, Any]:
    balance = after.account.balance
    return {
        "account_id": after.account.account_id,
        "sequence": after.sequence,
        "debits_posted": balance.debits_posted,
        "credits_posted": balance.credits_posted,
        "debits_pending": balance.debits_pending,
        "credits_pending": balance.credits_pending,
    }


async def balances_at(
    session: AsyncSession, account_ids: Sequence[str], sequence: int
) -> dict[str, tuple[Balance, int]]:
    """Each account's balance after the last entry with sequence <= `sequence` that touched it,
    with that entry's sequence (zeros and 0 when none did)."""
    found: dict[str, tuple[Balance, int]] = {}
    for chunk in _chunks(sorted(set(account_ids))):
        latest = (
            select(history.c.account_id, func.max(history.c.sequence).label("sequence"))
            .where(history.c.account_id.in_(chunk), history.c.sequence <= sequence)
            .group_by(history.c.account_id)
            .subquery()
        )
        query = select(history).join(
            latest, and_(history.c.account_id == latest.c.account_id, history.c.sequence == latest.c.sequence)
        )
        for row in await session.execute(query):
            found[row.account_id] = (_balance_of(row), row.sequence)
    return found


def _balance_at(row: Any) -> Balance:
    columns = [getattr(row, f"at_{column}") for column in BALANCE_COLUMNS]
    return Balance(*columns) if columns[0] is not None else domain.ZERO


def _accounts_at(sequence: int) -> Any:
    """Accounts with their balances after the last entry with sequence <= `sequence` (`at_*` columns).

    One statement: each account is outer-joined to its newest history row at that point, found
    through the (account_id, sequence) primary key.
    """
    at = history.alias("at")
    newest = (
        select(func.max(history.c.sequence))
        .where(history.c.account_id == accounts.c.account_id, history.c.sequence <= sequence)
        .scalar_subquery()
    )
    joined = accounts.outerjoin(at, and_(at.c.account_id == accounts.c.account_id, at.c.sequence == newest))
    return select(accounts, *(at.c[column].label(f"at_{column}") for column in BALANCE_COLUMNS)).select_from(
        joined
    )


async def accounts_at(
    session: AsyncSession, account_ids: Sequence[str], sequence: int
) -> dict[str, tuple[AccountRecord, Balance]]:
    """The accounts with these ids and their balances as of `sequence`, in one query."""
    assert len(account_ids) <= IN_LIST_ITEMS_MAX, len(account_ids)
    query = _accounts_at(sequence).where(accounts.c.account_id.in_(sorted(set(account_ids))))
    return {row.account_id: (_account_of(row), _balance_at(row)) for row in await session.execute(query)}


async def asset_accounts_at(
    session: AsyncSession, asset: str, sequence: int, *, code_prefix: str, after_code: str, limit: int | None
) -> list[tuple[AccountRecord, Balance]]:
    """Accounts of one asset ordered by code (after `after_code`, under a code prefix), with their
    balances as of `sequence`; at most `limit` of them when given."""
    query = _accounts_at(sequence).where(accounts.c.asset == asset, accounts.c.code > after_code)
    if code_prefix:
        query = query.where(accounts.c.code.startswith(code_prefix, autoescape=True))
    rows = await session.execute(query.order_by(accounts.c.code).limit(limit))
    return [(_account_of(row), _balance_at(row)) for row in rows]


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """The filters of ListJournalEntries; empty values do not filter. Sequence and time ranges are
    half-open; an end of 0 (sequence) or None (time) is no bound."""

    kinds: tuple[Kind, ...] = ()
    category: str = ""
    correlation_id: str = ""
    asset: str = ""
    tx_hash: str = ""
    pending_status: PendingStatus = PendingStatus.NONE
    pending_entry_id: str = ""
    corrects_entry_id: str = ""
    start_time_us: int | None = None
    end_time_us: int | None = None
    start_sequence: int = 0
    end_sequence: int = 0

    def condition(self) -> Any:
        """The WHERE clause on ledger_entries."""
        terms: list[Any] = [entries.c.sequence >= self.start_sequence]
        if self.kinds:
            terms.append(entries.c.kind.in_([int(kind) for kind in self.kinds]))
        if self.category:
            terms.append(
                or_(
                    entries.c.category == self.category,
                    entries.c.category.startswith(self.category + ".", autoescape=True),
                )
            )
        for name in ("correlation_id", "pending_entry_id", "corrects_entry_id"):
            if getattr(self, name):
                terms.append(entries.c[name] == getattr(self, name))
        if self.tx_hash:
            terms.append(entries.c.tx_hash == self.tx_hash.lower())
        if self.asset:
            terms.append(
                exists().where(postings.c.sequence == entries.c.sequence, postings.c.asset == self.asset)
            )
        if self.pending_status is not PendingStatus.NONE:
            terms.append(entries.c.pending_status == int(self.pending_status))
        if self.start_time_us is not None:
            terms.append(entries.c.post_time_us >= self.start_time_us)
        if self.end_time_us is not None:
            terms.append(entries.c.post_time_us < self.end_time_us)
        if self.end_sequence:
            terms.append(entries.c.sequence < self.end_sequence)
        return and_(*terms)


async def list_entries(
    session: AsyncSession, where: EntryFilter, *, after_sequence: int, descending: bool, limit: int
) -> list[Entry]:
    """Entries matching `where` in sequence order, strictly after the cursor when one is given."""
    condition = where.condition()
    if after_sequence:
        cursor = entries.c.sequence < after_sequence if descending else entries.c.sequence > after_sequence
        condition = and_(condition, cursor)
    return await _entries_where(session, condition, descending=descending, limit=limit)


async def all_accounts(session: AsyncSession, assets: Sequence[str]) -> list[AccountRecord]:
    """Every account, of the given assets when any are given, ordered by asset and code."""
    query = select(accounts).order_by(accounts.c.asset, accounts.c.code)
    if assets:
        query = query.where(accounts.c.asset.in_(list(assets)))
    return [_account_of(row) for row in await session.execute(query)]


@dataclass(frozen=True, slots=True)
class StatementRow:
    """One entry that touched an account and the account's balance right after it."""

    entry: Entry
    balance_after: Balance


async def statement(
    session: AsyncSession,
    account_id: str,
    *,
    after_sequence: int,
    descending: bool,
    start_sequence: int,
    end_sequence: int,
    start_time_us: int | None,
    end_time_us: int | None,
    limit: int,
) -> list[StatementRow]:
    """The entries that touched an account, in sequence order, after the cursor, with balances."""
    query = (
        select(history, entries.c.entry_id)
        .join(entries, entries.c.sequence == history.c.sequence)
        .where(history.c.account_id == account_id, history.c.sequence >= start_sequence)
    )
    if end_sequence:
        query = query.where(history.c.sequence < end_sequence)
    if start_time_us is not None:
        query = query.where(entries.c.post_time_us >= start_time_us)
    if end_time_us is not None:
        query = query.where(entries.c.post_time_us < end_time_us)
    if after_sequence:
        cursor = history.c.sequence < after_sequence if descending else history.c.sequence > after_sequence
        query = query.where(cursor)
    order = history.c.sequence.desc() if descending else history.c.sequence
    rows = (await session.execute(query.order_by(order).limit(limit))).all()
    found = await entries_by_id(session, [row.entry_id for row in rows])
    return [StatementRow(found[row.entry_id], _balance_of(row)) for row in rows]


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


CORRECTIONS_LISTED_MAX = 16


async def corrections_of(session: AsyncSession, entry_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Ids of the first CORRECTION entries that reference each of `entry_ids` (only those that have any)."""
    found: dict[str, list[str]] = {}
    for chunk in _chunks(sorted(set(entry_ids))):
        query = (
            select(entries.c.corrects_entry_id, entries.c.entry_id)
            .where(entries.c.corrects_entry_id.in_(chunk))
            .order_by(entries.c.sequence)
        )
        for row in await session.execute(query):
            found.setdefault(row.corrects_entry_id, []).append(row.entry_id)
    return {entry_id: tuple(ids[:CORRECTIONS_LISTED_MAX]) for entry_id, ids in found.items()}
