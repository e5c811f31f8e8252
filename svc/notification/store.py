"""The notification service's tables and queries (SQLAlchemy Core).

Schema (migrations/versions/notification_0001_initial.py):
- notification_deliveries: one row per notification and channel. `dedupe_key` (source event id or
  notification id, and channel) is UNIQUE: the database itself keeps an event to one delivery per
  channel. Template variables are sealed (they may carry amounts and addresses).
- notification_attempts: every attempt to hand a delivery to its provider.
- notification_inbox: the in-app inbox.
- notification_preferences, notification_push_devices, notification_templates.
Times are microseconds since the epoch (BIGINT).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    and_,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

metadata = MetaData()

deliveries = Table(
    "notification_deliveries",
    metadata,
    Column("delivery_id", String(36), primary_key=True),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("notification_id", String(36), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("channel", SmallInteger, nullable=False),
    Column("event_key", String(64), nullable=False),
    Column("category", SmallInteger, nullable=False),
    Column("language", String(35), nullable=False),
    Column("variables", LargeBinary, nullable=False),
    Column("destination_override", String(254), nullable=False),
    Column("template_id", String(36), nullable=False),
    Column("template_version", Integer, nullable=False),
    Column("rendered_language", String(35), nullable=False),
    Column("masked_destination", String(254), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("suppression_reason", SmallInteger, nullable=False),
    Column("source_event_id", String(36), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("provider_message_id", String(255), nullable=False),
    Column("attempt_count", Integer, nullable=False),
    Column("last_error", String(1000), nullable=False),
    Column("next_attempt_time_us", BigInteger, nullable=True),
    Column("lease_until_us", BigInteger, nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
    Column("sent_time_us", BigInteger, nullable=True),
    Column("update_time_us", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
)

attempts = Table(
    "notification_attempts",
    metadata,
    Column("delivery_id", String(36), primary_key=True),
    Column("attempt_number", Integer, primary_key=True),
    Column("start_time_us", BigInteger, nullable=False),
    Column("duration_ms", BigInteger, nullable=False),
    Column("succeeded", Boolean, nullable=False),
    Column("permanent_failure", Boolean, nullable=False),
    Column("detail", String(1000), nullable=False),
)

inbox = Table(
    "notification_inbox",
    metadata,
    Column("inbox_message_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("delivery_id", String(36), nullable=False, unique=True),
    Column("category", SmallInteger, nullable=False),
    Column("title", String(200), nullable=False),
    Column("body", String(20000), nullable=False),
    Column("action_link", String(512), nullable=False),
    Column("event_key", String(64), nullable=False),
    Column("read_time_us", BigInteger, nullable=True),
    Column("create_time_us", BigInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
)

preferences = Table(
    "notification_preferences",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("language", String(35), nullable=False),
    Column("settings", JSON, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
)

push_devices = Table(
    "notification_push_devices",
    metadata,
    Column("push_device_id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("platform", SmallInteger, nullable=False),
    Column("token_sha256", String(64), nullable=False),
    Column("token", LargeBinary, nullable=False),
    Column("token_suffix", String(8), nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("device_name", String(128), nullable=False),
    Column("app_version", String(32), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("last_seen_time_us", BigInteger, nullable=False),
)

templates = Table(
    "notification_templates",
    metadata,
    Column("template_id", String(36), primary_key=True),
    Column("event_key", String(64), nullable=False),
    Column("channel", SmallInteger, nullable=False),
    Column("language", String(35), nullable=False),
    Column("category", SmallInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("subject", String(200), nullable=False),
    Column("body", String(20000), nullable=False),
    Column("html_body", String(100000), nullable=False),
    Column("action_link", String(512), nullable=False),
    Column("variables", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_by", String(128), nullable=False),
    Column("published_by", String(128), nullable=False),
    Column("create_time_us", BigInteger, nullable=False),
    Column("update_time_us", BigInteger, nullable=False),
    Column("publish_time_us", BigInteger, nullable=True),
)


@dataclass
class Delivery:
    delivery_id: str
    dedupe_key: str
    notification_id: str
    user_id: str
    channel: int
    event_key: str
    category: int
    language: str
    variables: bytes
    state: int
    source_event_id: str
    create_time_us: int
    update_time_us: int
    destination_override: str = ""
    template_id: str = ""
    template_version: int = 0
    rendered_language: str = ""
    masked_destination: str = ""
    suppression_reason: int = 0
    provider: str = ""
    provider_message_id: str = ""
    attempt_count: int = 0
    last_error: str = ""
    next_attempt_time_us: int | None = None
    lease_until_us: int | None = None
    sent_time_us: int | None = None
    version: int = 1


@dataclass
class Attempt:
    delivery_id: str
    attempt_number: int
    start_time_us: int
    duration_ms: int
    succeeded: bool
    permanent_failure: bool
    detail: str


@dataclass
class InboxMessage:
    inbox_message_id: str
    user_id: str
    delivery_id: str
    category: int
    title: str
    body: str
    action_link: str
    event_key: str
    create_time_us: int
    expire_time_us: int
    read_time_us: int | None = None


@dataclass
class Preferences:
    user_id: str
    language: str = ""
    settings: list[dict[str, Any]] = field(default_factory=list)
    update_time_us: int = 0


@dataclass
class PushDevice:
    push_device_id: str
    user_id: str
    platform: int
    token_sha256: str
    token: bytes
    token_suffix: str
    device_id: str
    device_name: str
    app_version: str
    create_time_us: int
    last_seen_time_us: int


@dataclass
class Template:
    template_id: str
    event_key: str
    channel: int
    language: str
    category: int
    state: int
    subject: str
    body: str
    html_body: str
    action_link: str
    variables: list[str]
    version: int
    updated_by: str
    create_time_us: int
    update_time_us: int
    published_by: str = ""
    publish_time_us: int | None = None


def _of(kind: type[Any], row: Any) -> Any:
    names = {item.name for item in fields(kind)}
    return kind(**{key: value for key, value in row._mapping.items() if key in names})


def _after(time_column: Any, id_column: Any, after: tuple[int, str] | None) -> Any:
    """The keyset condition "after this (time, id) position" of a newest-first listing."""
    if after is None:
        return true()
    time_us, record_id = after
    return or_(time_column < time_us, and_(time_column == time_us, id_column < record_id))


# -- deliveries --------------------------------------------------------------------------------


async def insert_delivery(session: AsyncSession, record: Delivery) -> None:
    """Adds a delivery; a second one with the same dedupe key raises IntegrityError."""
    await session.execute(insert(deliveries).values(**asdict(record)))


async def update_delivery(session: AsyncSession, record: Delivery) -> bool:
    """Writes a changed delivery (version + 1) unless another writer changed it first."""
    record.version += 1
    result = await session.execute(
        update(deliveries)
        .where(deliveries.c.delivery_id == record.delivery_id, deliveries.c.version == record.version - 1)
        .values(**asdict(record))
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def delivery(session: AsyncSession, delivery_id: str, *, lock: bool = False) -> Delivery | None:
    query = select(deliveries).where(deliveries.c.delivery_id == delivery_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _of(Delivery, row) if row is not None else None


async def deliveries_by_dedupe(session: AsyncSession, keys: Sequence[str]) -> list[Delivery]:
    rows = await session.execute(
        select(deliveries).where(deliveries.c.dedupe_key.in_(list(keys))).order_by(deliveries.c.channel)
    )
    return [_of(Delivery, row) for row in rows]


async def due_deliveries(session: AsyncSession, now_us: int, limit: int, *, locking: bool) -> list[Delivery]:
    """PENDING and RETRY_SCHEDULED deliveries whose time has come, oldest first."""
    query = (
        select(deliveries)
        .where(deliveries.c.state.in_([1, 3]), deliveries.c.next_attempt_time_us <= now_us)
        .order_by(deliveries.c.next_attempt_time_us, deliveries.c.delivery_id)
        .limit(limit)
    )
    rows = await session.execute(query.with_for_update(skip_locked=True) if locking else query)
    return [_of(Delivery, row) for row in rows]


async def abandoned_deliveries(session: AsyncSession, now_us: int, limit: int) -> list[Delivery]:
    """SENDING deliveries whose worker's lease ran out (it stopped while sending)."""
    rows = await session.execute(
        select(deliveries)
        .where(deliveries.c.state == 2, deliveries.c.lease_until_us < now_us)
        .order_by(deliveries.c.lease_until_us)
        .limit(limit)
    )
    return [_of(Delivery, row) for row in rows]


