"""The chain gateway's tables (created by migrations/versions) and its queries."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    and_,
    case,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from svc.chain_gateway.domain import BlockStatus, ReservationState, TransferStatus, TxStatus
from svc.kit.amount import Amount
from svc.kit.tables import AutoIncrementId

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 1000

metadata = MetaData()

senders = Table(
    "cg_senders",
    metadata,
    Column("chain", String(32), primary_key=True),
    Column("address", String(42), primary_key=True),
    Column("next_nonce", BigInteger, nullable=False),
    Column("sync_time_us", BigInteger, nullable=False),
)

reservations = Table(
    "cg_reservations",
    metadata,
    Column("reservation_id", String(36), primary_key=True),
    Column("chain", String(32), nullable=False),
    Column("address", String(42), nullable=False),
    Column("nonce", BigInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("reference", String(128), nullable=False),
    Column("transaction", JSON, nullable=False),
    Column("replaces_tx_hash", String(66), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
    Column("end_time_us", BigInteger, nullable=True),
    Column("end_reason", String(500), nullable=False),
)

transactions = Table(
    "cg_transactions",
    metadata,
    Column("chain", String(32), primary_key=True),
    Column("tx_hash", String(66), primary_key=True),
    Column("from_address", String(42), nullable=False),
    Column("to_address", String(42), nullable=False),
    Column("nonce", BigInteger, nullable=False),
    Column("type", SmallInteger, nullable=False),
    Column("value", Amount, nullable=False),
    Column("data", Text, nullable=False),
    Column("gas_limit", BigInteger, nullable=False),
    Column("gas_price", Amount, nullable=True),
    Column("max_fee_per_gas", Amount, nullable=True),
    Column("max_priority_fee_per_gas", Amount, nullable=True),
    Column("intent", JSON, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("confirmations", Integer, nullable=False),
    Column("block_number", BigInteger, nullable=False),
    Column("block_hash", String(66), nullable=False),
    Column("gas_used", BigInteger, nullable=False),
    Column("effective_gas_price", Amount, nullable=True),
    Column("replaces_tx_hash", String(66), nullable=False),
    Column("replaced_by_tx_hash", String(66), nullable=False),
    Column("reference", String(128), nullable=False),
    Column("failure_message", String(500), nullable=False),
    Column("raw", Text, nullable=False),
    Column("reservation_id", String(36), nullable=False),
    Column("broadcast_time_us", BigInteger, nullable=False),
    Column("last_broadcast_time_us", BigInteger, nullable=False),
    Column("block_time_us", BigInteger, nullable=True),
    Column("final_time_us", BigInteger, nullable=True),
)

watched = Table(
    "cg_watched_addresses",
    metadata,
    Column("chain", String(32), primary_key=True),
    Column("address", String(42), primary_key=True),
    Column("owner", String(32), nullable=False),
    Column("reference", String(128), nullable=False),
    Column("start_block", BigInteger, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    # Earlier blocks still to rescan for this address: rescan_next..rescan_end; NULL when none.
    Column("rescan_next", BigInteger, nullable=True),
    Column("rescan_end", BigInteger, nullable=True),
)

blocks = Table(
    "cg_blocks",
    metadata,
    Column("chain", String(32), primary_key=True),
    Column("hash", String(66), primary_key=True),
    Column("number", BigInteger, nullable=False),
    Column("parent_hash", String(66), nullable=False),
    Column("block_time_us", BigInteger, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("transfer_count", Integer, nullable=False),
    Column("process_time_us", BigInteger, nullable=False),
    Column("orphan_time_us", BigInteger, nullable=True),
    # The follower lease holder that applied the block (forensics across replicas).
    Column("processor", String(128), nullable=False, server_default=""),
)

transfers = Table(
    "cg_transfers",
    metadata,
    Column("id", AutoIncrementId, primary_key=True, autoincrement=True),
    Column("transfer_id", String(140), nullable=False),
    Column("chain", String(32), nullable=False),
    Column("tx_hash", String(66), nullable=False),
    Column("log_index", BigInteger, nullable=False),
    Column("block_number", BigInteger, nullable=False),
    Column("block_hash", String(66), nullable=False),
    Column("block_time_us", BigInteger, nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("from_address", String(42), nullable=False),
    Column("to_address", String(42), nullable=False),
    Column("token_contract", String(42), nullable=False),
    Column("asset", String(49), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("seen_time_us", BigInteger, nullable=False),
    Column("confirm_time_us", BigInteger, nullable=True),
    Column("reorg_time_us", BigInteger, nullable=True),
)

followers = Table(
    "cg_followers",
    metadata,
    Column("chain", String(32), primary_key=True),
    Column("last_block_number", BigInteger, nullable=False),
    Column("last_block_hash", String(66), nullable=False),
    Column("reorg_count", BigInteger, nullable=False),
    Column("last_reorg_depth", Integer, nullable=False),
    Column("last_reorg_time_us", BigInteger, nullable=True),
    Column("update_time_us", BigInteger, nullable=False),
    Column("genesis_hash", String(66), nullable=False, server_default=""),
)

follower_leases = Table(
    "cg_follower_leases",
    metadata,
    Column("chain", String(32), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("acquire_time_us", BigInteger, nullable=False),
    Column("renew_time_us", BigInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
)


def encode_token(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


def decode_token(token: str) -> dict[str, Any] | None:
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError):
        return None
    return position if isinstance(position, dict) else None


async def _insert_ignore(session: AsyncSession, table: Table, values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, in the dialect of the session."""
    dialect = session.get_bind().dialect.name
    statement = (pg_insert if dialect == "postgresql" else sqlite_insert)(table).values(**values)
    await session.execute(statement.on_conflict_do_nothing())


