"""Password reset codes: a 256-bit random code per request, mailed (or texted) through the
notification service's SendNotification and stored only as its SHA-256, valid RESET_TTL_US and
spent by its first use, which voids every other open code of the user. At most
RESETS_PER_HOUR_MAX codes per user an hour; requests beyond that are answered alike and send
nothing."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc
from finmesh.notification.v1 import notification_resources_pb2 as notification_resources
from finmesh.notification.v1 import notification_service_pb2 as notification_service
from finmesh.notification.v1 import notification_service_pb2_grpc as notification_grpc
from sqlalchemy import BigInteger, Column, String, Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from svc.auth.store import metadata
from svc.kit.client import as_service

log = logging.getLogger(__name__)

RESET_TTL_US = 30 * 60 * 1_000_000
RESETS_PER_HOUR_MAX = 3
HOUR_US = 3_600 * 1_000_000
CODE_PREFIX = "fmr_"
EVENT_KEY = "auth.password_reset"
SEND_TIMEOUT_S = 10.0

resets = Table(
    "auth_password_resets",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", String(36), nullable=False),
    Column("ip", String(45), nullable=False),
    Column("request_time_us", BigInteger, nullable=False),
    Column("expire_time_us", BigInteger, nullable=False),
    Column("use_time_us", BigInteger, nullable=True),
)


@dataclass(frozen=True)
class Reset:
    token_hash: str
    user_id: str
    ip: str
    request_time_us: int
    expire_time_us: int
    use_time_us: int | None

    def usable(self, now_us: int) -> bool:
        return self.use_time_us is None and now_us < self.expire_time_us


async def recent_count(session: AsyncSession, user_id: str, now_us: int) -> int:
    """Codes issued to the user in the last hour."""
    query = select(func.count()).where(
        resets.c.user_id == user_id, resets.c.request_time_us > now_us - HOUR_US
    )
    return int((await session.execute(query)).scalar_one())


async def insert_reset(session: AsyncSession, token_hash: str, user_id: str, ip: str, now_us: int) -> None:
    await session.execute(
        insert(resets).values(
            token_hash=token_hash,
            user_id=user_id,
            ip=ip,
            request_time_us=now_us,
            expire_time_us=now_us + RESET_TTL_US,
            use_time_us=None,
        )
    )


async def reset_by_hash(session: AsyncSession, token_hash: str) -> Reset | None:
    query = select(resets).where(resets.c.token_hash == token_hash).with_for_update()
    row = (await session.execute(query)).first()
    return Reset(**dict(row._mapping)) if row is not None else None


async def spend(session: AsyncSession, user_id: str, now_us: int) -> None:
    """Marks every open code of the user used: the one presented and any other still out."""
    await session.execute(
        update(resets)
        .where(resets.c.user_id == user_id, resets.c.use_time_us.is_(None))
        .values(use_time_us=now_us)
    )


async def delete_finished(session: AsyncSession, before_us: int, limit: int) -> int:
    """Deletes up to `limit` codes that expired before `before_us` (used or not); how many."""
    doomed = select(resets.c.token_hash).where(resets.c.expire_time_us < before_us).limit(limit)
    hashes = [row.token_hash for row in await session.execute(doomed)]
    if hashes:
        await session.execute(delete(resets).where(resets.c.token_hash.in_(hashes)))
    return len(hashes)


class ResetNotices:
    """Sends reset codes through the notification service, as the auth service, in the background:
    the answer to RequestPasswordReset must not wait on (or time) whether a code went out."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = notification_grpc.NotificationServiceStub(channel)
        self._pending: set[asyncio.Task[None]] = set()

    def send(self, request_id: str, user_id: str, code: str, by_phone: bool) -> None:
        channel = notification_resources.CHANNEL_SMS if by_phone else notification_resources.CHANNEL_EMAIL
        request = notification_service.SendNotificationRequest(
            request_id=request_id,
            user_id=user_id,
            event_key=EVENT_KEY,
            category=notification_resources.CATEGORY_SECURITY,
            variables={"code": code},
            sensitive_variables=["code"],
            channels=[channel],
            priority=notification_service.PRIORITY_HIGH,
        )
        task = asyncio.create_task(self._send(request), name="auth-password-reset-notice")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, request: notification_service.SendNotificationRequest) -> None:
        try:
            with as_service():
                await self._stub.SendNotification(request, timeout=SEND_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            # The user asks again; the code stays unusable without the message.
            log.warning("password reset code for %s not sent: %s", request.user_id, error.code().name)

    async def drain(self) -> None:
        """Waits for the sends in flight (at stop)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
