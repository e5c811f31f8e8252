"""NotificationService: translates the contract's messages to deliveries, the inbox, preferences,
devices and templates; one transaction per operation, idempotent by request_id.

End users reach their own preferences, devices and inbox; services send notifications; staff
read deliveries and work the dead-letter queue; operators edit and publish templates.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from finmesh.events.v1 import notification_events_pb2 as notification_events
from finmesh.notification.v1 import notification_service_pb2 as service
from finmesh.notification.v1 import notification_service_pb2_grpc as service_grpc
from google.protobuf.message import Message
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import errors, idempotency, paging, principals
from svc.kit.db import Database
from svc.kit.sealing import Sealer
from svc.notification import convert, deliveries, domain, events, store
from svc.notification.domain import Category, Channel, DeliveryState, TemplateState
from svc.notification.events import Notice
from svc.notification.templates import BUILTINS, Builtin, Text

SERVICE = "/finmesh.notification.v1.NotificationService/"
READER_ROLES = frozenset({"support", "operator", "approver", "admin", "auditor"})
OPERATOR_ROLES = frozenset({"operator", "admin"})
TEMPLATE_FIELDS = frozenset({"subject", "body", "html_body", "action_link", "category"})
NOTIFICATION_ID_NAMESPACE = uuid.UUID("0f4b7f7e-96a6-4c8e-8f5d-2b8a7e1c9d33")
VERIFICATION_EVENT_PREFIX = "user.verify_"
PUSH_TOKEN_SUFFIX_CHARS = 8


def _now_us() -> int:
    return time.time_ns() // 1000


def _violation(field: str, description: str) -> errors.InvalidArgument:
    return errors.InvalidArgument([errors.FieldViolation(field, description)])


class NotificationServicer(service_grpc.NotificationServiceServicer):
    """The notification service's gRPC surface over its store and the delivery worker."""

    def __init__(
        self,
        database: Database,
        sealer: Sealer,
        available: Sequence[Channel],
        wake_worker: Callable[[], None],
    ) -> None:
        self.database = database
        self.sealer = sealer
        self.available = tuple(available)
        self.wake_worker = wake_worker

    async def _once(self, method: str, request: Message, response_type: type[Any], work: Any) -> Any:
        return await idempotency.run_once(self.database, SERVICE + method, request, response_type, work)

    # -- preferences -----------------------------------------------------------------------------

    async def GetNotificationPreferences(
        self, request: service.GetNotificationPreferencesRequest, context: Any
    ) -> Any:
        user = principals.require_end_user()
        async with self.database.transaction() as session:
            found = await store.preferences_of(session, user.subject)
        return service.GetNotificationPreferencesResponse(preferences=convert.preferences_message(found))

    async def UpdateNotificationPreferences(
        self, request: service.UpdateNotificationPreferencesRequest, context: Any
    ) -> Any:
        user = principals.require_end_user()
        paths = set(request.update_mask.paths)
        if not paths or not paths <= {"language", "settings"}:
            raise _violation("update_mask", "name `language` and/or `settings`")
        seen: set[tuple[int, int]] = set()
        for index, setting in enumerate(request.preferences.settings):
            pair = (int(setting.category), int(setting.channel))
            if pair in seen:
                raise _violation(f"preferences.settings[{index}]", "this category and channel are set twice")
            seen.add(pair)
            if (
                Category(setting.category),
                Channel(setting.channel),
            ) in domain.MANDATORY and not setting.enabled:
                raise _violation(
                    f"preferences.settings[{index}]", "security notices cannot be switched off here"
                )

        async def work(session: AsyncSession) -> service.UpdateNotificationPreferencesResponse:
            found = await store.preferences_of(session, user.subject)
            if "language" in paths:
                found.language = request.preferences.language
            if "settings" in paths:
                found.settings = [
                    {"category": int(item.category), "channel": int(item.channel), "enabled": item.enabled}
                    for item in request.preferences.settings
                ]
            found.update_time_us = _now_us()
            await store.save_preferences(session, found)
            return service.UpdateNotificationPreferencesResponse(
                preferences=convert.preferences_message(found)
            )

        return await self._once(
            "UpdateNotificationPreferences", request, service.UpdateNotificationPreferencesResponse, work
        )

    # -- push devices ----------------------------------------------------------------------------

    async def RegisterPushDevice(self, request: service.RegisterPushDeviceRequest, context: Any) -> Any:
        user = principals.require_end_user()
        token_sha256 = hashlib.sha256(request.push_token.encode()).hexdigest()

        async def work(session: AsyncSession) -> service.RegisterPushDeviceResponse:
            now_us = _now_us()
            for device in await store.devices_of(session, user.subject):
                if device.token_sha256 == token_sha256:
                    device.last_seen_time_us = now_us
                    device.device_name = request.device_name or device.device_name
                    device.app_version = request.app_version or device.app_version
                    await store.touch_device(session, device)
                    return service.RegisterPushDeviceResponse(push_device=convert.device_message(device))
            push_device_id = str(uuid.uuid4())
            device = store.PushDevice(
                push_device_id=push_device_id,
                user_id=user.subject,
                platform=int(request.platform),
                token_sha256=token_sha256,
                token=self.sealer.seal(
                    request.push_token.encode(), aad=deliveries.push_token_aad(push_device_id)
                ),
                token_suffix=request.push_token[-PUSH_TOKEN_SUFFIX_CHARS:],
                device_id=request.device_id,
                device_name=request.device_name,
                app_version=request.app_version,
                create_time_us=now_us,
                last_seen_time_us=now_us,
            )
            await store.insert_device(session, device)
            return service.RegisterPushDeviceResponse(push_device=convert.device_message(device))

        return await self._once("RegisterPushDevice", request, service.RegisterPushDeviceResponse, work)

    async def ListPushDevices(self, request: service.ListPushDevicesRequest, context: Any) -> Any:
        user = principals.require_end_user()
        limit = paging.page_size(request.page_size)
        position = paging.position(request.page_token, "offset")
        offset = int(position[0]) if position else 0
        async with self.database.transaction() as session:
            found = (await store.devices_of(session, user.subject))[offset:]
        response = service.ListPushDevicesResponse(
            push_devices=[convert.device_message(device) for device in found[:limit]]
        )
        if len(found) > limit:
            response.next_page_token = paging.encode_token({"offset": offset + limit})
        return response

    async def DeletePushDevice(self, request: service.DeletePushDeviceRequest, context: Any) -> Any:
        user = principals.require_end_user()

        async def work(session: AsyncSession) -> service.DeletePushDeviceResponse:
            if not await store.delete_device(session, user.subject, request.push_device_id):
                raise errors.NotFound(
                    f"no push device {request.push_device_id}",
                    metadata={"push_device_id": request.push_device_id},
                )
            return service.DeletePushDeviceResponse()

        return await self._once("DeletePushDevice", request, service.DeletePushDeviceResponse, work)

    # -- inbox -----------------------------------------------------------------------------------

    async def ListInboxMessages(self, request: service.ListInboxMessagesRequest, context: Any) -> Any:
        user = principals.require_end_user()
        limit = paging.page_size(request.page_size)
        after = paging.position(request.page_token, "create_time_us", "inbox_message_id")
        async with self.database.transaction() as session:
            found = await store.list_inbox(
                session,
                user.subject,
                limit=limit + 1,
                now_us=_now_us(),
                unread_only=request.unread_only,
                category=int(request.category),
                after=after,
            )
        return service.ListInboxMessagesResponse(
            inbox_messages=[convert.inbox_message(message) for message in found[:limit]],
            next_page_token=paging.next_token(found, limit, "create_time_us", "inbox_message_id"),
        )

    async def GetInboxSummary(self, request: service.GetInboxSummaryRequest, context: Any) -> Any:
        user = principals.require_end_user()
        async with self.database.transaction() as session:
            counts, latest = await store.unread_counts(session, user.subject, _now_us())
        return service.GetInboxSummaryResponse(
            unread_count=sum(counts.values()),
            by_category=[
                service.CategoryCount(category=category, unread_count=count)  # type: ignore[arg-type]
                for category, count in sorted(counts.items())
            ],
            latest_create_time=convert.timestamp(latest),
        )

    async def MarkInboxMessagesRead(self, request: service.MarkInboxMessagesReadRequest, context: Any) -> Any:
        user = principals.require_end_user()

        async def work(session: AsyncSession) -> service.MarkInboxMessagesReadResponse:
            now_us = _now_us()
            if request.WhichOneof("selection") == "up_to_time":
                marked = await store.mark_read(
                    session, user.subject, now_us, up_to_us=request.up_to_time.ToMicroseconds()
                )
            else:
                marked = await store.mark_read(
                    session, user.subject, now_us, ids=list(request.ids.inbox_message_ids)
                )
            counts, _ = await store.unread_counts(session, user.subject, now_us)
            return service.MarkInboxMessagesReadResponse(
                marked_count=marked, unread_count=sum(counts.values())
            )

        return await self._once("MarkInboxMessagesRead", request, service.MarkInboxMessagesReadResponse, work)

    # -- sending ---------------------------------------------------------------------------------

    async def SendNotification(self, request: service.SendNotificationRequest, context: Any) -> Any:
        if principals.end_user() is not None:
            raise errors.PermissionDenied("notifications are sent by services, not by end users")
        if request.destination_override and not request.event_key.startswith(VERIFICATION_EVENT_PREFIX):
            raise _violation(
                "destination_override", "only contact verification messages go to another address"
            )
        missing = [name for name in request.sensitive_variables if name not in request.variables]
        if missing:
            raise _violation("sensitive_variables", "names variables not given: " + ", ".join(missing))
        builtin = BUILTINS.get(request.event_key)
        channels = [Channel(channel) for channel in request.channels] or (
            list(builtin.channels) if builtin is not None else list(self.available)
        )
        notice = Notice(
            request.user_id,
            request.event_key,
            Category(request.category),
            tuple(channels),
            dict(request.variables),
        )
        notification_id = str(uuid.uuid5(NOTIFICATION_ID_NAMESPACE, request.request_id))

        async def work(session: AsyncSession) -> service.SendNotificationResponse:
            made = await deliveries.create(
                session,
                self.sealer,
                notice,
                available=self.available,
                notification_id=notification_id,
                source_event_id=request.source_event_id,
                destination_override=request.destination_override,
                sensitive=list(request.sensitive_variables),
            )
            return service.SendNotificationResponse(
                notification_id=made[0].notification_id if made else notification_id,
                deliveries=[convert.delivery_message(record) for record in made],
            )

        response = await self._once("SendNotification", request, service.SendNotificationResponse, work)
        self.wake_worker()
        return response

    # -- deliveries and dead letters -------------------------------------------------------------

    async def ListDeliveries(self, request: service.ListDeliveriesRequest, context: Any) -> Any:
        principals.require_roles(READER_ROLES, "reading deliveries")
        limit = paging.page_size(request.page_size)
        after = paging.position(request.page_token, "create_time_us", "delivery_id")
        async with self.database.transaction() as session:
            found, total = await store.list_deliveries(
                session,
                limit=limit + 1,
                user_id=request.user_id,
                channel=int(request.channel),
                states=list(request.states),
                event_key=request.event_key,
                source_event_id=request.source_event_id,
                from_us=request.create_time_from.ToMicroseconds()
                if request.HasField("create_time_from")
                else None,
                to_us=request.create_time_to.ToMicroseconds() if request.HasField("create_time_to") else None,
                after=after,
            )
        return service.ListDeliveriesResponse(
            deliveries=[convert.delivery_message(record) for record in found[:limit]],
            next_page_token=paging.next_token(found, limit, "create_time_us", "delivery_id"),
            total_size=total,
        )

    async def _delivery(
        self, session: AsyncSession, delivery_id: str, *, lock: bool = False
    ) -> store.Delivery:
        found = await store.delivery(session, delivery_id, lock=lock)
        if found is None:
            raise errors.NotFound(f"no delivery {delivery_id}", metadata={"delivery_id": delivery_id})
        return found

    async def GetDelivery(self, request: service.GetDeliveryRequest, context: Any) -> Any:
        principals.require_roles(READER_ROLES, "reading a delivery")
        async with self.database.transaction() as session:
            found = await self._delivery(session, request.delivery_id)
            attempts = await store.attempts_of(session, found.delivery_id)
        return service.GetDeliveryResponse(delivery=convert.delivery_message(found, attempts))

    async def RetryDelivery(self, request: service.RetryDeliveryRequest, context: Any) -> Any:
        """DEAD_LETTERED -> PENDING: one more attempt now (the operator removed the cause)."""
        principals.require_roles(OPERATOR_ROLES, "retrying a dead letter")

        async def work(session: AsyncSession) -> service.RetryDeliveryResponse:
            found = await self._delivery(session, request.delivery_id, lock=True)
            domain.require_transition(DeliveryState(found.state), DeliveryState.PENDING, found.delivery_id)
            found.state = int(DeliveryState.PENDING)
            found.next_attempt_time_us = found.update_time_us = _now_us()
            await store.update_delivery(session, found)
            return service.RetryDeliveryResponse(delivery=convert.delivery_message(found))

        response = await self._once("RetryDelivery", request, service.RetryDeliveryResponse, work)
        self.wake_worker()
        return response

    async def DiscardDelivery(self, request: service.DiscardDeliveryRequest, context: Any) -> Any:
        principals.require_roles(OPERATOR_ROLES, "discarding a dead letter")

        async def work(session: AsyncSession) -> service.DiscardDeliveryResponse:
            found = await self._delivery(session, request.delivery_id, lock=True)
            domain.require_transition(DeliveryState(found.state), DeliveryState.DISCARDED, found.delivery_id)
            found.state = int(DeliveryState.DISCARDED)
            found.last_error = request.note
            found.update_time_us = _now_us()
            deliveries.erase_secrets(self.sealer, found)
            await store.update_delivery(session, found)
            return service.DiscardDeliveryResponse(delivery=convert.delivery_message(found))

        return await self._once("DiscardDelivery", request, service.DiscardDeliveryResponse, work)

    # -- templates -------------------------------------------------------------------------------

    async def _template(
        self, session: AsyncSession, template_id: str, *, lock: bool = False
    ) -> store.Template:
        found = await store.template(session, template_id, lock=lock)
        if found is None:
            raise errors.NotFound(f"no template {template_id}", metadata={"template_id": template_id})
        return found

    @staticmethod
    def _check_texts(record: store.Template) -> None:
        if not record.body:
            raise _violation("template.body", "a template has a body")
        if record.channel == Channel.SMS and record.subject:
            raise _violation("template.subject", "an SMS has no subject")
        if record.channel != Channel.EMAIL and record.html_body:
            raise _violation("template.html_body", "only email has an HTML body")
        if record.channel != Channel.SMS and not record.subject:
            raise _violation("template.subject", "email, push and inbox messages have a subject")
        record.variables = domain.variables_of(
            record.subject, record.body, record.html_body, record.action_link
        )

    async def CreateTemplate(self, request: service.CreateTemplateRequest, context: Any) -> Any:
        staff = principals.require_roles(OPERATOR_ROLES, "editing templates")
        given = request.template
        if not given.event_key:
            raise _violation("template.event_key", "required")
        if not given.channel:
            raise _violation("template.channel", "required")
        if not given.category:
            raise _violation("template.category", "required")

        async def work(session: AsyncSession) -> service.CreateTemplateResponse:
            language = given.language or "en"
            now_us = _now_us()
            record = store.Template(
                template_id=str(uuid.uuid4()),
                event_key=given.event_key,
                channel=int(given.channel),
                language=language,
                category=int(given.category),
                state=int(TemplateState.DRAFT),
                subject=given.subject,
                body=given.body,
                html_body=given.html_body,
                action_link=given.action_link,
                variables=[],
                version=await store.newest_version(session, given.event_key, int(given.channel), language)
                + 1,
                updated_by=staff.subject,
                create_time_us=now_us,
                update_time_us=now_us,
            )
            self._check_texts(record)
            await store.insert_template(session, record)
            return service.CreateTemplateResponse(template=convert.template_message(record))

        return await self._once("CreateTemplate", request, service.CreateTemplateResponse, work)

    async def GetTemplate(self, request: service.GetTemplateRequest, context: Any) -> Any:
        principals.require_roles(READER_ROLES, "reading templates")
        async with self.database.transaction() as session:
            return service.GetTemplateResponse(
                template=convert.template_message(await self._template(session, request.template_id))
            )

    async def ListTemplates(self, request: service.ListTemplatesRequest, context: Any) -> Any:
        principals.require_roles(READER_ROLES, "reading templates")
        limit = paging.page_size(request.page_size)
        after = paging.position(request.page_token, "event_key", "template_id")
        async with self.database.transaction() as session:
            found = await store.list_templates(
                session,
                limit=limit + 1,
                event_key=request.event_key,
                channel=int(request.channel),
                language=request.language,
                states=list(request.states),
                after=after,
            )
        return service.ListTemplatesResponse(
            templates=[convert.template_message(record) for record in found[:limit]],
            next_page_token=paging.next_token(found, limit, "event_key", "template_id"),
        )

    async def UpdateTemplate(self, request: service.UpdateTemplateRequest, context: Any) -> Any:
        staff = principals.require_roles(OPERATOR_ROLES, "editing templates")
        paths = set(request.update_mask.paths)
        if not paths or not paths <= TEMPLATE_FIELDS:
            raise _violation("update_mask", "name fields among " + ", ".join(sorted(TEMPLATE_FIELDS)))

        async def work(session: AsyncSession) -> service.UpdateTemplateResponse:
            record = await self._template(session, request.template.template_id, lock=True)
            if record.state != TemplateState.DRAFT:
                raise errors.InvalidState(
                    "only a DRAFT template can change: create a new draft",
                    metadata={"template_id": record.template_id},
                )
            for name in paths:
                value = getattr(request.template, name)
                setattr(record, name, int(value) if name == "category" else value)
            record.updated_by = staff.subject
            record.update_time_us = _now_us()
            self._check_texts(record)
            await store.update_template(session, record)
            return service.UpdateTemplateResponse(template=convert.template_message(record))

        return await self._once("UpdateTemplate", request, service.UpdateTemplateResponse, work)

    async def PublishTemplate(self, request: service.PublishTemplateRequest, context: Any) -> Any:
        staff = principals.require_roles(OPERATOR_ROLES, "publishing templates")

        async def work(session: AsyncSession) -> service.PublishTemplateResponse:
            record = await self._template(session, request.template_id, lock=True)
            response = service.PublishTemplateResponse()
            archived = await publish(session, record, staff.subject)
            if archived is not None:
                response.archived_template.CopyFrom(convert.template_message(archived))
            response.template.CopyFrom(convert.template_message(record))
            return response

        return await self._once("PublishTemplate", request, service.PublishTemplateResponse, work)

    async def ArchiveTemplate(self, request: service.ArchiveTemplateRequest, context: Any) -> Any:
        staff = principals.require_roles(OPERATOR_ROLES, "archiving templates")

        async def work(session: AsyncSession) -> service.ArchiveTemplateResponse:
            record = await self._template(session, request.template_id, lock=True)
            domain.require_template_transition(
                TemplateState(record.state), TemplateState.ARCHIVED, record.template_id
            )
            record.state = int(TemplateState.ARCHIVED)
            record.updated_by = staff.subject
            record.update_time_us = _now_us()
            await store.update_template(session, record)
            return service.ArchiveTemplateResponse(template=convert.template_message(record))

        return await self._once("ArchiveTemplate", request, service.ArchiveTemplateResponse, work)

    async def RenderTemplate(self, request: service.RenderTemplateRequest, context: Any) -> Any:
        principals.require_roles(READER_ROLES, "previewing templates")
        async with self.database.transaction() as session:
            record = await self._template(session, request.template_id)
        variables = dict(request.variables)
        missing = [name for name in record.variables if name not in variables]
        preview = {**variables, **{name: "{{" + name + "}}" for name in missing}}
        return service.RenderTemplateResponse(
            subject=domain.render(record.subject, preview),
            body=domain.render(record.body, preview),
            html_body=domain.render(record.html_body, preview, escape=True),
            action_link=domain.render(record.action_link, preview),
            missing_variables=missing,
        )


