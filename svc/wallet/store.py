"""The wallet service's tables and queries (SQLAlchemy Core).

Schema (migrations/versions/wallet_0001_initial.py):
- wallet_wallets: one row per (user, chain) with its deposit address and derivation path. An
  address and a (root, index) pair are unique across every user and chain.
- wallet_address_counters: the next address index per custody deposit root, taken by an UPDATE
  that locks the row (PostgreSQL) or under the database lock (SQLite), so two concurrent
  creations never get the same index.
- wallet_transfers: internal transfers and their ledger entries.
- wallet_history: the unified history, one row per (entry, user), projected from events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.amount import Amount
from svc.kit.db import Database
from svc.wallet.domain import HistoryEntry, InternalTransfer, Kind, Status, TransferState, Wallet, WalletState

metadata = MetaData()

wallets = Table(
    "wallet_wallets",
    metadata,
    Column("wallet_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("chain", String(32), nullable=False),
    Column("address", String(42), nullable=False),
    Column("address_lower", String(42), nullable=False, unique=True),
    Column("derivation_path", String(128), nullable=False),
    Column("address_index", BigInteger, nullable=False),
    Column("custody_wallet_id", String(36), nullable=False),
    Column("xpub_fingerprint", String(8), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("watched", Boolean, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
)

address_counters = Table(
    "wallet_address_counters",
    metadata,
    Column("custody_wallet_id", String(36), primary_key=True),
    Column("next_index", BigInteger, nullable=False),
)

transfers = Table(
    "wallet_transfers",
    metadata,
    Column("transfer_id", String(36), primary_key=True),
    Column("request_id", String(128), nullable=False),
    Column("chain", String(32), nullable=False),
    Column("from_user_id", String(64), nullable=False),
    Column("to_user_id", String(64), nullable=False),
    Column("from_display", String(320), nullable=False),
    Column("to_display", String(320), nullable=False),
    Column("asset", String(49), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("memo", String(140), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("ledger_entry_id", String(128), nullable=False),
    Column("reversal_entry_id", String(128), nullable=False),
    Column("reversed_by", String(64), nullable=False),
    Column("reverse_reason", String(1000), nullable=False),
    Column("approval_id", String(64), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("reverse_time_us", BigInteger, nullable=True),
    Column("ledger_sequence", BigInteger, nullable=False),
    Column("reversal_sequence", BigInteger, nullable=False),
)

history = Table(
    "wallet_history",
    metadata,
    Column("entry_id", String(200), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("kind", SmallInteger, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("source_state", String(64), nullable=False),
    Column("source_id", String(128), nullable=False),
    Column("chain", String(32), nullable=False),
    Column("asset", String(49), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("fee_asset", String(49), nullable=False),
    Column("fee", Amount, nullable=True),
    Column("address", String(64), nullable=False),
    Column("counterparty_display", String(320), nullable=False),
    Column("tx_hash", String(66), nullable=False),
    Column("confirmations", Integer, nullable=False),
    Column("required_confirmations", Integer, nullable=False),
    Column("memo", String(140), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("complete_time_us", BigInteger, nullable=True),
    Column("source_version", BigInteger, nullable=False),
)


def _values(record: Wallet | InternalTransfer | HistoryEntry) -> dict[str, Any]:
    return {name: int(value) if isinstance(value, int) else value for name, value in asdict(record).items()}


def _wallet_of(row: Any) -> Wallet:
    values = dict(row._mapping)
    values["state"] = WalletState(values["state"])
    return Wallet(**values)


def _transfer_of(row: Any) -> InternalTransfer:
    values = dict(row._mapping)
    values["state"] = TransferState(values["state"])
    return InternalTransfer(**values)


def _entry_of(row: Any) -> HistoryEntry:
    values = dict(row._mapping)
    values["kind"] = Kind(values["kind"])
    values["status"] = Status(values["status"])
    return HistoryEntry(**values)


# Wallets


async def ensure_counter(database: Database, custody_wallet_id: str) -> None:
    """Creates the index counter of a deposit root if it has none (a concurrent creation wins)."""
    try:
        async with database.transaction() as session:
            query = select(address_counters.c.next_index).where(
                address_counters.c.custody_wallet_id == custody_wallet_id
            )
            if (await session.execute(query)).first() is None:
                await session.execute(
                    insert(address_counters).values(custody_wallet_id=custody_wallet_id, next_index=0)
                )
    except IntegrityError:
        pass


async def allocate_index(session: AsyncSession, custody_wallet_id: str) -> int:
    """Takes the next address index of a deposit root (its counter must exist)."""
    result = await session.execute(
        update(address_counters)
        .where(address_counters.c.custody_wallet_id == custody_wallet_id)
        .values(next_index=address_counters.c.next_index + 1)
        .returning(address_counters.c.next_index)
    )
    taken = int(result.scalar_one()) - 1
    assert taken >= 0, taken
    return taken


async def insert_wallet(session: AsyncSession, wallet: Wallet) -> None:
    """Adds a wallet; (user, chain), the address and (root, index) are unique: IntegrityError."""
    await session.execute(insert(wallets).values(**_values(wallet)))


async def wallet_by_owner(session: AsyncSession, user_id: str, chain: str) -> Wallet | None:
    """A user's wallet on a chain."""
    query = select(wallets).where(wallets.c.user_id == user_id, wallets.c.chain == chain)
    row = (await session.execute(query)).first()
    return _wallet_of(row) if row is not None else None