# Nonce manager


async def lock_sender(
    session: AsyncSession, chain: str, address: str, chain_nonce: int, now_us: int
) -> Row[Any]:
    """The sender's row, created at the chain's nonce on first use, locked until the transaction
    ends (SELECT FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers)."""
    await _insert_ignore(
        session,
        senders,
        {"chain": chain, "address": address, "next_nonce": chain_nonce, "sync_time_us": now_us},
    )
    row = (
        await session.execute(
            select(senders).where(senders.c.chain == chain, senders.c.address == address).with_for_update()
        )
    ).one()
    return row


async def set_next_nonce(
    session: AsyncSession, chain: str, address: str, next_nonce: int, now_us: int
) -> None:
    await session.execute(
        update(senders)
        .where(senders.c.chain == chain, senders.c.address == address)
        .values(next_nonce=next_nonce, sync_time_us=now_us)
    )


async def sender(session: AsyncSession, chain: str, address: str) -> Row[Any] | None:
    return (
        await session.execute(select(senders).where(senders.c.chain == chain, senders.c.address == address))
    ).first()


def _nonce_in_use(chain: str, address: str) -> Any:
    other = reservations.alias("other")
    return exists().where(
        other.c.chain == chain,
        other.c.address == address,
        other.c.nonce == reservations.c.nonce,
        other.c.state.in_([int(ReservationState.RESERVED), int(ReservationState.BROADCAST)]),
    )


async def reusable_nonce(session: AsyncSession, chain: str, address: str, chain_nonce: int) -> int | None:
    """The lowest nonce given back (released or expired), unused since and not yet mined."""
    value = (
        await session.execute(
            select(func.min(reservations.c.nonce)).where(
                reservations.c.chain == chain,
                reservations.c.address == address,
                reservations.c.state.in_([int(ReservationState.RELEASED), int(ReservationState.EXPIRED)]),
                reservations.c.nonce >= chain_nonce,
                ~_nonce_in_use(chain, address),
            )
        )
    ).scalar()
    return None if value is None else int(value)


