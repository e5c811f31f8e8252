"""The withdraw service's tables and queries (SQLAlchemy Core).

Schema (migrations/versions/withdraw_0001_initial.py):
- withdraw_withdrawals: one row per withdrawal, keyed by an id derived from (user, request_id).
- withdraw_transactions: each withdrawal's transactions (seq 0 the original, then replacements)
  with the approval given to custody and the signed bytes, stored before they are used.
- withdraw_decisions: approvers' decisions, one per (withdrawal, approver).
- withdraw_history: every state transition.
- withdraw_addresses: the whitelist.
- withdraw_users: one row per user, locked to serialise a user's limit checks and whitelist changes.
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
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.amount import Amount
from svc.withdraw.domain import (
    Actor,
    Address,
    AddressState,
    Decision,
    Hold,
    Outcome,
    Transaction,
    Transition,
    TxStatus,
    Withdrawal,
)
from svc.withdraw.states import COUNTED, State

metadata = MetaData()

withdrawals = Table(
    "withdraw_withdrawals",
    metadata,
    Column("withdrawal_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("chain", String(32), nullable=False),
    Column("asset", String(49), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("fee", Amount, nullable=False),
    Column("destination", String(42), nullable=False),
    Column("address_id", String(36), nullable=False),
    Column("destination_label", String(64), nullable=False),
    Column("note", String(140), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("outcome", SmallInteger, nullable=False),
    Column("outcome_message", String(200), nullable=False),
    Column("risk_decision", SmallInteger, nullable=False),
    Column("risk_reasons", String(4000), nullable=False),
    Column("risk_time_us", BigInteger, nullable=True),
    Column("auto_approved", Boolean, nullable=False),
    Column("required_approvals", Integer, nullable=False),
    Column("user_ledger_account_id", String(36), nullable=False),
    Column("hold_entry_id", String(128), nullable=False),
    Column("hold", SmallInteger, nullable=False),
    Column("source_wallet_id", String(36), nullable=False),
    Column("tx_hash", String(66), nullable=False),
    Column("confirmations", Integer, nullable=False),
    Column("required_confirmations", Integer, nullable=False),
    Column("network_fee_asset", String(49), nullable=False),
    Column("network_fee", Amount, nullable=False),
    Column("replacements", Integer, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("approve_time_us", BigInteger, nullable=True),
    Column("broadcast_time_us", BigInteger, nullable=True),
    Column("complete_time_us", BigInteger, nullable=True),
    Column("approval_expire_time_us", BigInteger, nullable=True),
    Column("version", BigInteger, nullable=False),
)

transactions = Table(
    "withdraw_transactions",
    metadata,
    Column("withdrawal_id", String(36), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("unsigned", LargeBinary, nullable=False),
    Column("approval", LargeBinary, nullable=False),
    Column("signed_transaction", String(262146), nullable=False),
    Column("tx_hash", String(66), nullable=False),
    Column("nonce", BigInteger, nullable=False),
    Column("fee_per_gas", Amount, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("broadcast_time_us", BigInteger, nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
)

decisions = Table(
    "withdraw_decisions",
    metadata,
    Column("withdrawal_id", String(36), primary_key=True),
    Column("approver_id", String(64), primary_key=True),
    Column("decision", SmallInteger, nullable=False),
    Column("comment", String(500), nullable=False),
    Column("decide_time_us", BigInteger, nullable=False),
)

history = Table(
    "withdraw_history",
    metadata,
    Column("withdrawal_id", String(36), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("from_state", SmallInteger, nullable=False),
    Column("to_state", SmallInteger, nullable=False),
    Column("actor_type", SmallInteger, nullable=False),
    Column("actor_id", String(64), nullable=False),
    Column("note", String(500), nullable=False),
    Column("transition_time_us", BigInteger, nullable=False),
)

addresses = Table(
    "withdraw_addresses",
    metadata,
    Column("address_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("chain", String(32), nullable=False),
    Column("address", String(42), nullable=False),
    Column("label", String(64), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("usable_time_us", BigInteger, nullable=False),
    Column("used", Boolean, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("remove_time_us", BigInteger, nullable=True),
    Column("version", BigInteger, nullable=False),
)

users = Table(
    "withdraw_users",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
)


def _values(record: Any) -> dict[str, Any]:
    return {name: int(value) if isinstance(value, int) else value for name, value in asdict(record).items()}


def _withdrawal_of(row: Any) -> Withdrawal:
    values = dict(row._mapping)
    values["state"] = State(values["state"])
    values["outcome"] = Outcome(values["outcome"])
    values["hold"] = Hold(values["hold"])
    return Withdrawal(**values)


def _address_of(row: Any) -> Address:
    values = dict(row._mapping)
    values["state"] = AddressState(values["state"])
    return Address(**values)


def _transaction_of(row: Any) -> Transaction:
    values = dict(row._mapping)
    values["status"] = TxStatus(values["status"])
    return Transaction(**values)


async def lock_user(session: AsyncSession, user_id: str) -> None:
    """Serialises this transaction with every other one of the user's that locks it."""
    exists = (await session.execute(select(users.c.user_id).where(users.c.user_id == user_id))).first()
    if exists is None:
        try:
            async with session.begin_nested():
                await session.execute(insert(users).values(user_id=user_id, version=0))
        except IntegrityError:
            pass
    await session.execute(update(users).where(users.c.user_id == user_id).values(version=users.c.version + 1))


