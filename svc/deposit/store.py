"""The deposit service's tables and queries (SQLAlchemy Core).

Schema (migrations/versions/deposit_0001_initial.py):
- deposit_addresses: every deposit address the wallet service allocated, with its owner.
- deposit_deposits: every transfer to one of them, with its state and its ledger entries.
- deposit_configs: deposit settings per asset (absent: the defaults of domain.Config).
- deposit_sweeps, deposit_sweep_items: sweep batches and their addresses;
  deposit_sweep_transactions (deposit_0002): the items' gas top-ups and sweeps as built, approved
  and signed.
Amounts are NUMERIC(78,0) on PostgreSQL and decimal TEXT on SQLite; Python sees int on both.
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
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from svc.deposit.domain import (
    Config,
    Deposit,
    ItemState,
    Kind,
    Resolution,
    State,
    Sweep,
    SweepItem,
    SweepState,
    SweepTransaction,
    Trigger,
    TxPurpose,
    TxStatus,
)
from svc.kit.amount import Amount

metadata = MetaData()

addresses = Table(
    "deposit_addresses",
    metadata,
    Column("chain", String(32), primary_key=True),
    Column("address", String(42), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("wallet_id", String(36), nullable=False),
    Column("derivation_path", String(64), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
)

deposits = Table(
    "deposit_deposits",
    metadata,
    Column("deposit_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("wallet_id", String(36), nullable=False),
    Column("chain", String(32), nullable=False),
    Column("tx_hash", String(66), nullable=False),
    Column("log_index", BigInteger, nullable=False),
    Column("block_number", BigInteger, nullable=False),
    Column("block_hash", String(66), nullable=False),
    Column("block_time_us", BigInteger, nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("from_address", String(42), nullable=False),
    Column("to_address", String(42), nullable=False),
    Column("asset", String(49), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("token_contract", String(42), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("included", Boolean, nullable=False),
    Column("chain_confirmed", Boolean, nullable=False),
    Column("required_confirmations", Integer, nullable=False),
    Column("minimum_amount", Amount, nullable=True),
    Column("account_id", String(36), nullable=False),
    Column("ledger_account_id", String(36), nullable=False),
    Column("pending_entry_id", String(120), nullable=False),
    Column("credit_entry_id", String(120), nullable=False),
    Column("reversal_entry_id", String(128), nullable=False),
    Column("sweep_id", String(36), nullable=False),
    Column("reorg_count", Integer, nullable=False),
    Column("freeze_id", String(36), nullable=False),
    Column("freeze_entry_id", String(128), nullable=False),
    Column("freeze_time_us", BigInteger, nullable=True),
    Column("fork_block_number", BigInteger, nullable=False),
    Column("frozen_amount", Amount, nullable=False),
    Column("resolution", SmallInteger, nullable=False),
    Column("resolved_by", String(128), nullable=False),
    Column("approval_id", String(64), nullable=False),
    Column("resolve_note", String(1000), nullable=False),
    Column("resolve_time_us", BigInteger, nullable=True),
    Column("seen_time_us", BigInteger, nullable=False),
    Column("credit_time_us", BigInteger, nullable=True),
    Column("update_time_us", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
)

configs = Table(
    "deposit_configs",
    metadata,
    Column("chain", String(32), primary_key=True),
    Column("symbol", String(16), primary_key=True),
    Column("minimum_amount", Amount, nullable=False),
    Column("confirmation_depth", Integer, nullable=False),
    Column("sweep_threshold", Amount, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("update_user_id", String(128), nullable=False),
    Column("version", BigInteger, nullable=False),
)

sweeps = Table(
    "deposit_sweeps",
    metadata,
    Column("sweep_id", String(36), primary_key=True),
    Column("chain", String(32), nullable=False),
    Column("asset", String(49), nullable=False),
    Column("native_asset", String(49), nullable=False),
    Column("destination_wallet_id", String(36), nullable=False),
    Column("destination_address", String(42), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("trigger", SmallInteger, nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("total_amount", Amount, nullable=False),
    Column("total_gas_top_up", Amount, nullable=False),
    Column("total_network_fee", Amount, nullable=False),
    Column("ledger_entry_ids", Text, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("complete_time_us", BigInteger, nullable=True),
    Column("version", BigInteger, nullable=False),
)

sweep_items = Table(
    "deposit_sweep_items",
    metadata,
    Column("sweep_id", String(36), primary_key=True),
    Column("address", String(42), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("derivation_path", String(64), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("gas_top_up_tx_hash", String(66), nullable=False),
    Column("gas_top_up", Amount, nullable=False),
    Column("sweep_tx_hash", String(66), nullable=False),
    Column("network_fee", Amount, nullable=False),
    Column("message", String(500), nullable=False),
)

sweep_transactions = Table(
    "deposit_sweep_transactions",
    metadata,
    Column("sweep_id", String(36), primary_key=True),
    Column("address", String(42), primary_key=True),
    Column("purpose", SmallInteger, primary_key=True),
    Column("chain", String(32), nullable=False),
    Column("unsigned", LargeBinary, nullable=False),
    Column("approval", LargeBinary, nullable=False),
    Column("reservation_id", String(36), nullable=False),
    Column("value", Amount, nullable=False),
    Column("signed_transaction", Text, nullable=False),
    Column("tx_hash", String(66), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("network_fee", Amount, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
)


def _deposit_of(row: Any) -> Deposit:
    values = dict(row._mapping)
    values["kind"] = Kind(values["kind"])
    values["state"] = State(values["state"])
    values["resolution"] = Resolution(values["resolution"])
    values["included"] = bool(values["included"])
    values["chain_confirmed"] = bool(values["chain_confirmed"])
    return Deposit(**values)


def _values(record: Deposit) -> dict[str, Any]:
    return {name: int(value) if isinstance(value, int) and not isinstance(value, bool) else value
            for name, value in asdict(record).items()}  # fmt: skip


# Addresses


async def address_owner(session: AsyncSession, chain: str, address: str) -> tuple[str, str] | None:
    """(user id, wallet id) of a deposit address, None if it is not one the service knows."""
    row = (
        await session.execute(
            select(addresses.c.user_id, addresses.c.wallet_id).where(
                addresses.c.chain == chain, addresses.c.address == address
            )
        )
    ).first()
    return (row.user_id, row.wallet_id) if row is not None else None


async def add_address(
    session: AsyncSession, chain: str, address: str, user_id: str, wallet_id: str, path: str, now_us: int
) -> None:
    """Records a deposit address unless it is recorded already (an address is never reassigned)."""
    if await address_owner(session, chain, address) is not None:
        return
    await session.execute(
        insert(addresses).values(
            chain=chain, address=address, user_id=user_id, wallet_id=wallet_id,
            derivation_path=path, create_time_us=now_us,
        )
    )  # fmt: skip


async def derivation_paths(session: AsyncSession, chain: str, found: Sequence[str]) -> dict[str, str]:
    """Derivation paths of these deposit addresses of a chain."""
    query = select(addresses.c.address, addresses.c.derivation_path).where(
        addresses.c.chain == chain, addresses.c.address.in_(sorted(set(found)))
    )
    return {row.address: row.derivation_path for row in await session.execute(query)}


# Deposits


async def insert_deposit(session: AsyncSession, deposit: Deposit) -> None:
    """Adds a deposit; its id is derived from the transfer key, so a concurrent insert of the same
    transfer raises IntegrityError."""
    await session.execute(insert(deposits).values(**_values(deposit)))


async def update_deposit(session: AsyncSession, deposit: Deposit) -> None:
    """Writes a deposit whose version was increased by one; refuses a lost update."""
    assert deposit.version > 1, deposit
    result = await session.execute(
        update(deposits)
        .where(deposits.c.deposit_id == deposit.deposit_id, deposits.c.version == deposit.version - 1)
        .values(**_values(deposit))
    )
    assert result.rowcount == 1, ("concurrent update of deposit", deposit.deposit_id)  # type: ignore[attr-defined]


async def deposit_by_id(session: AsyncSession, deposit_id: str, *, lock: bool = False) -> Deposit | None:
    """One deposit, locked FOR UPDATE when asked (PostgreSQL; SQLite holds the database lock)."""
    query = select(deposits).where(deposits.c.deposit_id == deposit_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _deposit_of(row) if row is not None else None


async def deposits_of_transaction(
    session: AsyncSession, chain: str, tx_hash: str, *, lock: bool = False
) -> list[Deposit]:
    """Every deposit recorded for a transaction, oldest first."""
    query = (
        select(deposits)
        .where(deposits.c.chain == chain, deposits.c.tx_hash == tx_hash)
        .order_by(deposits.c.seen_time_us, deposits.c.deposit_id)
    )
    rows = await session.execute(query.with_for_update() if lock else query)
    return [_deposit_of(row) for row in rows]


async def awaiting_credit(session: AsyncSession, limit: int) -> list[Deposit]:
    """CONFIRMING deposits on the canonical chain, oldest first: the credit round's work."""
    query = (
        select(deposits)
        .where(deposits.c.state == int(State.CONFIRMING), deposits.c.included.is_(True))
        .order_by(deposits.c.seen_time_us, deposits.c.deposit_id)
        .limit(limit)
    )
    return [_deposit_of(row) for row in await session.execute(query)]


