"""What the user service publishes, through the outbox in the transaction of each change: one
event per registration, profile change and status change, on `finmesh.user.v1.users` keyed by
the user id. No event carries personal data (no email address, phone number or name)."""

from __future__ import annotations

from finmesh.events.v1 import event_meta_pb2, user_events_pb2
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.outbox import add_event
from svc.user.domain import Channel, StatusChange, User

PRODUCER = "user"
AGGREGATE_TYPE = "user"


def _meta(user: User, causation_id: str) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type=AGGREGATE_TYPE,
        aggregate_id=user.user_id,
        aggregate_version=user.version,
        causation_id=causation_id,
    )


async def publish_registered(session: AsyncSession, user: User, request_id: str) -> None:
    """UserRegistered."""
    event = user_events_pb2.UserRegistered(
        meta=_meta(user, request_id),
        user_id=user.user_id,
        identifier_channel=int(user.channel),  # type: ignore[arg-type]
        language=user.profile.language,
        country_of_residence=user.profile.country_of_residence,
        referrer_user_id=user.referrer_user_id,
        accepted_terms_version=user.accepted_terms_version,
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_profile_updated(
    session: AsyncSession, user: User, fields: list[str], request_id: str
) -> None:
    """UserProfileUpdated."""
    event = user_events_pb2.UserProfileUpdated(
        meta=_meta(user, request_id),
        user_id=user.user_id,
        updated_fields=fields,
        language=user.profile.language,
        marketing_consent=user.profile.marketing_consent,
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_status_changed(
    session: AsyncSession, user: User, change: StatusChange, request_id: str
) -> None:
    """UserStatusChanged, for every status change and every freeze reason added or lifted."""
    event = user_events_pb2.UserStatusChanged(
        meta=_meta(user, request_id),
        user_id=user.user_id,
        previous_status=int(change.previous_status),  # type: ignore[arg-type]
        new_status=int(change.new_status),  # type: ignore[arg-type]
        reason=int(change.reason),  # type: ignore[arg-type]
        active_reasons=[int(reason) for reason in user.reasons],  # type: ignore[misc]
        actor_type=int(change.actor_type),  # type: ignore[arg-type]
        actor_id=change.actor_id,
        approval_id=change.approval_id,
        revoke_sessions=change.revoke_sessions,
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_contact_verified(
    session: AsyncSession, user: User, channel: Channel, replaced: bool, request_id: str
) -> None:
    """UserContactVerified."""
    event = user_events_pb2.UserContactVerified(
        meta=_meta(user, request_id),
        user_id=user.user_id,
        channel=int(channel),  # type: ignore[arg-type]
        replaced_previous=replaced,
    )
    await add_event(session, event, producer=PRODUCER)


async def publish_contact_change_requested(
    session: AsyncSession, user: User, channel: Channel, request_id: str
) -> None:
    """UserContactChangeRequested."""
    event = user_events_pb2.UserContactChangeRequested(
        meta=_meta(user, request_id),
        user_id=user.user_id,
        channel=int(channel),  # type: ignore[arg-type]
    )
    await add_event(session, event, producer=PRODUCER)
