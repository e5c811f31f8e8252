"""The consumer's handler: each event users are told about becomes its deliveries, in the
consumer's transaction together with the kit's inbox row (a redelivered event is dropped there,
and the deliveries' dedupe key would refuse it again)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.bus import ReceivedMessage
from svc.kit.outbox import event_meta
from svc.kit.sealing import Sealer
from svc.notification import deliveries
from svc.notification.domain import Channel
from svc.notification.events import notice_of

NOTIFICATION_ID_NAMESPACE = uuid.UUID("5d0b3c59-0b0e-4d43-9a0f-b2b7c0a4c8e1")


class EventIntake:
    """The EventConsumer handler of the notification service."""

    def __init__(self, sealer: Sealer, available: Sequence[Channel], wake_worker: Callable[[], None]) -> None:
        self.sealer = sealer
        self.available = tuple(available)
        self.wake_worker = wake_worker

    async def __call__(self, session: AsyncSession, event: Message, message: ReceivedMessage) -> None:
        notice = notice_of(event)
        if notice is None or not notice.user_id:
            return
        event_id = event_meta(event).event_id
        await deliveries.create(
            session,
            self.sealer,
            notice,
            available=self.available,
            notification_id=str(uuid.uuid5(NOTIFICATION_ID_NAMESPACE, event_id)),
            source_event_id=event_id,
        )
        self.wake_worker()