async def list_deliveries(
    session: AsyncSession,
    *,
    limit: int,
    user_id: str = "",
    channel: int = 0,
    states: Sequence[int] = (),
    event_key: str = "",
    source_event_id: str = "",
    from_us: int | None = None,
    to_us: int | None = None,
    after: tuple[int, str] | None = None,
) -> tuple[list[Delivery], int]:
    """Deliveries newest first after a page position, and how many match the filters in all."""
    conditions = []
    if user_id:
        conditions.append(deliveries.c.user_id == user_id)
    if channel:
        conditions.append(deliveries.c.channel == channel)
    if states:
        conditions.append(deliveries.c.state.in_(list(states)))
    if event_key:
        conditions.append(deliveries.c.event_key == event_key)
    if source_event_id:
        conditions.append(deliveries.c.source_event_id == source_event_id)
    if from_us is not None:
        conditions.append(deliveries.c.create_time_us >= from_us)
    if to_us is not None:
        conditions.append(deliveries.c.create_time_us < to_us)
    total = await session.scalar(select(func.count()).select_from(deliveries).where(true(), *conditions))
    rows = await session.execute(
        select(deliveries)
        .where(_after(deliveries.c.create_time_us, deliveries.c.delivery_id, after), *conditions)
        .order_by(deliveries.c.create_time_us.desc(), deliveries.c.delivery_id.desc())
        .limit(limit)
    )
    return [_of(Delivery, row) for row in rows], int(total or 0)