async def awaiting_release(session: AsyncSession, limit: int) -> list[Deposit]:
    """FROZEN deposits whose transfer is back on the canonical chain, oldest first."""
    query = (
        select(deposits)
        .where(deposits.c.state == int(State.FROZEN), deposits.c.included.is_(True))
        .order_by(deposits.c.seen_time_us, deposits.c.deposit_id)
        .limit(limit)
    )
    return [_deposit_of(row) for row in await session.execute(query)]


async def list_deposits(
    session: AsyncSession,
    *,
    after: tuple[int, str] | None,
    limit: int,
    filters: dict[str, Any],
    states: Sequence[State],
    seen_after_us: int | None,
    seen_before_us: int | None,
) -> list[Deposit]:
    """Deposits newest first (by first-seen time, then id), filtered by equal columns and states."""
    query = select(deposits)
    for name, value in filters.items():
        if value not in ("", None):
            query = query.where(deposits.c[name] == value)
    if states:
        query = query.where(deposits.c.state.in_([int(state) for state in states]))
    if seen_after_us is not None:
        query = query.where(deposits.c.seen_time_us >= seen_after_us)
    if seen_before_us is not None:
        query = query.where(deposits.c.seen_time_us < seen_before_us)
    if after is not None:
        query = query.where(tuple_(deposits.c.seen_time_us, deposits.c.deposit_id) < tuple_(*after))
    order = (deposits.c.seen_time_us.desc(), deposits.c.deposit_id.desc())
    return [_deposit_of(row) for row in await session.execute(query.order_by(*order).limit(limit))]