# Withdrawals


async def insert_withdrawal(session: AsyncSession, withdrawal: Withdrawal) -> None:
    await session.execute(insert(withdrawals).values(**_values(withdrawal)))


async def update_withdrawal(session: AsyncSession, withdrawal: Withdrawal) -> None:
    values = _values(withdrawal)
    result = await session.execute(
        update(withdrawals).where(withdrawals.c.withdrawal_id == withdrawal.withdrawal_id).values(**values)
    )
    assert result.rowcount == 1, withdrawal.withdrawal_id  # type: ignore[attr-defined]


async def withdrawal_by_id(
    session: AsyncSession, withdrawal_id: str, *, lock: bool = False
) -> Withdrawal | None:
    query = select(withdrawals).where(withdrawals.c.withdrawal_id == withdrawal_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _withdrawal_of(row) if row is not None else None


async def list_withdrawals(
    session: AsyncSession,
    *,
    user_id: str = "",
    states: Sequence[int] = (),
    chain: str = "",
    asset: str = "",
    create_after_us: int | None = None,
    create_before_us: int | None = None,
    tx_hash: str = "",
    awaiting_approver: str = "",
    after: tuple[int, str] | None = None,
    limit: int = 50,
) -> list[Withdrawal]:
    """Newest first, keyset-paged by (create_time_us, withdrawal_id)."""
    query = select(withdrawals)
    if user_id:
        query = query.where(withdrawals.c.user_id == user_id)
    if states:
        query = query.where(withdrawals.c.state.in_(list(states)))
    if chain:
        query = query.where(withdrawals.c.chain == chain)
    if asset:
        query = query.where(withdrawals.c.asset == asset)
    if create_after_us is not None:
        query = query.where(withdrawals.c.create_time_us >= create_after_us)
    if create_before_us is not None:
        query = query.where(withdrawals.c.create_time_us < create_before_us)
    if tx_hash:
        hashes = select(transactions.c.withdrawal_id).where(transactions.c.tx_hash == tx_hash.lower())
        query = query.where(withdrawals.c.withdrawal_id.in_(hashes))
    if awaiting_approver:
        decided = select(decisions.c.withdrawal_id).where(decisions.c.approver_id == awaiting_approver)
        query = query.where(
            withdrawals.c.state == int(State.AWAITING_APPROVAL),
            withdrawals.c.user_id != awaiting_approver,
            withdrawals.c.withdrawal_id.not_in(decided),
        )
    if after is not None:
        query = query.where(
            tuple_(withdrawals.c.create_time_us, withdrawals.c.withdrawal_id) < tuple_(*after)
        )
    query = query.order_by(withdrawals.c.create_time_us.desc(), withdrawals.c.withdrawal_id.desc())
    rows = (await session.execute(query.limit(limit))).all()
    return [_withdrawal_of(row) for row in rows]


async def due_withdrawals(session: AsyncSession, states: Sequence[State], limit: int) -> list[Withdrawal]:
    """Oldest first: what the worker moves on."""
    query = (
        select(withdrawals)
        .where(withdrawals.c.state.in_([int(state) for state in states]))
        .order_by(withdrawals.c.update_time_us)
        .limit(limit)
    )
    return [_withdrawal_of(row) for row in (await session.execute(query)).all()]


async def unsettled_holds(session: AsyncSession, states: Sequence[State], limit: int) -> list[Withdrawal]:
    """Ended withdrawals whose hold is still pending at the ledger (to be voided)."""
    query = (
        select(withdrawals)
        .where(
            withdrawals.c.state.in_([int(state) for state in states]),
            withdrawals.c.hold == int(Hold.PENDING),
        )
        .limit(limit)
    )
    return [_withdrawal_of(row) for row in (await session.execute(query)).all()]


async def used_since(session: AsyncSession, user_id: str, asset: str, since_us: int) -> int:
    """Amounts of the user's withdrawals of `asset` requested since then and not ended unpaid."""
    rows = (
        await session.execute(
            select(withdrawals.c.amount).where(
                withdrawals.c.user_id == user_id,
                withdrawals.c.asset == asset,
                withdrawals.c.create_time_us >= since_us,
                withdrawals.c.state.in_([int(state) for state in COUNTED]),
            )
        )
    ).all()
    return sum(int(row.amount) for row in rows)


async def count_since(session: AsyncSession, user_id: str, since_us: int, excluding: str) -> int:
    found = await session.execute(
        select(func.count()).where(
            withdrawals.c.user_id == user_id,
            withdrawals.c.create_time_us >= since_us,
            withdrawals.c.withdrawal_id != excluding,
            withdrawals.c.state.in_([int(state) for state in COUNTED]),
        )
    )
    return int(found.scalar_one())


# Transactions


async def insert_transaction(session: AsyncSession, transaction: Transaction) -> None:
    await session.execute(insert(transactions).values(**_values(transaction)))


async def update_transaction(session: AsyncSession, transaction: Transaction) -> None:
    await session.execute(
        update(transactions)
        .where(
            transactions.c.withdrawal_id == transaction.withdrawal_id,
            transactions.c.seq == transaction.seq,
        )
        .values(**_values(transaction))
    )


async def transactions_of(session: AsyncSession, withdrawal_id: str) -> list[Transaction]:
    rows = await session.execute(
        select(transactions).where(transactions.c.withdrawal_id == withdrawal_id).order_by(transactions.c.seq)
    )
    return [_transaction_of(row) for row in rows.all()]


# Decisions and history


async def insert_decision(session: AsyncSession, decision: Decision) -> None:
    """One decision per (withdrawal, approver): a second raises IntegrityError."""
    await session.execute(insert(decisions).values(**_values(decision)))


async def decisions_of(session: AsyncSession, withdrawal_id: str) -> list[Decision]:
    rows = await session.execute(
        select(decisions)
        .where(decisions.c.withdrawal_id == withdrawal_id)
        .order_by(decisions.c.decide_time_us, decisions.c.approver_id)
    )
    return [Decision(**dict(row._mapping)) for row in rows.all()]


async def append_history(
    session: AsyncSession,
    withdrawal_id: str,
    source: State,
    target: State,
    actor: Actor,
    actor_id: str,
    note: str,
    time_us: int,
) -> None:
    last = await session.execute(
        select(func.max(history.c.seq)).where(history.c.withdrawal_id == withdrawal_id)
    )
    seq = (last.scalar_one() or 0) + 1
    await session.execute(
        insert(history).values(
            withdrawal_id=withdrawal_id,
            seq=seq,
            from_state=int(source),
            to_state=int(target),
            actor_type=int(actor),
            actor_id=actor_id[:64],
            note=note[:500],
            transition_time_us=time_us,
        )
    )


async def history_of(session: AsyncSession, withdrawal_id: str) -> list[Transition]:
    rows = await session.execute(
        select(history).where(history.c.withdrawal_id == withdrawal_id).order_by(history.c.seq)
    )
    return [
        Transition(
            row.withdrawal_id,
            row.seq,
            State(row.from_state),
            State(row.to_state),
            Actor(row.actor_type),
            row.actor_id,
            row.note,
            row.transition_time_us,
        )
        for row in rows.all()
    ]


# Addresses


async def insert_address(session: AsyncSession, address: Address) -> None:
    await session.execute(insert(addresses).values(**_values(address)))


async def update_address(session: AsyncSession, address: Address) -> None:
    await session.execute(
        update(addresses).where(addresses.c.address_id == address.address_id).values(**_values(address))
    )


async def address_by_id(session: AsyncSession, address_id: str) -> Address | None:
    row = (await session.execute(select(addresses).where(addresses.c.address_id == address_id))).first()
    return _address_of(row) if row is not None else None


async def listed_address(session: AsyncSession, user_id: str, chain: str, address: str) -> Address | None:
    """The user's entry of (chain, address) that is not REMOVED."""
    row = (
        await session.execute(
            select(addresses).where(
                addresses.c.user_id == user_id,
                addresses.c.chain == chain,
                addresses.c.address == address.lower(),
                addresses.c.state != int(AddressState.REMOVED),
            )
        )
    ).first()
    return _address_of(row) if row is not None else None


async def count_listed(session: AsyncSession, user_id: str) -> int:
    found = await session.execute(
        select(func.count()).where(
            addresses.c.user_id == user_id, addresses.c.state != int(AddressState.REMOVED)
        )
    )
    return int(found.scalar_one())


async def list_addresses(
    session: AsyncSession,
    user_id: str,
    *,
    chain: str,
    include_removed: bool,
    after: tuple[int, str] | None,
    limit: int,
) -> list[Address]:
    query = select(addresses).where(addresses.c.user_id == user_id)
    if chain:
        query = query.where(addresses.c.chain == chain)
    if not include_removed:
        query = query.where(addresses.c.state != int(AddressState.REMOVED))
    if after is not None:
        query = query.where(tuple_(addresses.c.create_time_us, addresses.c.address_id) < tuple_(*after))
    query = query.order_by(addresses.c.create_time_us.desc(), addresses.c.address_id.desc()).limit(limit)
    return [_address_of(row) for row in (await session.execute(query)).all()]


async def cooled_down(session: AsyncSession, now_us: int, limit: int) -> list[Address]:
    """COOLING_DOWN entries whose cool-down has ended (to be recorded ACTIVE)."""
    query = (
        select(addresses)
        .where(
            addresses.c.state == int(AddressState.COOLING_DOWN),
            addresses.c.usable_time_us <= now_us,
        )
        .limit(limit)
    )
    return [_address_of(row) for row in (await session.execute(query)).all()]