async def insert_attempt(session: AsyncSession, record: Attempt) -> None:
    await session.execute(insert(attempts).values(**asdict(record)))


async def attempts_of(session: AsyncSession, delivery_id: str) -> list[Attempt]:
    rows = await session.execute(
        select(attempts).where(attempts.c.delivery_id == delivery_id).order_by(attempts.c.attempt_number)
    )
    return [_of(Attempt, row) for row in rows]


# -- inbox -------------------------------------------------------------------------------------


async def insert_inbox_message(session: AsyncSession, record: InboxMessage) -> None:
    await session.execute(insert(inbox).values(**asdict(record)))


async def list_inbox(
    session: AsyncSession,
    user_id: str,
    *,
    limit: int,
    now_us: int,
    unread_only: bool = False,
    category: int = 0,
    after: tuple[int, str] | None = None,
) -> list[InboxMessage]:
    query = select(inbox).where(
        inbox.c.user_id == user_id,
        inbox.c.expire_time_us > now_us,
        _after(inbox.c.create_time_us, inbox.c.inbox_message_id, after),
    )
    if unread_only:
        query = query.where(inbox.c.read_time_us.is_(None))
    if category:
        query = query.where(inbox.c.category == category)
    rows = await session.execute(
        query.order_by(inbox.c.create_time_us.desc(), inbox.c.inbox_message_id.desc()).limit(limit)
    )
    return [_of(InboxMessage, row) for row in rows]


async def unread_counts(
    session: AsyncSession, user_id: str, now_us: int
) -> tuple[dict[int, int], int | None]:
    """Unread messages per category, and the newest message's creation time."""
    rows = await session.execute(
        select(inbox.c.category, func.count())
        .where(inbox.c.user_id == user_id, inbox.c.read_time_us.is_(None), inbox.c.expire_time_us > now_us)
        .group_by(inbox.c.category)
    )
    latest = await session.scalar(
        select(func.max(inbox.c.create_time_us)).where(
            inbox.c.user_id == user_id, inbox.c.expire_time_us > now_us
        )
    )
    return {int(category): int(count) for category, count in rows}, latest