async def gap_nonces(session: AsyncSession, chain: str, address: str, chain_nonce: int) -> list[int]:
    rows = await session.execute(
        select(reservations.c.nonce)
        .where(
            reservations.c.chain == chain,
            reservations.c.address == address,
            reservations.c.state.in_([int(ReservationState.RELEASED), int(ReservationState.EXPIRED)]),
            reservations.c.nonce >= chain_nonce,
            ~_nonce_in_use(chain, address),
        )
        .distinct()
        .order_by(reservations.c.nonce)
    )
    return [int(value) for (value,) in rows]


async def insert_reservation(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(reservations.insert().values(**values))


async def reservation(session: AsyncSession, reservation_id: str) -> Row[Any] | None:
    return (
        await session.execute(select(reservations).where(reservations.c.reservation_id == reservation_id))
    ).first()


async def open_reservation(session: AsyncSession, chain: str, address: str, nonce: int) -> Sequence[Row[Any]]:
    """RESERVED reservations of that sender and nonce (a build, and maybe a replacement)."""
    return (
        await session.execute(
            select(reservations).where(
                reservations.c.chain == chain,
                reservations.c.address == address,
                reservations.c.nonce == nonce,
                reservations.c.state == int(ReservationState.RESERVED),
            )
        )
    ).all()


async def end_reservation(
    session: AsyncSession, reservation_id: str, state: ReservationState, now_us: int, reason: str = ""
) -> None:
    await session.execute(
        update(reservations)
        .where(reservations.c.reservation_id == reservation_id)
        .values(state=int(state), end_time_us=now_us, end_reason=reason[:500])
    )


async def count_reserved(session: AsyncSession, chain: str, address: str) -> int:
    return int(
        (
            await session.execute(
                select(func.count()).where(
                    reservations.c.chain == chain,
                    reservations.c.address == address,
                    reservations.c.state == int(ReservationState.RESERVED),
                )
            )
        ).scalar_one()
    )


async def expired_reservations(
    session: AsyncSession, chain: str, now_us: int, limit: int
) -> Sequence[Row[Any]]:
    return (
        await session.execute(
            select(reservations)
            .where(
                reservations.c.chain == chain,
                reservations.c.state == int(ReservationState.RESERVED),
                reservations.c.expire_time_us <= now_us,
            )
            .order_by(reservations.c.expire_time_us)
            .limit(limit)
        )
    ).all()


# Transactions


async def insert_transaction(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(transactions.insert().values(**values))


async def transaction(
    session: AsyncSession, chain: str, tx_hash: str, *, lock: bool = False
) -> Row[Any] | None:
    statement = select(transactions).where(transactions.c.chain == chain, transactions.c.tx_hash == tx_hash)
    if lock:
        statement = statement.with_for_update()
    return (await session.execute(statement)).first()


async def update_transaction(session: AsyncSession, chain: str, tx_hash: str, values: dict[str, Any]) -> None:
    await session.execute(
        update(transactions)
        .where(transactions.c.chain == chain, transactions.c.tx_hash == tx_hash)
        .values(**values)
    )


async def open_transactions(session: AsyncSession, chain: str, limit: int) -> Sequence[Row[Any]]:
    """Transactions not yet terminal, lowest nonce first."""
    return (
        await session.execute(
            select(transactions)
            .where(
                transactions.c.chain == chain,
                transactions.c.status.in_(
                    [int(TxStatus.PENDING), int(TxStatus.MINED), int(TxStatus.FAILED), int(TxStatus.DROPPED)]
                ),
                transactions.c.final_time_us.is_(None),
            )
            .order_by(transactions.c.from_address, transactions.c.nonce)
            .limit(limit)
        )
    ).all()


async def same_nonce(session: AsyncSession, chain: str, address: str, nonce: int) -> Sequence[Row[Any]]:
    return (
        await session.execute(
            select(transactions).where(
                transactions.c.chain == chain,
                transactions.c.from_address == address,
                transactions.c.nonce == nonce,
            )
        )
    ).all()


async def pending_of(session: AsyncSession, chain: str, address: str) -> Sequence[Row[Any]]:
    return (
        await session.execute(
            select(transactions)
            .where(
                transactions.c.chain == chain,
                transactions.c.from_address == address,
                transactions.c.status.in_([int(TxStatus.PENDING), int(TxStatus.DROPPED)]),
            )
            .order_by(transactions.c.nonce, transactions.c.broadcast_time_us)
        )
    ).all()


async def list_transactions(
    session: AsyncSession,
    chain: str,
    *,
    from_address: str,
    reference: str,
    statuses: Sequence[int],
    after_us: int | None,
    before_us: int | None,
    position: dict[str, Any],
    limit: int,
) -> Sequence[Row[Any]]:
    conditions: list[Any] = [transactions.c.chain == chain]
    if from_address:
        conditions.append(transactions.c.from_address == from_address)
    if reference:
        conditions.append(transactions.c.reference == reference)
    if statuses:
        conditions.append(transactions.c.status.in_(list(statuses)))
    if after_us is not None:
        conditions.append(transactions.c.broadcast_time_us >= after_us)
    if before_us is not None:
        conditions.append(transactions.c.broadcast_time_us < before_us)
    if position:
        time_us, tx_hash = int(position["t"]), str(position["h"])
        conditions.append(
            or_(
                transactions.c.broadcast_time_us < time_us,
                and_(transactions.c.broadcast_time_us == time_us, transactions.c.tx_hash < tx_hash),
            )
        )
    return (
        await session.execute(
            select(transactions)
            .where(*conditions)
            .order_by(transactions.c.broadcast_time_us.desc(), transactions.c.tx_hash.desc())
            .limit(limit)
        )
    ).all()


# Watched addresses


async def watched_address(session: AsyncSession, chain: str, address: str) -> Row[Any] | None:
    return (
        await session.execute(select(watched).where(watched.c.chain == chain, watched.c.address == address))
    ).first()


async def insert_watched(session: AsyncSession, values: dict[str, Any]) -> None:
    next_seq = (await session.execute(select(func.coalesce(func.max(watched.c.seq), 0) + 1))).scalar_one()
    await session.execute(watched.insert().values(seq=next_seq, **values))


async def delete_watched(session: AsyncSession, chain: str, address: str) -> None:
    await session.execute(watched.delete().where(watched.c.chain == chain, watched.c.address == address))


async def rescans(session: AsyncSession, chain: str) -> Sequence[Row[Any]]:
    """Watched addresses with earlier blocks still to rescan, oldest first."""
    return (
        await session.execute(
            select(watched)
            .where(watched.c.chain == chain, watched.c.rescan_next.is_not(None))
            .order_by(watched.c.seq)
        )
    ).all()


async def advance_rescan(session: AsyncSession, chain: str, address: str, next_block: int, end: int) -> None:
    done = next_block > end
    await session.execute(
        update(watched)
        .where(watched.c.chain == chain, watched.c.address == address)
        .values(rescan_next=None if done else next_block, rescan_end=None if done else end)
    )


async def transfer_exists(session: AsyncSession, transfer_id: str, block_hash: str) -> bool:
    found = await session.execute(
        select(transfers.c.id).where(
            transfers.c.transfer_id == transfer_id, transfers.c.block_hash == block_hash
        )
    )
    return found.first() is not None


async def watched_set(session: AsyncSession, chain: str) -> set[str]:
    rows = await session.execute(select(watched.c.address).where(watched.c.chain == chain))
    return {address for (address,) in rows}


async def count_watched(session: AsyncSession, chain: str) -> int:
    return int((await session.execute(select(func.count()).where(watched.c.chain == chain))).scalar_one())


async def list_watched(
    session: AsyncSession, chain: str, owner: str, after_seq: int, limit: int
) -> Sequence[Row[Any]]:
    conditions: list[Any] = [watched.c.chain == chain, watched.c.seq > after_seq]
    if owner:
        conditions.append(watched.c.owner == owner)
    return (
        await session.execute(select(watched).where(*conditions).order_by(watched.c.seq).limit(limit))
    ).all()


# Follower


async def follower(session: AsyncSession, chain: str, *, lock: bool = False) -> Row[Any] | None:
    statement = select(followers).where(followers.c.chain == chain)
    if lock:
        statement = statement.with_for_update()
    return (await session.execute(statement)).first()


async def save_follower(session: AsyncSession, chain: str, values: dict[str, Any]) -> None:
    existing = await follower(session, chain)
    if existing is None:
        await session.execute(followers.insert().values(chain=chain, **values))
    else:
        await session.execute(update(followers).where(followers.c.chain == chain).values(**values))


# Follower lease: one replica follows a chain at a time


async def claim_lease(session: AsyncSession, chain: str, holder: str, now_us: int, duration_us: int) -> bool:
    """Takes the chain's follower lease for `holder` if it is free or expired, or renews it if
    `holder` has it; True when `holder` holds it until now + duration."""
    taken = await session.execute(
        update(follower_leases)
        .where(
            follower_leases.c.chain == chain,
            or_(follower_leases.c.holder == holder, follower_leases.c.expire_time_us <= now_us),
        )
        .values(
            holder=holder,
            acquire_time_us=case(
                (follower_leases.c.holder == holder, follower_leases.c.acquire_time_us), else_=now_us
            ),
            renew_time_us=now_us,
            expire_time_us=now_us + duration_us,
        )
    )
    if taken.rowcount == 1:  # type: ignore[attr-defined]
        return True
    await _insert_ignore(
        session,
        follower_leases,
        {
            "chain": chain,
            "holder": holder,
            "acquire_time_us": now_us,
            "renew_time_us": now_us,
            "expire_time_us": now_us + duration_us,
        },
    )
    row = await lease(session, chain)
    return row is not None and row.holder == holder


async def renew_lease(session: AsyncSession, chain: str, holder: str, now_us: int, duration_us: int) -> bool:
    """Extends a lease `holder` still has (unexpired); False when it has lost it. Inside a write
    transaction this is the fence: the row stays locked until the transaction ends, so no other
    replica takes the lease over while the write is under way."""
    renewed = await session.execute(
        update(follower_leases)
        .where(
            follower_leases.c.chain == chain,
            follower_leases.c.holder == holder,
            follower_leases.c.expire_time_us > now_us,
        )
        .values(renew_time_us=now_us, expire_time_us=now_us + duration_us)
    )
    return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]


async def release_lease(session: AsyncSession, chain: str, holder: str, now_us: int) -> None:
    """Lets the lease expire now, so that another replica takes over at its next tick."""
    await session.execute(
        update(follower_leases)
        .where(follower_leases.c.chain == chain, follower_leases.c.holder == holder)
        .values(expire_time_us=now_us)
    )


async def lease(session: AsyncSession, chain: str) -> Row[Any] | None:
    return (await session.execute(select(follower_leases).where(follower_leases.c.chain == chain))).first()


async def forget_chain(session: AsyncSession, chain: str, now_us: int) -> None:
    """Forgets what was followed and allocated on a development chain that was reset: its
    blocks, transfers, nonces and open reservations. Transactions stay on record, and those not
    final end DROPPED and final, so that nothing signed for the old chain is ever sent again."""
    for table in (blocks, transfers, senders, followers):
        await session.execute(table.delete().where(table.c.chain == chain))
    await session.execute(
        update(reservations)
        .where(reservations.c.chain == chain, reservations.c.state == int(ReservationState.RESERVED))
        .values(state=int(ReservationState.EXPIRED), end_time_us=now_us, end_reason="development chain reset")
    )
    await session.execute(
        update(transactions)
        .where(transactions.c.chain == chain, transactions.c.final_time_us.is_(None))
        .values(status=int(TxStatus.DROPPED), final_time_us=now_us, failure_message="development chain reset")
    )


async def canonical_block(session: AsyncSession, chain: str, number: int) -> Row[Any] | None:
    return (
        await session.execute(
            select(blocks).where(
                blocks.c.chain == chain,
                blocks.c.number == number,
                blocks.c.status == int(BlockStatus.CANONICAL),
            )
        )
    ).first()


async def insert_block(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(blocks.insert().values(**values))


async def orphan_blocks_above(session: AsyncSession, chain: str, number: int, now_us: int) -> list[str]:
    """Marks canonical blocks above `number` ORPHANED; their hashes, lowest first."""
    rows = await session.execute(
        select(blocks.c.hash)
        .where(
            blocks.c.chain == chain, blocks.c.number > number, blocks.c.status == int(BlockStatus.CANONICAL)
        )
        .order_by(blocks.c.number)
    )
    hashes = [value for (value,) in rows]
    if hashes:
        await session.execute(
            update(blocks)
            .where(blocks.c.chain == chain, blocks.c.hash.in_(hashes))
            .values(status=int(BlockStatus.ORPHANED), orphan_time_us=now_us)
        )
    return hashes


async def list_blocks(
    session: AsyncSession,
    chain: str,
    from_block: int,
    to_block: int,
    status: int,
    position: dict[str, Any],
    limit: int,
) -> Sequence[Row[Any]]:
    conditions: list[Any] = [blocks.c.chain == chain]
    if from_block:
        conditions.append(blocks.c.number >= from_block)
    if to_block:
        conditions.append(blocks.c.number <= to_block)
    if status:
        conditions.append(blocks.c.status == status)
    if position:
        number, block_hash = int(position["n"]), str(position["h"])
        conditions.append(
            or_(blocks.c.number < number, and_(blocks.c.number == number, blocks.c.hash < block_hash))
        )
    return (
        await session.execute(
            select(blocks)
            .where(*conditions)
            .order_by(blocks.c.number.desc(), blocks.c.hash.desc())
            .limit(limit)
        )
    ).all()


async def insert_transfer(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(transfers.insert().values(**values))


async def transfers_in_blocks(session: AsyncSession, chain: str, hashes: Sequence[str]) -> Sequence[Row[Any]]:
    return (
        await session.execute(
            select(transfers)
            .where(
                transfers.c.chain == chain,
                transfers.c.block_hash.in_(list(hashes)),
                transfers.c.status != int(TransferStatus.REORGED),
            )
            .order_by(transfers.c.block_number, transfers.c.log_index)
        )
    ).all()


async def transfers_to_confirm(session: AsyncSession, chain: str, max_block: int) -> Sequence[Row[Any]]:
    return (
        await session.execute(
            select(transfers)
            .where(
                transfers.c.chain == chain,
                transfers.c.status == int(TransferStatus.SEEN),
                transfers.c.block_number <= max_block,
            )
            .order_by(transfers.c.block_number, transfers.c.log_index)
        )
    ).all()


async def update_transfer(session: AsyncSession, row_id: int, values: dict[str, Any]) -> None:
    await session.execute(update(transfers).where(transfers.c.id == row_id).values(**values))


async def list_transfers(
    session: AsyncSession,
    chain: str,
    *,
    to_address: str,
    tx_hash: str,
    status: int,
    from_block: int,
    to_block: int,
    position: dict[str, Any],
    limit: int,
) -> Sequence[Row[Any]]:
    conditions: list[Any] = [transfers.c.chain == chain]
    if to_address:
        conditions.append(transfers.c.to_address == to_address)
    if tx_hash:
        conditions.append(transfers.c.tx_hash == tx_hash)
    if status:
        conditions.append(transfers.c.status == status)
    if from_block:
        conditions.append(transfers.c.block_number >= from_block)
    if to_block:
        conditions.append(transfers.c.block_number <= to_block)
    if position:
        key = (int(position["b"]), int(position["l"]), int(position["i"]))
        conditions.append(
            or_(
                transfers.c.block_number > key[0],
                and_(transfers.c.block_number == key[0], transfers.c.log_index > key[1]),
                and_(
                    transfers.c.block_number == key[0],
                    transfers.c.log_index == key[1],
                    transfers.c.id > key[2],
                ),
            )
        )
    return (
        await session.execute(
            select(transfers)
            .where(*conditions)
            .order_by(transfers.c.block_number, transfers.c.log_index, transfers.c.id)
            .limit(limit)
        )
    ).all()
