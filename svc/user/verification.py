"""Contact verification codes: six digits, one live code per user and channel, valid
CODE_TTL_US, stored as a SHA-256 bound to the user, channel and destination (the code itself only
travels to the notification service, as a sensitive variable), voided after FAILURES_MAX wrong
tries; at most one send per channel every RESEND_INTERVAL_US and SENDS_PER_DAY_MAX a day."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from typing import Any

import grpc
from finmesh.notification.v1 import notification_resources_pb2 as notification_resources
from finmesh.notification.v1 import notification_service_pb2 as notification_service
from finmesh.notification.v1 import notification_service_pb2_grpc as notification_grpc
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    SmallInteger,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import errors, remote
from svc.kit.client import as_service
from svc.user.domain import Channel
from svc.user.store import metadata

S_US = 1_000_000
CODE_TTL_US = 10 * 60 * S_US
RESEND_INTERVAL_US = 60 * S_US
DAY_US = 86_400 * S_US
SENDS_PER_DAY_MAX = 10
FAILURES_MAX = 5
SEND_TIMEOUT_S = 10.0
EVENT_KEYS = {Channel.EMAIL: "user.verify_email", Channel.PHONE: "user.verify_phone"}

codes = Table(
    "user_verification_codes",
    metadata,
    Column("user_id", String(36), primary_key=True),
    Column("channel", SmallInteger, primary_key=True),
    Column("destination", String(254), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("send_time_us", BigInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("day_start_us", BigInteger, nullable=False),
    Column("day_count", Integer, nullable=False),
)


class RateLimited(errors.DomainError):
    """Codes asked for too often; `retry_after_s` says when the next one may be."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, metadata={"retry_after_s": str(retry_after_s)})


@dataclass(frozen=True)
class Code:
    user_id: str
    channel: int
    destination: str
    code_hash: str
    send_time_us: int
    expire_time_us: int
    failures: int
    day_start_us: int
    day_count: int


def new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def code_hash(user_id: str, channel: Channel, destination: str, code: str) -> str:
    return hashlib.sha256(f"{user_id}\x00{int(channel)}\x00{destination}\x00{code}".encode()).hexdigest()


def issue(
    previous: Code | None, user_id: str, channel: Channel, destination: str, code: str, now_us: int
) -> Code:
    """The code record of a new send; RATE_LIMITED inside the resend interval or past the day's."""
    day_start, day_count = now_us, 0
    if previous is not None:
        if now_us < previous.send_time_us + RESEND_INTERVAL_US:
            wait_s = (previous.send_time_us + RESEND_INTERVAL_US - now_us) // S_US + 1
            raise RateLimited("a code was sent less than a minute ago", retry_after_s=int(wait_s))
        if now_us < previous.day_start_us + DAY_US:
            day_start, day_count = previous.day_start_us, previous.day_count
            if day_count >= SENDS_PER_DAY_MAX:
                wait_s = (previous.day_start_us + DAY_US - now_us) // S_US + 1
                raise RateLimited("at most 10 codes a day per channel", retry_after_s=int(wait_s))
    return Code(
        user_id=user_id,
        channel=int(channel),
        destination=destination,
        code_hash=code_hash(user_id, channel, destination, code),
        send_time_us=now_us,
        expire_time_us=now_us + CODE_TTL_US,
        failures=0,
        day_start_us=day_start,
        day_count=day_count + 1,
    )


def check(
    record: Code | None, user_id: str, channel: Channel, code: str, now_us: int
) -> tuple[bool, Code | None]:
    """(whether `code` is right, the record to keep: a wrong try counted, None once voided)."""
    if record is None or record.failures >= FAILURES_MAX or now_us >= record.expire_time_us:
        return False, record
    expected = code_hash(user_id, channel, record.destination, code)
    if hmac.compare_digest(expected, record.code_hash):
        return True, replace(record, failures=FAILURES_MAX)  # spent
    return False, replace(record, failures=record.failures + 1)


async def code_of(session: AsyncSession, user_id: str, channel: Channel) -> Code | None:
    query = select(codes).where(codes.c.user_id == user_id, codes.c.channel == int(channel)).with_for_update()
    row = (await session.execute(query)).first()
    return Code(**dict(row._mapping)) if row is not None else None


async def save(session: AsyncSession, record: Code, *, new: bool) -> None:
    values: dict[str, Any] = dict(record.__dict__)
    if new:
        await session.execute(
            delete(codes).where(codes.c.user_id == record.user_id, codes.c.channel == record.channel)
        )
        await session.execute(insert(codes).values(**values))
    else:
        await session.execute(
            update(codes)
            .where(codes.c.user_id == record.user_id, codes.c.channel == record.channel)
            .values(**values)
        )


class CodeSender:
    """Sends codes through the notification service's SendNotification, as the user service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = notification_grpc.NotificationServiceStub(channel)

    async def send(
        self, request_id: str, user_id: str, channel: Channel, destination: str, code: str
    ) -> None:
        by_phone = channel is Channel.PHONE
        request = notification_service.SendNotificationRequest(
            request_id=request_id,
            user_id=user_id,
            event_key=EVENT_KEYS[channel],
            category=notification_resources.CATEGORY_SECURITY,
            variables={"code": code},
            sensitive_variables=["code"],
            channels=[
                notification_resources.CHANNEL_SMS if by_phone else notification_resources.CHANNEL_EMAIL
            ],
            destination_override=destination,
            priority=notification_service.PRIORITY_HIGH,
        )
        try:
            with as_service():
                await self._stub.SendNotification(request, timeout=SEND_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "notification") from None
