"""The custody service's tables and queries (SQLAlchemy Core).

Schema (migrations/versions/custody_0001_initial.py):
- custody_wallets: one row per wallet with its key's public part and, for software keys and
  deposit-root seeds, the sealed envelope (never a private value in clear).
- custody_movements and custody_movement_decisions: movements between custody wallets and one
  decision per (movement, approver): the primary key is what makes approvers distinct.
- custody_signature_records: the append-only audit log of every signature request.
- custody_approval_uses: the claims digest each approval id was first used with.
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
from sqlalchemy.ext.asyncio import AsyncSession

from svc.custody.domain import (
    Approval,
    ChainFamily,
    Decision,
    Movement,
    MovementKind,
    MovementState,
    Outcome,
    Plan,
    PlanState,
    Policy,
    RebalanceKind,
    Wallet,
    WalletKind,
    WalletState,
)
from svc.kit.amount import Amount

metadata = MetaData()

wallets = Table(
    "custody_wallets",
    metadata,
    Column("wallet_id", String(36), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("kind", SmallInteger, nullable=False),
    Column("chain_family", SmallInteger, nullable=False),
    Column("chains", String(1100), nullable=False),
    Column("address", String(42), nullable=False),
    Column("key_id", String(64), nullable=False, unique=True),
    Column("backend", SmallInteger, nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("backend_reference", String(256), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("xpub", String(112), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("required_approvals", Integer, nullable=False),
    Column("disable_reason", String(500), nullable=False),
    Column("disabled_by", String(128), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
)

movements = Table(
    "custody_movements",
    metadata,
    Column("movement_id", String(36), primary_key=True),
    Column("kind", SmallInteger, nullable=False),
    Column("source_wallet_id", String(36), nullable=False),
    Column("destination_wallet_id", String(36), nullable=False),
    Column("chain", String(32), nullable=False),
    Column("from_address", String(42), nullable=False),
    Column("to_address", String(42), nullable=False),
    Column("asset", String(49), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("required_approvals", Integer, nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("plan_id", String(36), nullable=False),
    Column("tx_hash", String(66), nullable=False),
    Column("nonce", BigInteger, nullable=True),
    Column("outcome_message", String(500), nullable=False),
    Column("approval_expire_time_us", BigInteger, nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("network_fee_asset", String(49), nullable=False),
    Column("network_fee", Amount, nullable=True),
)

decisions = Table(
    "custody_movement_decisions",
    metadata,
    Column("movement_id", String(36), primary_key=True),
    Column("approver_id", String(128), primary_key=True),
    Column("decision", SmallInteger, nullable=False),
    Column("comment", String(500), nullable=False),
    Column("decide_time_us", BigInteger, nullable=False),
)

records = Table(
    "custody_signature_records",
    metadata,
    Column("record_id", String(36), primary_key=True),
    Column("request_time_us", BigInteger, nullable=False),
    Column("caller", String(32), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("wallet_id", String(36), nullable=False),
    Column("wallet_kind", SmallInteger, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("derivation_path", String(64), nullable=False),
    Column("chain", String(32), nullable=False),
    Column("from_address", String(42), nullable=False),
    Column("to_address", String(42), nullable=False),
    Column("asset", String(49), nullable=False),
    Column("amount", Amount, nullable=False),
    Column("nonce", BigInteger, nullable=False),
    Column("signing_hash", String(66), nullable=False),
    Column("tx_hash", String(66), nullable=False),
    Column("approval_id", String(36), nullable=False),
    Column("purpose", SmallInteger, nullable=False),
    Column("reference", String(128), nullable=False),
    Column("movement_id", String(36), nullable=False),
    Column("outcome", SmallInteger, nullable=False),
    Column("refusal_reason", SmallInteger, nullable=False),
    Column("message", String(1000), nullable=False),
)

approval_uses = Table(
    "custody_approval_uses",
    metadata,
    Column("approval_id", String(36), primary_key=True),
    Column("claims_sha256", String(64), nullable=False),
    Column("issuer_key_id", String(128), nullable=False),
    Column("first_record_id", String(36), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
)

policies = Table(
    "custody_hot_wallet_policies",
    metadata,
    Column("policy_id", String(36), primary_key=True),
    Column("asset", String(49), nullable=False, unique=True),
    Column("hot_wallet_id", String(36), nullable=False),
    Column("cold_wallet_id", String(36), nullable=False),
    Column("floor", Amount, nullable=False),
    Column("target", Amount, nullable=False),
    Column("ceiling", Amount, nullable=False),
    Column("auto_sweep", Boolean, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("update_user_id", String(128), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
)

plans = Table(
    "custody_rebalance_plans",
    metadata,
    Column("plan_id", String(36), primary_key=True),
    Column("policy_id", String(36), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("asset", String(49), nullable=False),
    Column("hot_balance", Amount, nullable=False),
    Column("block_number", BigInteger, nullable=False),
    Column("amount", Amount, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("movement_id", String(36), nullable=False),
    Column("decided_by", String(128), nullable=False),
    Column("note", String(500), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("decide_time_us", BigInteger, nullable=True),
)

RECORD_FILTERS = ("wallet_id", "outcome", "reference", "caller", "chain")
TERMINAL_MOVEMENT_STATES = (
    MovementState.CONFIRMED,
    MovementState.REJECTED,
    MovementState.CANCELLED,
    MovementState.EXPIRED,
    MovementState.FAILED,
)


def chains_column(chains: Sequence[str]) -> str:
    """`,ethereum,bsc,`: delimited on both sides so that one LIKE finds exactly one chain."""
    return "," + ",".join(chains) + ","


def _wallet_of(row: Any) -> Wallet:
    values = dict(row._mapping)
    values["kind"] = WalletKind(values["kind"])
    values["chain_family"] = ChainFamily(values["chain_family"])
    values["state"] = WalletState(values["state"])
    values["chains"] = tuple(chain for chain in values["chains"].split(",") if chain)
    return Wallet(**values)


def _movement_of(row: Any) -> Movement:
    values = dict(row._mapping)
    values["kind"] = MovementKind(values["kind"])
    values["state"] = MovementState(values["state"])
    return Movement(**values)


async def insert_wallet(session: AsyncSession, wallet: Wallet) -> None:
    """Adds a wallet; the name is unique, so a concurrent create of the same name raises IntegrityError."""
    values = asdict(wallet)
    values["chains"] = chains_column(wallet.chains)
    values.update(kind=int(wallet.kind), chain_family=int(wallet.chain_family), state=int(wallet.state))
    await session.execute(insert(wallets).values(**values))


async def wallet_by_id(session: AsyncSession, wallet_id: str, *, lock: bool = False) -> Wallet | None:
    query = select(wallets).where(wallets.c.wallet_id == wallet_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _wallet_of(row) if row is not None else None


async def wallet_by_name(session: AsyncSession, name: str) -> Wallet | None:
    row = (await session.execute(select(wallets).where(wallets.c.name == name))).first()
    return _wallet_of(row) if row is not None else None


async def list_wallets(
    session: AsyncSession, *, kind: int, chain: str, state: int, after: str, limit: int
) -> list[Wallet]:
    """Wallets ordered by name, after the cursor, filtered."""
    query = select(wallets)
    if kind:
        query = query.where(wallets.c.kind == kind)
    if state:
        query = query.where(wallets.c.state == state)
    if chain:
        query = query.where(wallets.c.chains.contains(f",{chain},", autoescape=True))
    if after:
        query = query.where(wallets.c.name > after)
    rows = await session.execute(query.order_by(wallets.c.name).limit(limit))
    return [_wallet_of(row) for row in rows]


async def wallets_by_address(session: AsyncSession, address: str) -> list[Wallet]:
    rows = await session.execute(select(wallets).where(func.lower(wallets.c.address) == address.lower()))
    return [_wallet_of(row) for row in rows]


async def active_deposit_root(session: AsyncSession, family: ChainFamily) -> Wallet | None:
    """The oldest ACTIVE deposit root of a chain family."""
    query = (
        select(wallets)
        .where(
            wallets.c.kind == int(WalletKind.DEPOSIT_ROOT),
            wallets.c.chain_family == int(family),
            wallets.c.state == int(WalletState.ACTIVE),
        )
        .order_by(wallets.c.create_time_us, wallets.c.wallet_id)
        .limit(1)
    )
    row = (await session.execute(query)).first()
    return _wallet_of(row) if row is not None else None


async def update_wallet_state(session: AsyncSession, wallet: Wallet) -> None:
    """Writes a wallet's state and its disable fields (the key and address are immutable)."""
    result = await session.execute(
        update(wallets)
        .where(wallets.c.wallet_id == wallet.wallet_id, wallets.c.version == wallet.version - 1)
        .values(
            state=int(wallet.state),
            disable_reason=wallet.disable_reason,
            disabled_by=wallet.disabled_by,
            version=wallet.version,
            update_time_us=wallet.update_time_us,
        )
    )
    # Writers lock the row first, so the version they read is still the stored one.
    assert getattr(result, "rowcount", 0) == 1, wallet.wallet_id


