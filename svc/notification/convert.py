"""Translation between the notification service's records and the contract's messages."""

from __future__ import annotations

from collections.abc import Sequence

from finmesh.notification.v1 import notification_resources_pb2 as resources
from google.protobuf import timestamp_pb2

from svc.notification import domain, store
from svc.notification.domain import Category, Channel


def timestamp(time_us: int | None) -> timestamp_pb2.Timestamp | None:
    if time_us is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(time_us)
    return stamp


def delivery_message(record: store.Delivery, attempts: Sequence[store.Attempt] = ()) -> resources.Delivery:
    message = resources.Delivery(
        delivery_id=record.delivery_id,
        notification_id=record.notification_id,
        user_id=record.user_id,
        channel=record.channel,  # type: ignore[arg-type]
        event_key=record.event_key,
        category=record.category,  # type: ignore[arg-type]
        template_id=record.template_id,
        template_version=record.template_version,
        language=record.rendered_language,
        masked_destination=record.masked_destination,
        state=record.state,  # type: ignore[arg-type]
        suppression_reason=record.suppression_reason,  # type: ignore[arg-type]
        source_event_id=record.source_event_id,
        provider=record.provider,
        provider_message_id=record.provider_message_id,
        attempt_count=record.attempt_count,
        next_attempt_time=timestamp(record.next_attempt_time_us)
        if record.state == domain.DeliveryState.RETRY_SCHEDULED
        else None,
        create_time=timestamp(record.create_time_us),
        sent_time=timestamp(record.sent_time_us),
        update_time=timestamp(record.update_time_us),
    )
    for attempt in attempts:
        message.attempts.append(
            resources.DeliveryAttempt(
                attempt_number=attempt.attempt_number,
                start_time=timestamp(attempt.start_time_us),
                duration_ms=attempt.duration_ms,
                succeeded=attempt.succeeded,
                permanent_failure=attempt.permanent_failure,
                detail=attempt.detail,
            )
        )
    return message


def inbox_message(record: store.InboxMessage) -> resources.InboxMessage:
    return resources.InboxMessage(
        inbox_message_id=record.inbox_message_id,
        category=record.category,  # type: ignore[arg-type]
        title=record.title,
        body=record.body,
        action_link=record.action_link,
        read=record.read_time_us is not None,
        read_time=timestamp(record.read_time_us),
        create_time=timestamp(record.create_time_us),
        expire_time=timestamp(record.expire_time_us),
        event_key=record.event_key,
    )


def preferences_message(record: store.Preferences) -> resources.NotificationPreferences:
    """Every (category, channel) pair with its effective setting."""
    settings = {
        (int(item["category"]), int(item["channel"])): bool(item["enabled"]) for item in record.settings
    }
    return resources.NotificationPreferences(
        user_id=record.user_id,
        language=record.language,
        settings=[
            resources.PreferenceSetting(
                category=int(category),  # type: ignore[arg-type]
                channel=int(channel),  # type: ignore[arg-type]
                enabled=domain.enabled(settings, category, channel),
                mandatory=(category, channel) in domain.MANDATORY,
            )
            for category in Category
            for channel in Channel
        ],
        update_time=timestamp(record.update_time_us or None),
    )


def device_message(record: store.PushDevice) -> resources.PushDevice:
    return resources.PushDevice(
        push_device_id=record.push_device_id,
        platform=record.platform,  # type: ignore[arg-type]
        token_suffix=record.token_suffix,
        device_id=record.device_id,
        device_name=record.device_name,
        app_version=record.app_version,
        create_time=timestamp(record.create_time_us),
        last_seen_time=timestamp(record.last_seen_time_us),
    )


def template_message(record: store.Template) -> resources.Template:
    return resources.Template(
        template_id=record.template_id,
        event_key=record.event_key,
        channel=record.channel,  # type: ignore[arg-type]
        language=record.language,
        category=record.category,  # type: ignore[arg-type]
        state=record.state,  # type: ignore[arg-type]
        subject=record.subject,
        body=record.body,
        html_body=record.html_body,
        action_link=record.action_link,
        variables=record.variables,
        version=record.version,
        updated_by=record.updated_by,
        published_by=record.published_by,
        create_time=timestamp(record.create_time_us),
        update_time=timestamp(record.update_time_us),
        publish_time=timestamp(record.publish_time_us),
    )