async def wallet_by_address(session: AsyncSession, chain: str, address: str) -> Wallet | None:
    """The wallet of a deposit address on a chain (any letter case)."""
    query = select(wallets).where(wallets.c.address_lower == address.lower(), wallets.c.chain == chain)
    row = (await session.execute(query)).first()
    return _wallet_of(row) if row is not None else None


async def list_wallets(session: AsyncSession, user_id: str, *, after: str | None, limit: int) -> list[Wallet]:
    """A user's wallets ordered by chain, after the cursor."""
    query = select(wallets).where(wallets.c.user_id == user_id)
    if after is not None:
        query = query.where(wallets.c.chain > after)
    rows = await session.execute(query.order_by(wallets.c.chain).limit(limit))
    return [_wallet_of(row) for row in rows]


async def unwatched_wallets(session: AsyncSession, limit: int) -> list[Wallet]:
    """Wallets whose watch registration has not completed, oldest first."""
    query = (
        select(wallets).where(wallets.c.watched.is_(False)).order_by(wallets.c.create_time_us).limit(limit)
    )
    return [_wallet_of(row) for row in await session.execute(query)]


async def mark_watched(session: AsyncSession, wallet: Wallet, now_us: int) -> Wallet | None:
    """Records the registration; None if another request recorded it first."""
    result = await session.execute(
        update(wallets)
        .where(wallets.c.wallet_id == wallet.wallet_id, wallets.c.watched.is_(False))
        .values(watched=True, version=wallets.c.version + 1, update_time_us=now_us)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    row = (await session.execute(select(wallets).where(wallets.c.wallet_id == wallet.wallet_id))).one()
    return _wallet_of(row)


# Internal transfers


async def insert_transfer(session: AsyncSession, transfer: InternalTransfer) -> None:
    """Adds a transfer (the id derives from the sender's request id: a repeat raises IntegrityError)."""
    await session.execute(insert(transfers).values(**_values(transfer)))


async def transfer_by_id(
    session: AsyncSession, transfer_id: str, *, lock: bool = False
) -> InternalTransfer | None:
    """One transfer, locked FOR UPDATE when asked (PostgreSQL; SQLite holds the database lock)."""
    query = select(transfers).where(transfers.c.transfer_id == transfer_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _transfer_of(row) if row is not None else None


async def update_transfer(session: AsyncSession, transfer: InternalTransfer) -> None:
    """Writes a transfer's reversal (the rest is immutable)."""
    result = await session.execute(
        update(transfers)
        .where(transfers.c.transfer_id == transfer.transfer_id, transfers.c.version == transfer.version - 1)
        .values(
            state=int(transfer.state),
            reversal_entry_id=transfer.reversal_entry_id,
            reversed_by=transfer.reversed_by,
            reverse_reason=transfer.reverse_reason,
            approval_id=transfer.approval_id,
            reverse_time_us=transfer.reverse_time_us,
            reversal_sequence=transfer.reversal_sequence,
            version=transfer.version,
        )
    )
    # Writers lock the row first, so the version they read is still the stored one.
    assert getattr(result, "rowcount", 0) == 1, transfer


async def list_transfers(
    session: AsyncSession,
    user_id: str,
    *,
    chain: str,
    incoming: bool,
    outgoing: bool,
    asset: str,
    create_after_us: int | None,
    create_before_us: int | None,
    after: tuple[int, str] | None,
    limit: int,
) -> list[InternalTransfer]:
    """Transfers the user sent or received, newest first, after the cursor, filtered."""
    sides = []
    if incoming:
        sides.append(transfers.c.to_user_id == user_id)
    if outgoing:
        sides.append(transfers.c.from_user_id == user_id)
    query = select(transfers).where(or_(*sides))
    if chain:
        query = query.where(transfers.c.chain == chain)
    if asset:
        query = query.where(transfers.c.asset == asset)
    if create_after_us is not None:
        query = query.where(transfers.c.create_time_us >= create_after_us)
    if create_before_us is not None:
        query = query.where(transfers.c.create_time_us < create_before_us)
    if after is not None:
        query = query.where(tuple_(transfers.c.create_time_us, transfers.c.transfer_id) < tuple_(*after))
    order = (transfers.c.create_time_us.desc(), transfers.c.transfer_id.desc())
    return [_transfer_of(row) for row in await session.execute(query.order_by(*order).limit(limit))]


async def last_sequence(session: AsyncSession, user_id: str) -> int:
    """The newest ledger sequence of the user's transfers and reversals (0 if none)."""
    query = select(func.max(transfers.c.ledger_sequence), func.max(transfers.c.reversal_sequence)).where(
        or_(transfers.c.from_user_id == user_id, transfers.c.to_user_id == user_id)
    )
    posted, reversed_ = (await session.execute(query)).one()
    return max(int(posted or 0), int(reversed_ or 0))


# History


async def history_entry(session: AsyncSession, entry_id: str, user_id: str) -> HistoryEntry | None:
    """One history entry of a user."""
    query = select(history).where(history.c.entry_id == entry_id, history.c.user_id == user_id)
    row = (await session.execute(query.with_for_update())).first()
    return _entry_of(row) if row is not None else None


async def put_history_entry(session: AsyncSession, entry: HistoryEntry, *, exists: bool) -> None:
    """Inserts or replaces a history entry."""
    values = _values(entry)
    if not exists:
        await session.execute(insert(history).values(**values))
        return
    await session.execute(
        update(history)
        .where(history.c.entry_id == entry.entry_id, history.c.user_id == entry.user_id)
        .values(**{name: value for name, value in values.items() if name not in ("entry_id", "user_id")})
    )


async def list_history(
    session: AsyncSession,
    user_id: str,
    *,
    chain: str,
    kinds: Sequence[int],
    statuses: Sequence[int],
    asset: str,
    create_after_us: int | None,
    create_before_us: int | None,
    after: tuple[int, str] | None,
    limit: int,
) -> list[HistoryEntry]:
    """A user's history, newest first, after the cursor, filtered."""
    query = select(history).where(history.c.user_id == user_id)
    if chain:
        query = query.where(history.c.chain == chain)
    if kinds:
        query = query.where(history.c.kind.in_(sorted(set(kinds))))
    if statuses:
        query = query.where(history.c.status.in_(sorted(set(statuses))))
    if asset:
        query = query.where(history.c.asset == asset)
    if create_after_us is not None:
        query = query.where(history.c.create_time_us >= create_after_us)
    if create_before_us is not None:
        query = query.where(history.c.create_time_us < create_before_us)
    if after is not None:
        query = query.where(tuple_(history.c.create_time_us, history.c.entry_id) < tuple_(*after))
    order = (history.c.create_time_us.desc(), history.c.entry_id.desc())
    return [_entry_of(row) for row in await session.execute(query.order_by(*order).limit(limit))]