async def insert_movement(session: AsyncSession, movement: Movement) -> None:
    values = asdict(movement)
    values.update(kind=int(movement.kind), state=int(movement.state))
    await session.execute(insert(movements).values(**values))


async def movement_by_id(session: AsyncSession, movement_id: str, *, lock: bool = False) -> Movement | None:
    query = select(movements).where(movements.c.movement_id == movement_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _movement_of(row) if row is not None else None


async def update_movement(session: AsyncSession, movement: Movement) -> None:
    """Writes a movement's state, nonce, hash, outcome and version."""
    result = await session.execute(
        update(movements)
        .where(movements.c.movement_id == movement.movement_id, movements.c.version == movement.version - 1)
        .values(
            state=int(movement.state),
            nonce=movement.nonce,
            tx_hash=movement.tx_hash,
            outcome_message=movement.outcome_message,
            network_fee_asset=movement.network_fee_asset,
            network_fee=movement.network_fee,
            update_time_us=movement.update_time_us,
            version=movement.version,
        )
    )
    assert getattr(result, "rowcount", 0) == 1, movement.movement_id


async def list_movements(
    session: AsyncSession,
    *,
    states: Sequence[int],
    kind: int,
    wallet_id: str,
    create_after_us: int | None,
    create_before_us: int | None,
    after: tuple[int, str] | None,
    limit: int,
) -> list[Movement]:
    """Movements newest first (create time, then id)."""
    query = select(movements)
    if states:
        query = query.where(movements.c.state.in_(list(states)))
    if kind:
        query = query.where(movements.c.kind == kind)
    if wallet_id:
        query = query.where(
            (movements.c.source_wallet_id == wallet_id) | (movements.c.destination_wallet_id == wallet_id)
        )
    if create_after_us is not None:
        query = query.where(movements.c.create_time_us >= create_after_us)
    if create_before_us is not None:
        query = query.where(movements.c.create_time_us < create_before_us)
    if after is not None:
        query = query.where(tuple_(movements.c.create_time_us, movements.c.movement_id) < tuple_(*after))
    order = (movements.c.create_time_us.desc(), movements.c.movement_id.desc())
    return [_movement_of(row) for row in await session.execute(query.order_by(*order).limit(limit))]


async def insert_decision(session: AsyncSession, movement_id: str, approval: Approval) -> None:
    """Adds a decision; a second one by the same approver raises IntegrityError (primary key)."""
    await session.execute(
        insert(decisions).values(
            movement_id=movement_id,
            approver_id=approval.approver_id,
            decision=int(approval.decision),
            comment=approval.comment,
            decide_time_us=approval.decide_time_us,
        )
    )


async def decisions_of(session: AsyncSession, movement_id: str) -> list[Approval]:
    """A movement's decisions, oldest first."""
    rows = await session.execute(
        select(decisions)
        .where(decisions.c.movement_id == movement_id)
        .order_by(decisions.c.decide_time_us, decisions.c.approver_id)
    )
    return [
        Approval(row.approver_id, Decision(row.decision), row.comment, row.decide_time_us) for row in rows
    ]


async def insert_record(session: AsyncSession, values: dict[str, Any]) -> None:
    """Appends a signature record (never updated or deleted)."""
    await session.execute(insert(records).values(**values))


async def record_by_id(session: AsyncSession, record_id: str) -> dict[str, Any] | None:
    row = (await session.execute(select(records).where(records.c.record_id == record_id))).first()
    return dict(row._mapping) if row is not None else None


async def list_records(
    session: AsyncSession,
    *,
    filters: dict[str, Any],
    request_after_us: int | None,
    request_before_us: int | None,
    after: tuple[int, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Signature records newest first (request time, then id)."""
    query = select(records)
    for name, value in filters.items():
        assert name in RECORD_FILTERS, name
        query = query.where(records.c[name] == value)
    if request_after_us is not None:
        query = query.where(records.c.request_time_us >= request_after_us)
    if request_before_us is not None:
        query = query.where(records.c.request_time_us < request_before_us)
    if after is not None:
        query = query.where(tuple_(records.c.request_time_us, records.c.record_id) < tuple_(*after))
    order = (records.c.request_time_us.desc(), records.c.record_id.desc())
    return [dict(row._mapping) for row in await session.execute(query.order_by(*order).limit(limit))]


async def approval_use(session: AsyncSession, approval_id: str) -> str | None:
    """The claims digest an approval id was first used with, or None if never used."""
    row = (
        await session.execute(
            select(approval_uses.c.claims_sha256).where(approval_uses.c.approval_id == approval_id)
        )
    ).first()
    return str(row.claims_sha256) if row is not None else None


async def insert_approval_use(
    session: AsyncSession, approval_id: str, digest: str, issuer_key_id: str, record_id: str, now_us: int
) -> None:
    """Binds an approval id to its claims; a concurrent first use raises IntegrityError."""
    await session.execute(
        insert(approval_uses).values(
            approval_id=approval_id,
            claims_sha256=digest,
            issuer_key_id=issuer_key_id,
            first_record_id=record_id,
            create_time_us=now_us,
        )
    )


def _plan_of(row: Any) -> Plan:
    values = dict(row._mapping)
    values["kind"] = RebalanceKind(values["kind"])
    values["state"] = PlanState(values["state"])
    return Plan(**values)


async def insert_policy(session: AsyncSession, policy: Policy) -> None:
    """Adds a policy; one per asset, so a concurrent create for the asset raises IntegrityError."""
    await session.execute(insert(policies).values(**asdict(policy)))


async def policy_by_id(session: AsyncSession, policy_id: str, *, lock: bool = False) -> Policy | None:
    query = select(policies).where(policies.c.policy_id == policy_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return Policy(**row._mapping) if row is not None else None


async def policy_by_asset(session: AsyncSession, asset: str) -> Policy | None:
    row = (await session.execute(select(policies).where(policies.c.asset == asset))).first()
    return Policy(**row._mapping) if row is not None else None


async def update_policy(session: AsyncSession, policy: Policy) -> None:
    values = asdict(policy)
    for immutable in ("policy_id", "asset", "create_time_us"):
        del values[immutable]
    result = await session.execute(
        update(policies)
        .where(policies.c.policy_id == policy.policy_id, policies.c.version == policy.version - 1)
        .values(**values)
    )
    assert getattr(result, "rowcount", 0) == 1, policy.policy_id


async def list_policies(
    session: AsyncSession, *, chain: str, after: str, limit: int, enabled_only: bool = False
) -> list[Policy]:
    """Policies ordered by asset id."""
    query = select(policies)
    if chain:
        query = query.where(policies.c.asset.startswith(f"{chain}:", autoescape=True))
    if after:
        query = query.where(policies.c.asset > after)
    if enabled_only:
        query = query.where(policies.c.enabled.is_(True))
    rows = await session.execute(query.order_by(policies.c.asset).limit(limit))
    return [Policy(**row._mapping) for row in rows]


async def insert_plan(session: AsyncSession, plan: Plan) -> None:
    values = asdict(plan)
    values.update(kind=int(plan.kind), state=int(plan.state))
    await session.execute(insert(plans).values(**values))


async def plan_by_id(session: AsyncSession, plan_id: str, *, lock: bool = False) -> Plan | None:
    query = select(plans).where(plans.c.plan_id == plan_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _plan_of(row) if row is not None else None


async def proposed_plans(session: AsyncSession, policy_id: str) -> list[Plan]:
    """The PROPOSED plans of a policy (at most one while plans are only made through the evaluator)."""
    rows = await session.execute(
        select(plans).where(plans.c.policy_id == policy_id, plans.c.state == int(PlanState.PROPOSED))
    )
    return [_plan_of(row) for row in rows]


async def update_plan(session: AsyncSession, plan: Plan, previous: PlanState) -> None:
    result = await session.execute(
        update(plans)
        .where(plans.c.plan_id == plan.plan_id, plans.c.state == int(previous))
        .values(
            state=int(plan.state),
            movement_id=plan.movement_id,
            decided_by=plan.decided_by,
            note=plan.note,
            decide_time_us=plan.decide_time_us,
        )
    )
    assert getattr(result, "rowcount", 0) == 1, plan.plan_id


async def list_plans(
    session: AsyncSession, *, state: int, kind: int, policy_id: str, after: tuple[int, str] | None, limit: int
) -> list[Plan]:
    """Plans newest first."""
    query = select(plans)
    if state:
        query = query.where(plans.c.state == state)
    if kind:
        query = query.where(plans.c.kind == kind)
    if policy_id:
        query = query.where(plans.c.policy_id == policy_id)
    if after is not None:
        query = query.where(tuple_(plans.c.create_time_us, plans.c.plan_id) < tuple_(*after))
    order = (plans.c.create_time_us.desc(), plans.c.plan_id.desc())
    return [_plan_of(row) for row in await session.execute(query.order_by(*order).limit(limit))]


async def movements_in_flight(session: AsyncSession, policy_id: str) -> int:
    """Movements of a policy's accepted plans that have not ended yet."""
    ended = [int(state) for state in TERMINAL_MOVEMENT_STATES]
    query = (
        select(func.count())
        .select_from(movements.join(plans, plans.c.plan_id == movements.c.plan_id))
        .where(plans.c.policy_id == policy_id, movements.c.state.not_in(ended))
    )
    return int((await session.execute(query)).scalar_one())


async def signed_by_request(session: AsyncSession, request_id: str) -> bool:
    """Whether a signature was granted to this request id."""
    query = select(records.c.record_id).where(
        records.c.request_id == request_id, records.c.outcome == int(Outcome.GRANTED)
    )
    return (await session.execute(query.limit(1))).first() is not None


watch_registrations = Table(
    "custody_watch_registrations",
    metadata,
    Column("wallet_id", String(36), primary_key=True),
    Column("chain", String(32), primary_key=True),
    Column("register_time_us", BigInteger, nullable=False),
)


async def unwatched(session: AsyncSession, limit: int) -> list[tuple[Wallet, str]]:
    """(wallet, chain) of wallets with an address whose chain the gateway was not yet asked to watch."""
    registered = {
        (row.wallet_id, row.chain)
        for row in await session.execute(select(watch_registrations.c.wallet_id, watch_registrations.c.chain))
    }
    rows = await session.execute(
        select(wallets).where(wallets.c.address != "").order_by(wallets.c.create_time_us)
    )
    pending = []
    for row in rows:
        wallet = _wallet_of(row)
        pending += [(wallet, chain) for chain in wallet.chains if (wallet.wallet_id, chain) not in registered]
    return pending[:limit]


async def insert_watch_registration(session: AsyncSession, wallet_id: str, chain: str, now_us: int) -> None:
    await session.execute(
        insert(watch_registrations).values(wallet_id=wallet_id, chain=chain, register_time_us=now_us)
    )