async def mark_read(
    session: AsyncSession, user_id: str, now_us: int, *, ids: Sequence[str] = (), up_to_us: int | None = None
) -> int:
    """Marks unread messages of the user read: the listed ones, or every one created up to a time."""
    query = update(inbox).where(inbox.c.user_id == user_id, inbox.c.read_time_us.is_(None))
    if up_to_us is not None:
        query = query.where(inbox.c.create_time_us <= up_to_us)
    else:
        query = query.where(inbox.c.inbox_message_id.in_(list(ids)))
    result = await session.execute(query.values(read_time_us=now_us))
    return int(getattr(result, "rowcount", 0) or 0)


# -- preferences and devices -------------------------------------------------------------------


async def preferences_of(session: AsyncSession, user_id: str) -> Preferences:
    row = (await session.execute(select(preferences).where(preferences.c.user_id == user_id))).first()
    return _of(Preferences, row) if row is not None else Preferences(user_id=user_id)


async def save_preferences(session: AsyncSession, record: Preferences) -> None:
    result = await session.execute(
        update(preferences).where(preferences.c.user_id == record.user_id).values(**asdict(record))
    )
    if not getattr(result, "rowcount", 0):
        await session.execute(insert(preferences).values(**asdict(record)))


async def devices_of(session: AsyncSession, user_id: str) -> list[PushDevice]:
    rows = await session.execute(
        select(push_devices)
        .where(push_devices.c.user_id == user_id)
        .order_by(push_devices.c.create_time_us, push_devices.c.push_device_id)
    )
    return [_of(PushDevice, row) for row in rows]


async def insert_device(session: AsyncSession, record: PushDevice) -> None:
    await session.execute(insert(push_devices).values(**asdict(record)))


async def touch_device(session: AsyncSession, record: PushDevice) -> None:
    await session.execute(
        update(push_devices)
        .where(push_devices.c.push_device_id == record.push_device_id)
        .values(**asdict(record))
    )


async def delete_device(session: AsyncSession, user_id: str, push_device_id: str) -> bool:
    result = await session.execute(
        push_devices.delete().where(
            push_devices.c.user_id == user_id, push_devices.c.push_device_id == push_device_id
        )
    )
    return bool(getattr(result, "rowcount", 0))


# -- templates ---------------------------------------------------------------------------------


async def insert_template(session: AsyncSession, record: Template) -> None:
    await session.execute(insert(templates).values(**asdict(record)))


async def update_template(session: AsyncSession, record: Template) -> None:
    await session.execute(
        update(templates).where(templates.c.template_id == record.template_id).values(**asdict(record))
    )


async def template(session: AsyncSession, template_id: str, *, lock: bool = False) -> Template | None:
    query = select(templates).where(templates.c.template_id == template_id)
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    return _of(Template, row) if row is not None else None


async def active_template(
    session: AsyncSession, event_key: str, channel: int, language: str
) -> Template | None:
    row = (
        await session.execute(
            select(templates).where(
                templates.c.event_key == event_key,
                templates.c.channel == channel,
                templates.c.language == language,
                templates.c.state == 2,
            )
        )
    ).first()
    return _of(Template, row) if row is not None else None


async def newest_version(session: AsyncSession, event_key: str, channel: int, language: str) -> int:
    found = await session.scalar(
        select(func.max(templates.c.version)).where(
            templates.c.event_key == event_key,
            templates.c.channel == channel,
            templates.c.language == language,
        )
    )
    return int(found or 0)


async def list_templates(
    session: AsyncSession,
    *,
    limit: int,
    event_key: str = "",
    channel: int = 0,
    language: str = "",
    states: Sequence[int] = (),
    after: tuple[str, str] | None = None,
) -> list[Template]:
    """Templates ordered by (event key, id)."""
    query = select(templates)
    if event_key:
        query = query.where(templates.c.event_key == event_key)
    if channel:
        query = query.where(templates.c.channel == channel)
    if language:
        query = query.where(templates.c.language == language)
    if states:
        query = query.where(templates.c.state.in_(list(states)))
    if after is not None:
        key, template_id = after
        query = query.where(
            or_(
                templates.c.event_key > key,
                and_(templates.c.event_key == key, templates.c.template_id > template_id),
            )
        )
    rows = await session.execute(query.order_by(templates.c.event_key, templates.c.template_id).limit(limit))
    return [_of(Template, row) for row in rows]