async def publish(session: AsyncSession, record: store.Template, published_by: str) -> store.Template | None:
    """DRAFT -> ACTIVE; the ACTIVE template of its event, channel and language -> ARCHIVED (returned)."""
    domain.require_template_transition(TemplateState(record.state), TemplateState.ACTIVE, record.template_id)
    now_us = _now_us()
    archived = await store.active_template(session, record.event_key, record.channel, record.language)
    if archived is not None:
        archived.state = int(TemplateState.ARCHIVED)
        archived.update_time_us = now_us
        await store.update_template(session, archived)
    record.state = int(TemplateState.ACTIVE)
    record.published_by = published_by
    record.publish_time_us = record.update_time_us = now_us
    await store.update_template(session, record)
    await events.publish(
        session,
        notification_events.NotificationTemplatePublished(
            meta=events.template_meta(record.template_id, record.version),
            template_id=record.template_id,
            event_key=record.event_key,
            channel=record.channel,  # type: ignore[arg-type]
            language=record.language,
            version=record.version,
            published_by=published_by,
            archived_template_id=archived.template_id if archived is not None else "",
        ),
    )
    return archived


async def seed_builtins(database: Database) -> int:
    """Publishes the built-in templates where no template of that event, channel and language
    exists yet; returns how many. Safe to run on every start and from several replicas."""
    seeded = 0
    for event_key, builtin in BUILTINS.items():
        for language, text in builtin.texts.items():
            for channel in builtin.channels:
                try:
                    seeded += await _seed(database, event_key, builtin, language, text, channel)
                except IntegrityError:
                    continue  # another replica seeded it first
    return seeded


async def _seed(
    database: Database, event_key: str, builtin: Builtin, language: str, text: Text, channel: Channel
) -> int:
    async with database.transaction() as session:
        if await store.newest_version(session, event_key, int(channel), language):
            return 0
        now_us = _now_us()
        record = store.Template(
            template_id=str(uuid.uuid5(NOTIFICATION_ID_NAMESPACE, f"{event_key}:{int(channel)}:{language}")),
            event_key=event_key,
            channel=int(channel),
            language=language,
            category=int(builtin.category),
            state=int(TemplateState.DRAFT),
            subject="" if channel is Channel.SMS else text.subject,
            body=text.body,
            html_body=f"<p>{text.body}</p>" if channel is Channel.EMAIL else "",
            action_link="" if channel in (Channel.EMAIL, Channel.SMS) else text.action_link,
            variables=[],
            version=1,
            updated_by="builtin",
            create_time_us=now_us,
            update_time_us=now_us,
        )
        record.variables = domain.variables_of(
            record.subject, record.body, record.html_body, record.action_link
        )
        await store.insert_template(session, record)
        await publish(session, record, "builtin")
        return 1