# Configs


def _config_of(row: Any) -> Config:
    return Config(**dict(row._mapping))


async def config_of(session: AsyncSession, chain: str, symbol: str, *, lock: bool = False) -> Config | None:
    """The settings of one asset, None when it has none."""
    query = select(configs).where(configs.c.chain == chain, configs.c.symbol == symbol)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _config_of(row) if row is not None else None


async def put_config(session: AsyncSession, config: Config) -> None:
    """Inserts (version 1) or updates (from version - 1) an asset's settings."""
    values = asdict(config)
    if config.version == 1:
        await session.execute(insert(configs).values(**values))
        return
    result = await session.execute(
        update(configs)
        .where(
            configs.c.chain == config.chain,
            configs.c.symbol == config.symbol,
            configs.c.version == config.version - 1,
        )
        .values(**values)
    )
    assert result.rowcount == 1, ("concurrent update of config", config.asset)  # type: ignore[attr-defined]


async def list_configs(
    session: AsyncSession, chain: str, after: tuple[str, str] | None, limit: int
) -> list[Config]:
    """Settings ordered by asset id (chain, then symbol)."""
    query = select(configs)
    if chain:
        query = query.where(configs.c.chain == chain)
    if after is not None:
        query = query.where(tuple_(configs.c.chain, configs.c.symbol) > tuple_(*after))
    query = query.order_by(configs.c.chain, configs.c.symbol).limit(limit)
    return [_config_of(row) for row in await session.execute(query)]


