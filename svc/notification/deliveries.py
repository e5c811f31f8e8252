"""Turning a notice into deliveries, one per channel, in the caller's transaction: the consumer's
(together with its inbox row) or SendNotification's (together with its idempotency key).

The dedupe key (source event, or notification, and channel) is unique in the database, so an
event redelivered by the bus, replayed by an operator or also sent through SendNotification never
yields a second delivery on a channel: the existing ones are returned instead.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence

from finmesh.events.v1 import notification_events_pb2 as notification_events
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.sealing import Sealer
from svc.notification import domain, events, store
from svc.notification.domain import Channel, DeliveryState, Suppression
from svc.notification.events import Notice


def _now_us() -> int:
    return time.time_ns() // 1000


def variables_aad(delivery_id: str) -> bytes:
    return b"notification.delivery:" + delivery_id.encode()


def push_token_aad(push_device_id: str) -> bytes:
    return b"notification.push:" + push_device_id.encode()


def seal_variables(
    sealer: Sealer, delivery_id: str, variables: dict[str, str], sensitive: Sequence[str] = ()
) -> bytes:
    """The variables sealed to their delivery, with the names of the secret ones among them."""
    sealed = {"values": variables, "sensitive": sorted(set(sensitive))}
    return sealer.seal(json.dumps(sealed, sort_keys=True).encode(), aad=variables_aad(delivery_id))


def open_variables(sealer: Sealer, record: store.Delivery) -> dict[str, str]:
    opened = json.loads(sealer.open(record.variables, aad=variables_aad(record.delivery_id)))
    values: dict[str, str] = opened["values"]
    return values


def erase_secrets(sealer: Sealer, record: store.Delivery) -> None:
    """Drops the secret variables of a delivery that is final (the caller writes the record)."""
    opened = json.loads(sealer.open(record.variables, aad=variables_aad(record.delivery_id)))
    if opened["sensitive"]:
        kept = {name: value for name, value in opened["values"].items() if name not in opened["sensitive"]}
        record.variables = seal_variables(sealer, record.delivery_id, kept)


def settings_of(preferences: store.Preferences) -> dict[tuple[int, int], bool]:
    return {
        (int(item["category"]), int(item["channel"])): bool(item["enabled"]) for item in preferences.settings
    }


async def suppress(
    session: AsyncSession, record: store.Delivery, reason: Suppression, *, new: bool = False
) -> None:
    """Marks a delivery SUPPRESSED (the caller writes it: a `new` one is inserted at version 1, a
    known one updated to the next version) and publishes why."""
    record.state = int(DeliveryState.SUPPRESSED)
    record.suppression_reason = int(reason)
    record.next_attempt_time_us = None
    record.lease_until_us = None
    record.update_time_us = _now_us()
    await events.publish(
        session,
        notification_events.NotificationDeliverySuppressed(
            meta=events.delivery_meta(record.delivery_id, record.version if new else record.version + 1),
            delivery_id=record.delivery_id,
            user_id=record.user_id,
            channel=record.channel,  # type: ignore[arg-type]
            event_key=record.event_key,
            reason=int(reason),  # type: ignore[arg-type]
        ),
    )


async def create(
    session: AsyncSession,
    sealer: Sealer,
    notice: Notice,
    *,
    available: Sequence[Channel],
    notification_id: str,
    source_event_id: str = "",
    destination_override: str = "",
    sensitive: Sequence[str] = (),
) -> list[store.Delivery]:
    """The deliveries of a notice on the channels it asks for that this deployment has; the
    existing ones if the notice's event (or notification) was already turned into deliveries."""
    channels = [channel for channel in domain.unique(notice.channels) if channel in available]
    origin = source_event_id or notification_id
    keys = [f"{origin}:{int(channel)}" for channel in channels]
    existing = await store.deliveries_by_dedupe(session, keys)
    if existing:
        return existing
    preferences = await store.preferences_of(session, notice.user_id)
    settings = settings_of(preferences)
    devices = await store.devices_of(session, notice.user_id) if Channel.PUSH in channels else []
    now_us = _now_us()
    created = []
    for channel, key in zip(channels, keys, strict=True):
        delivery_id = str(uuid.uuid4())
        record = store.Delivery(
            delivery_id=delivery_id,
            dedupe_key=key,
            notification_id=notification_id,
            user_id=notice.user_id,
            channel=int(channel),
            event_key=notice.event_key,
            category=int(notice.category),
            language=notice.language,
            variables=seal_variables(sealer, delivery_id, notice.variables, sensitive),
            destination_override=destination_override if channel in (Channel.EMAIL, Channel.SMS) else "",
            state=int(DeliveryState.PENDING),
            source_event_id=source_event_id,
            next_attempt_time_us=now_us,
            create_time_us=now_us,
            update_time_us=now_us,
        )
        if not domain.enabled(settings, notice.category, channel):
            await suppress(session, record, Suppression.PREFERENCE, new=True)
        elif channel is Channel.PUSH and not devices:
            await suppress(session, record, Suppression.NO_DEVICE, new=True)
        await store.insert_delivery(session, record)
        created.append(record)
    return created
