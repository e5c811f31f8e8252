"""Idempotency keys (AIP-155): a repeated request_id returns the first response, unchanged.

The key is stored in the same transaction as the state change it guards, so that a crash
between "did it" and "remembered it" cannot happen. A repeat with the same key but a
different request is refused: the fingerprint is a hash of the request's deterministic
serialization.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.db import Database
from svc.kit.errors import FieldViolation, IdempotencyKeyReused, InvalidArgument
from svc.kit.tables import idempotency_keys

ResponseT = TypeVar("ResponseT", bound=Message)
PURGE_BATCH_ROWS_MAX = 1000


def fingerprint(request: Message) -> str:
    """SHA-256 of the request's deterministic wire form."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


def request_id_of(request: Message) -> str:
    request_id = getattr(request, "request_id", "")
    if not request_id:
        raise InvalidArgument(
            [FieldViolation("request_id", "a mutating request needs a request_id", "required")]
        )
    return str(request_id)


async def lookup(
    session: AsyncSession, method: str, request: Message, response_type: type[ResponseT]
) -> ResponseT | None:
    """The stored response for this request's key, None if unseen; refuses a reused key."""
    row = (
        await session.execute(
            select(idempotency_keys.c.fingerprint, idempotency_keys.c.response).where(
                idempotency_keys.c.method == method, idempotency_keys.c.request_id == request_id_of(request)
            )
        )
    ).first()
    if row is None:
        return None
    if row.fingerprint != fingerprint(request):
        raise IdempotencyKeyReused(
            "request_id was already used with a different request",
            metadata={"request_id": request_id_of(request), "method": method},
        )
    response = response_type()
    response.ParseFromString(row.response)
    return response


async def record(session: AsyncSession, method: str, request: Message, response: Message) -> None:
    """Remembers the response for this request's key, in the caller's transaction."""
    await session.execute(
        insert(idempotency_keys).values(
            method=method,
            request_id=request_id_of(request),
            fingerprint=fingerprint(request),
            response=response.SerializeToString(deterministic=True),
            created_at=datetime.datetime.now(datetime.UTC),
        )
    )


async def run_once(
    database: Database,
    method: str,
    request: ResponseT | Message,
    response_type: type[ResponseT],
    work: Callable[[AsyncSession], Awaitable[ResponseT]],
) -> ResponseT:
    """Runs `work` and records its response in one transaction, or replays the recorded response.

    Two concurrent requests with one key both may run `work`; only one commits, because the key
    is a primary key: the loser's whole transaction rolls back and it returns the winner's response.
    """
    try:
        async with database.transaction() as session:
            replay = await lookup(session, method, request, response_type)
            if replay is not None:
                return replay
            response = await work(session)
            await record(session, method, request, response)
            return response
    except IntegrityError:
        async with database.transaction() as session:
            replay = await lookup(session, method, request, response_type)
        if replay is None:
            raise
        return replay


async def purge(database: Database, older_than: datetime.datetime) -> int:
    """Deletes keys older than the retention period, at most PURGE_BATCH_ROWS_MAX per call."""
    async with database.transaction() as session:
        keys = (
            await session.execute(
                select(idempotency_keys.c.method, idempotency_keys.c.request_id)
                .where(idempotency_keys.c.created_at < older_than)
                .limit(PURGE_BATCH_ROWS_MAX)
            )
        ).all()
        for method, request_id in keys:
            await session.execute(
                delete(idempotency_keys).where(
                    idempotency_keys.c.method == method, idempotency_keys.c.request_id == request_id
                )
            )
        return len(keys)
