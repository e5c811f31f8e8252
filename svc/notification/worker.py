"""The delivery worker: hands due deliveries to their providers, retries with backoff, dead-letters.

At most once per event and channel: a delivery is claimed (SENDING, with a lease) in a
committed transaction before its provider is called, and only a claimed delivery is sent. If the
worker stops between the provider's acceptance and recording it, the lease runs out and the
delivery is dead-lettered as "outcome unknown" for an operator to look at, never sent again on its
own. On PostgreSQL several workers (replicas) claim with FOR UPDATE SKIP LOCKED; on SQLite the
write lock taken at BEGIN serialises claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping

from finmesh.events.v1 import notification_events_pb2 as notification_events
from google.protobuf import timestamp_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.db import Database
from svc.kit.sealing import Sealer
from svc.notification import deliveries, domain, events, store
from svc.notification.channels import DeliveryFailure, Provider, Rendered
from svc.notification.contacts import Contact, ContactDirectory
from svc.notification.domain import Channel, DeliveryState, RetryPolicy, Suppression

log = logging.getLogger(__name__)

CLAIM_BATCH_MAX = 20
LEASE_MS = 60_000
POLL_INTERVAL_MS = 200
INBOX_RETENTION_DAYS = 365
# Registration mail goes to the address just given: it is how the address gets verified.
# Sent to the login identifier even before it is verified: the welcome, and a password reset code
# (which only the holder of the identifier can read, and which is how they get back in).
UNVERIFIED_CONTACT_EVENTS = frozenset({"user.registered", "auth.password_reset"})
INTERRUPTED = "interrupted while sending: the provider may or may not have the message"


def _now_us() -> int:
    return time.time_ns() // 1000


def _timestamp(time_us: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(time_us)
    return stamp


class Suppressed(Exception):
    def __init__(self, reason: Suppression) -> None:
        super().__init__(reason.name)
        self.reason = reason


class DeliveryWorker:
    """Claims due deliveries and sends them, in the background or one round at a time."""

    def __init__(
        self,
        database: Database,
        sealer: Sealer,
        directory: ContactDirectory,
        providers: Mapping[Channel, Provider],
        *,
        policy: RetryPolicy,
        poll_interval_ms: int = POLL_INTERVAL_MS,
        lease_ms: int = LEASE_MS,
    ) -> None:
        self.database = database
        self.sealer = sealer
        self.directory = directory
        self.providers = providers
        self.policy = policy
        self.poll_interval_ms = poll_interval_ms
        self.lease_ms = lease_ms
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- running ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notification-worker")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def notify(self) -> None:
        """Wakes the worker now (a delivery was just created or rescheduled)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                handled = await self.run_once()
            except Exception as error:  # the next round retries; nothing is lost, rows stay due
                log.warning("notification worker round failed: %r", error)
                handled = 0
            if handled == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval_ms / 1000)

    async def run_once(self) -> int:
        """Dead-letters abandoned sends, then claims and sends one batch; returns how many."""
        await self._sweep_abandoned()
        claimed = await self._claim()
        for record in claimed:
            await self._deliver(record)
        return len(claimed)

    # -- claiming --------------------------------------------------------------------------------

    async def _claim(self) -> list[store.Delivery]:
        now_us = _now_us()
        claimed = []
        async with self.database.transaction() as session:
            due = await store.due_deliveries(
                session, now_us, CLAIM_BATCH_MAX, locking=self.database.dialect == "postgresql"
            )
            for record in due:
                domain.require_transition(
                    DeliveryState(record.state), DeliveryState.SENDING, record.delivery_id
                )
                record.state = int(DeliveryState.SENDING)
                record.lease_until_us = now_us + self.lease_ms * 1000
                record.update_time_us = now_us
                if await store.update_delivery(session, record):
                    claimed.append(record)
        return claimed

    async def _sweep_abandoned(self) -> None:
        async with self.database.transaction() as session:
            for record in await store.abandoned_deliveries(session, _now_us(), CLAIM_BATCH_MAX):
                await self._dead_letter(session, record, INTERRUPTED)
                await store.update_delivery(session, record)

    # -- sending ---------------------------------------------------------------------------------

    async def _deliver(self, record: store.Delivery) -> None:
        started_us = _now_us()
        try:
            rendered, template = await self._render(record)
            if record.channel == Channel.IN_APP:
                await self._finish_inbox(record, rendered, template, started_us)
                return
            provider = self.providers[Channel(record.channel)]
            provider_message_id = await provider.send(rendered)
        except Suppressed as suppressed:
            async with self.database.transaction() as session:
                await deliveries.suppress(session, record, suppressed.reason)
                await store.update_delivery(session, record)
            return
        except DeliveryFailure as failure:
            await self._fail(record, failure, started_us)
            return
        except domain.MissingVariables as missing:
            await self._fail(record, DeliveryFailure(missing.message, permanent=True), started_us)
            return
        await self._finish(record, provider.name, provider_message_id, template, started_us)

    async def _destination(self, record: store.Delivery, contact: Contact) -> str:
        channel = Channel(record.channel)
        if channel is Channel.EMAIL:
            if record.destination_override:
                return record.destination_override
            if contact.email and (contact.email_verified or record.event_key in UNVERIFIED_CONTACT_EVENTS):
                return contact.email
            raise Suppressed(Suppression.NO_CONTACT)
        if channel is Channel.SMS:
            if record.destination_override:
                return record.destination_override
            if contact.phone and (contact.phone_verified or record.event_key in UNVERIFIED_CONTACT_EVENTS):
                return contact.phone
            raise Suppressed(Suppression.NO_CONTACT)
        if channel is Channel.PUSH:
            async with self.database.transaction() as session:
                devices = await store.devices_of(session, record.user_id)
            if not devices:
                raise Suppressed(Suppression.NO_DEVICE)
            # The most recently registered device; a user's other devices see it in the inbox.
            newest = devices[-1]
            return self.sealer.open(
                newest.token, aad=deliveries.push_token_aad(newest.push_device_id)
            ).decode()
        return record.user_id

    async def _render(self, record: store.Delivery) -> tuple[Rendered, store.Template]:
        contact = await self.directory.contact(record.user_id)
        if contact.closed:
            raise Suppressed(Suppression.USER_CLOSED)
        destination = await self._destination(record, contact)
        async with self.database.transaction() as session:
            preferences = await store.preferences_of(session, record.user_id)
            language = preferences.language or record.language or contact.language or "en"
            template = None
            for candidate in domain.languages(language):
                template = await store.active_template(session, record.event_key, record.channel, candidate)
                if template is not None:
                    break
        if template is None:
            raise Suppressed(Suppression.NO_TEMPLATE)
        variables = deliveries.open_variables(self.sealer, record)
        rendered = Rendered(
            delivery_id=record.delivery_id,
            destination=destination,
            subject=domain.render(template.subject, variables),
            body=domain.render(template.body, variables),
            html_body=domain.render(template.html_body, variables, escape=True),
            action_link=domain.render(template.action_link, variables),
        )
        record.masked_destination = domain.mask(Channel(record.channel), destination)
        return rendered, template

    def _attempt(
        self, record: store.Delivery, started_us: int, *, ok: bool, permanent: bool, detail: str
    ) -> store.Attempt:
        record.attempt_count += 1
        return store.Attempt(
            delivery_id=record.delivery_id,
            attempt_number=record.attempt_count,
            start_time_us=started_us,
            duration_ms=max(0, (_now_us() - started_us) // 1000),
            succeeded=ok,
            permanent_failure=permanent,
            detail=detail[:1000],
        )

    def _applied(self, record: store.Delivery, template: store.Template) -> None:
        record.template_id = template.template_id
        record.template_version = template.version
        record.rendered_language = template.language

    async def _finish(
        self,
        record: store.Delivery,
        provider: str,
        provider_message_id: str,
        template: store.Template,
        started_us: int,
    ) -> None:
        async with self.database.transaction() as session:
            attempt = self._attempt(record, started_us, ok=True, permanent=False, detail="accepted")
            await self._sent(session, record, provider, provider_message_id, template, attempt)

    async def _sent(
        self,
        session: AsyncSession,
        record: store.Delivery,
        provider: str,
        provider_message_id: str,
        template: store.Template,
        attempt: store.Attempt,
    ) -> None:
        domain.require_transition(DeliveryState(record.state), DeliveryState.SENT, record.delivery_id)
        now_us = _now_us()
        self._applied(record, template)
        record.state = int(DeliveryState.SENT)
        record.provider = provider
        record.provider_message_id = provider_message_id
        record.sent_time_us = record.update_time_us = now_us
        record.lease_until_us = record.next_attempt_time_us = None
        record.last_error = ""
        deliveries.erase_secrets(self.sealer, record)
        await store.insert_attempt(session, attempt)
        assert await store.update_delivery(session, record), "a claimed delivery changed under its lease"
        await events.publish(
            session,
            notification_events.NotificationDeliverySent(
                meta=events.delivery_meta(record.delivery_id, record.version),
                delivery_id=record.delivery_id,
                notification_id=record.notification_id,
                user_id=record.user_id,
                channel=record.channel,  # type: ignore[arg-type]
                event_key=record.event_key,
                source_event_id=record.source_event_id,
                provider=provider,
                attempt_count=record.attempt_count,
            ),
        )

    async def _finish_inbox(
        self, record: store.Delivery, rendered: Rendered, template: store.Template, started_us: int
    ) -> None:
        """The in-app channel's provider is the inbox table, written with the delivery's SENT."""
        now_us = _now_us()
        message = store.InboxMessage(
            inbox_message_id=str(uuid.uuid4()),
            user_id=record.user_id,
            delivery_id=record.delivery_id,
            category=record.category,
            title=rendered.subject,
            body=rendered.body,
            action_link=rendered.action_link,
            event_key=record.event_key,
            create_time_us=now_us,
            expire_time_us=now_us + INBOX_RETENTION_DAYS * 86_400_000_000,
        )
        async with self.database.transaction() as session:
            await store.insert_inbox_message(session, message)
            attempt = self._attempt(
                record, started_us, ok=True, permanent=False, detail="stored in the inbox"
            )
            await self._sent(session, record, "inbox", message.inbox_message_id, template, attempt)
            counts, _ = await store.unread_counts(session, record.user_id, now_us)
            await events.publish(
                session,
                notification_events.InboxMessageCreated(
                    meta=events.inbox_meta(message.inbox_message_id),
                    inbox_message_id=message.inbox_message_id,
                    user_id=record.user_id,
                    category=record.category,  # type: ignore[arg-type]
                    event_key=record.event_key,
                    unread_count=sum(counts.values()),
                ),
            )

    async def _fail(self, record: store.Delivery, failure: DeliveryFailure, started_us: int) -> None:
        async with self.database.transaction() as session:
            attempt = self._attempt(
                record, started_us, ok=False, permanent=failure.permanent, detail=failure.detail
            )
            await store.insert_attempt(session, attempt)
            record.last_error = failure.detail
            record.lease_until_us = None
            record.update_time_us = _now_us()
            give_up = failure.permanent or record.attempt_count >= self.policy.attempts_max
            failed = notification_events.NotificationDeliveryFailed(
                meta=events.delivery_meta(record.delivery_id, record.version + 1),
                delivery_id=record.delivery_id,
                user_id=record.user_id,
                channel=record.channel,  # type: ignore[arg-type]
                event_key=record.event_key,
                attempt_number=record.attempt_count,
                permanent=failure.permanent,
                detail=failure.detail,
            )
            if give_up:
                await events.publish(session, failed)
                await self._dead_letter(session, record, failure.detail)
            else:
                domain.require_transition(
                    DeliveryState(record.state), DeliveryState.RETRY_SCHEDULED, record.delivery_id
                )
                record.state = int(DeliveryState.RETRY_SCHEDULED)
                record.next_attempt_time_us = (
                    record.update_time_us + self.policy.backoff_ms(record.attempt_count) * 1000
                )
                failed.next_attempt_time.CopyFrom(_timestamp(record.next_attempt_time_us))
                await events.publish(session, failed)
            assert await store.update_delivery(session, record), "a claimed delivery changed under its lease"
        if not give_up:
            log.info(
                "delivery failed, retry scheduled",
                extra={"fields": {"delivery_id": record.delivery_id, "attempt": record.attempt_count}},
            )

    async def _dead_letter(self, session: AsyncSession, record: store.Delivery, detail: str) -> None:
        """SENDING -> DEAD_LETTERED (the caller writes the record), with its event."""
        domain.require_transition(
            DeliveryState(record.state), DeliveryState.DEAD_LETTERED, record.delivery_id
        )
        record.state = int(DeliveryState.DEAD_LETTERED)
        record.last_error = detail[:1000]
        record.lease_until_us = record.next_attempt_time_us = None
        record.update_time_us = _now_us()
        await events.publish(
            session,
            notification_events.NotificationDeliveryDeadLettered(
                meta=events.delivery_meta(record.delivery_id, record.version + 1),
                delivery_id=record.delivery_id,
                user_id=record.user_id,
                channel=record.channel,  # type: ignore[arg-type]
                event_key=record.event_key,
                source_event_id=record.source_event_id,
                attempt_count=record.attempt_count,
                last_error=record.last_error,
            ),
        )
        log.error(
            "delivery dead-lettered",
            extra={"fields": {"delivery_id": record.delivery_id, "attempts": record.attempt_count}},
        )