async def credited_addresses(session: AsyncSession, chain: str, asset: str) -> list[str]:
    """Deposit addresses with a credited deposit of the asset, the one credited first first."""
    first = func.min(deposits.c.credit_time_us)
    query = (
        select(deposits.c.to_address, first.label("first_credit_us"))
        .where(
            deposits.c.chain == chain,
            deposits.c.asset == asset,
            deposits.c.state.in_([int(State.CREDITED), int(State.FROZEN)]),
        )
        .group_by(deposits.c.to_address)
        .order_by(first, deposits.c.to_address)
    )
    return [row.to_address for row in await session.execute(query)]


async def mark_swept(
    session: AsyncSession, chain: str, asset: str, address: str, sweep_id: str, now_us: int
) -> None:
    """Credited deposits of an address not yet swept name the sweep that moved their funds."""
    await session.execute(
        update(deposits)
        .where(
            deposits.c.chain == chain,
            deposits.c.asset == asset,
            deposits.c.to_address == address,
            deposits.c.state == int(State.CREDITED),
            deposits.c.sweep_id == "",
        )
        .values(sweep_id=sweep_id, update_time_us=now_us, version=deposits.c.version + 1)
    )


# Sweeps


def _sweep_of(row: Any) -> Sweep:
    values = dict(row._mapping)
    values["state"] = SweepState(values["state"])
    values["trigger"] = Trigger(values["trigger"])
    text = values.pop("ledger_entry_ids")
    values["ledger_entry_ids"] = tuple(text.split(",")) if text else ()
    return Sweep(**values)


def _sweep_values(sweep: Sweep) -> dict[str, Any]:
    values = asdict(sweep)
    values["state"] = int(sweep.state)
    values["trigger"] = int(sweep.trigger)
    values["ledger_entry_ids"] = ",".join(sweep.ledger_entry_ids)
    return values


def _item_of(row: Any) -> SweepItem:
    values = dict(row._mapping)
    values["state"] = ItemState(values["state"])
    return SweepItem(**values)


def _item_values(item: SweepItem) -> dict[str, Any]:
    values = asdict(item)
    values["state"] = int(item.state)
    return values


async def insert_sweep(session: AsyncSession, sweep: Sweep, items: Sequence[SweepItem]) -> None:
    """A new sweep with its items."""
    await session.execute(insert(sweeps).values(**_sweep_values(sweep)))
    for item in items:
        await session.execute(insert(sweep_items).values(**_item_values(item)))


async def update_sweep(session: AsyncSession, sweep: Sweep) -> None:
    """Writes a sweep whose version was increased by one; refuses a lost update."""
    result = await session.execute(
        update(sweeps)
        .where(sweeps.c.sweep_id == sweep.sweep_id, sweeps.c.version == sweep.version - 1)
        .values(**_sweep_values(sweep))
    )
    assert result.rowcount == 1, ("concurrent update of sweep", sweep.sweep_id)  # type: ignore[attr-defined]


