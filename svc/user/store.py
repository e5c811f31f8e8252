"""The user service's tables and queries (SQLAlchemy Core).

Schema (migrations/versions/user_0001_initial.py):
- user_users: one row per user. `email_key`/`phone_key` hold the login identifiers of users that
  are not CLOSED and are unique, so that uniqueness "among users that are not closed" is a
  database constraint (two concurrent registrations cannot both win); closing clears them and
  keeps `email`/`phone` for the record. `reasons` is the comma-wrapped list of freeze reasons in
  force (`,4,6,`), searchable with LIKE.
- user_status_changes: every status change and every freeze reason added or lifted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
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

from svc.user.domain import Actor, Profile, Reason, Status, StatusChange, User

metadata = MetaData()

users = Table(
    "user_users",
    metadata,
    Column("user_id", String(36), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("phone", String(16), nullable=False),
    Column("email_key", String(254), nullable=True, unique=True),
    Column("phone_key", String(16), nullable=True, unique=True),
    Column("email_verified", Boolean, nullable=False),
    Column("phone_verified", Boolean, nullable=False),
    Column("display_name", String(64), nullable=False),
    Column("language", String(35), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("country_of_residence", String(2), nullable=False),
    Column("marketing_consent", Boolean, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("reasons", String(64), nullable=False),
    Column("accepted_terms_version", String(32), nullable=False),
    Column("referrer_user_id", String(36), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("close_time_us", BigInteger, nullable=True),
    Column("version", BigInteger, nullable=False),
    Column("pending_email", String(254), nullable=False),
    Column("pending_phone", String(16), nullable=False),
)

status_changes = Table(
    "user_status_changes",
    metadata,
    Column("change_id", String(36), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("previous_status", SmallInteger, nullable=False),
    Column("new_status", SmallInteger, nullable=False),
    Column("reason", SmallInteger, nullable=False),
    Column("note", String(2000), nullable=False),
    Column("actor_type", SmallInteger, nullable=False),
    Column("actor_id", String(128), nullable=False),
    Column("approval_id", String(128), nullable=False),
    Column("change_time_us", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
)


def _reasons_text(reasons: Sequence[Reason]) -> str:
    return "," + "".join(f"{int(reason)}," for reason in reasons) if reasons else ""


def _reasons_of(text: str) -> tuple[Reason, ...]:
    return tuple(Reason(int(part)) for part in text.strip(",").split(",") if part)


def _user_of(row: Any) -> User:
    values = dict(row._mapping)
    profile = Profile(**{name: values.pop(name) for name in Profile.__dataclass_fields__})
    values.pop("email_key")
    values.pop("phone_key")
    values["status"] = Status(values["status"])
    values["reasons"] = _reasons_of(values["reasons"])
    return User(profile=profile, **values)


def _user_values(user: User) -> dict[str, Any]:
    open_record = user.status is not Status.CLOSED
    return {
        "email": user.email,
        "phone": user.phone,
        "email_key": user.email if user.email and open_record else None,
        "phone_key": user.phone if user.phone and open_record else None,
        "email_verified": user.email_verified,
        "phone_verified": user.phone_verified,
        "display_name": user.profile.display_name,
        "language": user.profile.language,
        "time_zone": user.profile.time_zone,
        "country_of_residence": user.profile.country_of_residence,
        "marketing_consent": user.profile.marketing_consent,
        "status": int(user.status),
        "reasons": _reasons_text(user.reasons),
        "update_time_us": user.update_time_us,
        "close_time_us": user.close_time_us,
        "version": user.version,
        "pending_email": user.pending_email,
        "pending_phone": user.pending_phone,
    }


async def insert_user(session: AsyncSession, user: User) -> None:
    """Adds a user; a taken identifier raises IntegrityError (the unique keys)."""
    await session.execute(
        insert(users).values(
            user_id=user.user_id,
            accepted_terms_version=user.accepted_terms_version,
            referrer_user_id=user.referrer_user_id,
            create_time_us=user.create_time_us,
            **_user_values(user),
        )
    )


async def update_user(session: AsyncSession, user: User) -> None:
    """Writes a changed user whose row the caller locked; the version must advance by one."""
    result = await session.execute(
        update(users)
        .where(users.c.user_id == user.user_id, users.c.version == user.version - 1)
        .values(**_user_values(user))
    )
    assert getattr(result, "rowcount", 0) == 1, user


async def user_by_id(session: AsyncSession, user_id: str, *, lock: bool = False) -> User | None:
    """One user, locked FOR UPDATE when asked (PostgreSQL; SQLite holds the database lock)."""
    query = select(users).where(users.c.user_id == user_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _user_of(row) if row is not None else None


async def users_by_id(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, User]:
    """The users of these ids that exist."""
    rows = await session.execute(select(users).where(users.c.user_id.in_(sorted(set(user_ids)))))
    return {row.user_id: _user_of(row) for row in rows}


async def user_by_identifier(session: AsyncSession, *, email: str = "", phone: str = "") -> User | None:
    """The user that is not CLOSED holding this (normalised) email or phone."""
    column = users.c.email_key if email else users.c.phone_key
    row = (await session.execute(select(users).where(column == (email or phone)))).first()
    return _user_of(row) if row is not None else None


async def search_users(
    session: AsyncSession,
    *,
    query: str,
    statuses: Sequence[Status],
    reason: Reason | None,
    country: str,
    create_from_us: int | None,
    create_to_us: int | None,
    ascending: bool,
    after: tuple[int, str] | None,
    limit: int,
) -> list[User]:
    """Users matching every filter, ordered by (create time, id) in the direction asked."""
    statement = select(users)
    if query:
        statement = statement.where(
            or_(
                users.c.user_id == query,
                users.c.email.startswith(query.lower(), autoescape=True),
                users.c.phone.startswith(query, autoescape=True),
            )
        )
    if statuses:
        statement = statement.where(users.c.status.in_([int(status) for status in statuses]))
    if reason is not None:
        statement = statement.where(users.c.reasons.contains(f",{int(reason)},", autoescape=True))
    if country:
        statement = statement.where(users.c.country_of_residence == country)
    if create_from_us is not None:
        statement = statement.where(users.c.create_time_us >= create_from_us)
    if create_to_us is not None:
        statement = statement.where(users.c.create_time_us < create_to_us)
    key = tuple_(users.c.create_time_us, users.c.user_id)
    if after is not None:
        statement = statement.where(key > tuple_(*after) if ascending else key < tuple_(*after))
    order = (
        (users.c.create_time_us, users.c.user_id)
        if ascending
        else (users.c.create_time_us.desc(), users.c.user_id.desc())
    )
    return [_user_of(row) for row in await session.execute(statement.order_by(*order).limit(limit))]


async def insert_status_change(session: AsyncSession, change: StatusChange) -> None:
    """Adds one status change."""
    await session.execute(
        insert(status_changes).values(
            change_id=change.change_id,
            user_id=change.user_id,
            previous_status=int(change.previous_status),
            new_status=int(change.new_status),
            reason=int(change.reason),
            note=change.note,
            actor_type=int(change.actor_type),
            actor_id=change.actor_id,
            approval_id=change.approval_id,
            change_time_us=change.change_time_us,
            version=change.version,
        )
    )


async def list_status_changes(
    session: AsyncSession, user_id: str, *, before_version: int | None, limit: int
) -> list[StatusChange]:
    """A user's status changes, newest first (by the user version each produced)."""
    statement = select(status_changes).where(status_changes.c.user_id == user_id)
    if before_version is not None:
        statement = statement.where(status_changes.c.version < before_version)
    rows = await session.execute(statement.order_by(status_changes.c.version.desc()).limit(limit))
    return [
        StatusChange(
            change_id=row.change_id,
            user_id=row.user_id,
            previous_status=Status(row.previous_status),
            new_status=Status(row.new_status),
            reason=Reason(row.reason),
            note=row.note,
            actor_type=Actor(row.actor_type),
            actor_id=row.actor_id,
            approval_id=row.approval_id,
            change_time_us=row.change_time_us,
            version=row.version,
        )
        for row in rows
    ]