async def sweep_by_id(session: AsyncSession, sweep_id: str, *, lock: bool = False) -> Sweep | None:
    query = select(sweeps).where(sweeps.c.sweep_id == sweep_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _sweep_of(row) if row is not None else None


async def running_sweep(session: AsyncSession, chain: str, asset: str) -> Sweep | None:
    """The sweep of the asset not yet finished, if any (at most one runs per chain and asset)."""
    query = select(sweeps).where(
        sweeps.c.chain == chain,
        sweeps.c.asset == asset,
        sweeps.c.state.in_([int(SweepState.CREATED), int(SweepState.RUNNING)]),
    )
    row = (await session.execute(query)).first()
    return _sweep_of(row) if row is not None else None


async def unfinished_sweeps(session: AsyncSession, limit: int) -> list[Sweep]:
    """CREATED and RUNNING sweeps, oldest first: the executor's work, also after a restart."""
    query = (
        select(sweeps)
        .where(sweeps.c.state.in_([int(SweepState.CREATED), int(SweepState.RUNNING)]))
        .order_by(sweeps.c.create_time_us, sweeps.c.sweep_id)
        .limit(limit)
    )
    return [_sweep_of(row) for row in await session.execute(query)]


async def list_sweeps(
    session: AsyncSession,
    *,
    after: tuple[int, str] | None,
    limit: int,
    chain: str,
    asset: str,
    state: int,
    create_after_us: int | None,
    create_before_us: int | None,
) -> list[Sweep]:
    """Sweeps newest first (by creation time, then id)."""
    query = select(sweeps)
    if chain:
        query = query.where(sweeps.c.chain == chain)
    if asset:
        query = query.where(sweeps.c.asset == asset)
    if state:
        query = query.where(sweeps.c.state == state)
    if create_after_us is not None:
        query = query.where(sweeps.c.create_time_us >= create_after_us)
    if create_before_us is not None:
        query = query.where(sweeps.c.create_time_us < create_before_us)
    if after is not None:
        query = query.where(tuple_(sweeps.c.create_time_us, sweeps.c.sweep_id) < tuple_(*after))
    order = (sweeps.c.create_time_us.desc(), sweeps.c.sweep_id.desc())
    return [_sweep_of(row) for row in await session.execute(query.order_by(*order).limit(limit))]


async def items_of(session: AsyncSession, sweep_id: str) -> list[SweepItem]:
    query = select(sweep_items).where(sweep_items.c.sweep_id == sweep_id).order_by(sweep_items.c.position)
    return [_item_of(row) for row in await session.execute(query)]


async def item_of(session: AsyncSession, sweep_id: str, address: str) -> SweepItem:
    query = select(sweep_items).where(sweep_items.c.sweep_id == sweep_id, sweep_items.c.address == address)
    row = (await session.execute(query)).first()
    assert row is not None, (sweep_id, address)
    return _item_of(row)


async def update_item(session: AsyncSession, item: SweepItem) -> None:
    await session.execute(
        update(sweep_items)
        .where(sweep_items.c.sweep_id == item.sweep_id, sweep_items.c.address == item.address)
        .values(**_item_values(item))
    )


# Sweep transactions


def _transaction_of(row: Any) -> SweepTransaction:
    values = dict(row._mapping)
    values["purpose"] = TxPurpose(values["purpose"])
    values["status"] = TxStatus(values["status"])
    return SweepTransaction(**values)


def _transaction_values(transaction: SweepTransaction) -> dict[str, Any]:
    values = asdict(transaction)
    values["purpose"] = int(transaction.purpose)
    values["status"] = int(transaction.status)
    return values


async def insert_transaction(session: AsyncSession, transaction: SweepTransaction) -> None:
    await session.execute(insert(sweep_transactions).values(**_transaction_values(transaction)))


async def update_transaction(session: AsyncSession, transaction: SweepTransaction) -> None:
    await session.execute(
        update(sweep_transactions)
        .where(
            sweep_transactions.c.sweep_id == transaction.sweep_id,
            sweep_transactions.c.address == transaction.address,
            sweep_transactions.c.purpose == int(transaction.purpose),
        )
        .values(**_transaction_values(transaction))
    )


async def transaction_of(
    session: AsyncSession, sweep_id: str, address: str, purpose: TxPurpose
) -> SweepTransaction | None:
    query = select(sweep_transactions).where(
        sweep_transactions.c.sweep_id == sweep_id,
        sweep_transactions.c.address == address,
        sweep_transactions.c.purpose == int(purpose),
    )
    row = (await session.execute(query)).first()
    return _transaction_of(row) if row is not None else None


async def is_gas_top_up(session: AsyncSession, chain: str, tx_hash: str) -> bool:
    """Whether a transaction is one of our gas top-ups (native coin the platform sent itself to a
    deposit address: no deposit). Its hash is stored before it is broadcast, so before the chain
    gateway can report it."""
    query = select(sweep_transactions.c.sweep_id).where(
        sweep_transactions.c.chain == chain,
        sweep_transactions.c.tx_hash == tx_hash,
        sweep_transactions.c.purpose == int(TxPurpose.TOP_UP),
    )
    return (await session.execute(query.limit(1))).first() is not None
