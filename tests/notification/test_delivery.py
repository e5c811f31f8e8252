"""Events become deliveries: one email received by a real SMTP server per event even when the bus
delivers the event again, retries with backoff, dead letters that operators retry or discard."""

from __future__ import annotations

import uuid

import grpc
import pytest
from finmesh.events.v1 import auth_events_pb2, kyc_events_pb2, notification_events_pb2, user_events_pb2
from finmesh.notification.v1 import notification_service_pb2 as service

from tests.harness.calls import eventually, refused
from tests.notification.conftest import ATTEMPTS_MAX, Mesh

EMAIL, SMS, PUSH, IN_APP = 1, 2, 3, 4
SENT, SUPPRESSED, DEAD_LETTERED, DISCARDED, PENDING = 4, 7, 8, 9, 1
NO_CONTACT, NO_DEVICE = 2, 3


def email() -> str:
    return f"n{uuid.uuid4().hex[:10]}@example.com"


async def settled(mesh: Mesh, source_event_id: str, count: int) -> list[object]:
    """The deliveries of an event once `count` exist and none is waiting or being sent."""
    found: list[object] = []

    async def check() -> bool:
        nonlocal found
        found = await mesh.deliveries(source_event_id=source_event_id)
        return len(found) == count and all(d.state not in (1, 2, 3) for d in found)  # type: ignore[attr-defined]

    await eventually(check)
    return found


async def registered_event(mesh: Mesh, user_id: str) -> user_events_pb2.UserRegistered:
    events = await mesh.identity.events(mesh.identity.user_app, user_events_pb2.UserRegistered)
    return next(event for event in events if event.user_id == user_id)


@pytest.mark.embedded
async def test_registration_sends_one_email_even_when_the_event_is_redelivered(mesh: Mesh) -> None:
    await _one_email_per_registration(mesh)


@pytest.mark.kafka
async def test_one_email_per_registration_through_kafka(kafka_mesh: Mesh) -> None:
    """The same over the real broker: UserRegistered leaves the user service's outbox through
    Kafka, the notification service's consumer group reads it, and redeliveries (published to the
    topic again) send nothing more."""
    await _one_email_per_registration(kafka_mesh)


async def _one_email_per_registration(mesh: Mesh) -> None:
    address = email()
    user = await mesh.identity.register(email=address)
    await eventually(lambda: _count(mesh, address, 1))
    received = [m for m in mesh.smtp.received if m.recipients == [address]]
    event = await registered_event(mesh, user.user_id)
    deliveries = await settled(mesh, event.meta.event_id, 2)
    by_channel = {d.channel: d for d in deliveries}  # type: ignore[attr-defined]
    assert by_channel[EMAIL].state == SENT and by_channel[IN_APP].state == SENT
    assert by_channel[EMAIL].masked_destination == address[0] + "***@example.com"
    assert by_channel[EMAIL].provider == "smtp" and by_channel[EMAIL].attempt_count == 1

    message = received[0].message
    assert message["Subject"] == "Welcome to finmesh"
    assert message["Message-ID"] == f"<{by_channel[EMAIL].delivery_id}@notification.finmesh.local>"
    assert "Your finmesh account is ready" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert message.get_body(("html",)) is not None

    # The bus delivers the event again, twice: nothing more is sent.
    await mesh.publish(event)
    await mesh.publish(event)
    again = service.SendNotificationRequest(
        request_id=f"send-{uuid.uuid4().hex}",
        user_id=user.user_id,
        event_key="user.registered",
        category=2,
        source_event_id=event.meta.event_id,
    )
    replayed = await mesh.stub.SendNotification(again)
    assert sorted(d.delivery_id for d in replayed.deliveries) == sorted(d.delivery_id for d in deliveries)  # type: ignore[attr-defined]
    # A later event on the same topic: once it is handled, the repeats before it were too.
    marker = await mesh.identity.register(email=email())
    await settled(mesh, (await registered_event(mesh, marker.user_id)).meta.event_id, 2)
    assert len(await mesh.deliveries(source_event_id=event.meta.event_id)) == 2
    assert [m for m in mesh.smtp.received if m.recipients == [address]] == received[:1]
    sent = [
        e
        for e in await mesh.events(notification_events_pb2.NotificationDeliverySent)
        if e.user_id == user.user_id
    ]
    assert sorted(e.channel for e in sent) == [EMAIL, IN_APP]

    # The welcome is in the inbox; the login that reads it is a new sign-in, told in the inbox.
    me = await mesh.user_token(address)

    async def login_noticed() -> bool:
        listed = await mesh.stub.ListInboxMessages(service.ListInboxMessagesRequest(), metadata=me)
        return {m.event_key for m in listed.inbox_messages} == {"user.registered", "auth.new_login"}

    await eventually(login_noticed)
    logins = await mesh.identity.events(mesh.identity.auth_app, auth_events_pb2.LoginSucceeded)
    login = next(e for e in logins if e.user_id == user.user_id)
    by_channel = {d.channel: d for d in await settled(mesh, login.meta.event_id, 3)}  # type: ignore[attr-defined]
    # The address is not verified yet: only the registration mail may go to it.
    assert by_channel[EMAIL].state == SUPPRESSED and by_channel[EMAIL].suppression_reason == NO_CONTACT
    assert by_channel[PUSH].state == SUPPRESSED and by_channel[PUSH].suppression_reason == NO_DEVICE
    assert SMS not in by_channel  # no SMS provider in this deployment


async def _count(mesh: Mesh, address: str, count: int) -> bool:
    return len([m for m in mesh.smtp.received if m.recipients == [address]]) >= count


async def test_a_failing_channel_retries_with_backoff_then_dead_letters(mesh: Mesh) -> None:
    # Two temporary refusals, then acceptance: one email after three attempts.
    address = email()
    mesh.smtp.refuse_next(address, 2)
    user = await mesh.identity.register(email=address)
    event = await registered_event(mesh, user.user_id)
    by_channel = {d.channel: d for d in await settled(mesh, event.meta.event_id, 2)}  # type: ignore[attr-defined]
    assert by_channel[EMAIL].state == SENT and by_channel[EMAIL].attempt_count == 3
    detail = await mesh.stub.GetDelivery(
        service.GetDeliveryRequest(delivery_id=by_channel[EMAIL].delivery_id), metadata=mesh.admin
    )
    attempts = detail.delivery.attempts
    assert [(a.succeeded, a.permanent_failure) for a in attempts] == [
        (False, False),
        (False, False),
        (True, False),
    ]
    assert attempts[0].detail.startswith("SMTP 451")
    assert (
        attempts[1].start_time.ToMicroseconds() >= attempts[0].start_time.ToMicroseconds() + 10_000
    )  # backoff
    assert len([m for m in mesh.smtp.received if m.recipients == [address]]) == 1

    # Refused on every attempt: dead-lettered after the last one, visible to operators.
    address = email()
    mesh.smtp.refuse_next(address, ATTEMPTS_MAX)
    user = await mesh.identity.register(email=address)
    event = await registered_event(mesh, user.user_id)
    by_channel = {d.channel: d for d in await settled(mesh, event.meta.event_id, 2)}  # type: ignore[attr-defined]
    dead = by_channel[EMAIL]
    assert dead.state == DEAD_LETTERED and dead.attempt_count == ATTEMPTS_MAX
    queue = await mesh.deliveries(states=[DEAD_LETTERED])
    assert dead.delivery_id in {d.delivery_id for d in queue}
    lettered = await mesh.events(notification_events_pb2.NotificationDeliveryDeadLettered)
    assert [e.attempt_count for e in lettered if e.delivery_id == dead.delivery_id] == [ATTEMPTS_MAX]
    failed = [
        e
        for e in await mesh.events(notification_events_pb2.NotificationDeliveryFailed)
        if e.delivery_id == dead.delivery_id
    ]
    assert [e.attempt_number for e in failed] == [1, 2, 3] and failed[0].HasField("next_attempt_time")
    # An operator retries it once the relay is back: it is sent.
    retry = service.RetryDeliveryRequest(request_id=f"retry-{uuid.uuid4().hex}", delivery_id=dead.delivery_id)
    retried = await mesh.stub.RetryDelivery(retry, metadata=mesh.admin)
    assert retried.delivery.state in (PENDING, 2, SENT)
    await eventually(lambda: _count(mesh, address, 1))
    await refused(
        mesh.stub.RetryDelivery(
            service.RetryDeliveryRequest(
                request_id=f"retry-{uuid.uuid4().hex}", delivery_id=dead.delivery_id
            ),
            metadata=mesh.admin,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )

    # A permanent refusal dead-letters at once; an operator discards it.
    address = email()
    mesh.smtp.refuse_next(address, 1, "550 5.1.1 no such mailbox")
    user = await mesh.identity.register(email=address)
    event = await registered_event(mesh, user.user_id)
    by_channel = {d.channel: d for d in await settled(mesh, event.meta.event_id, 2)}  # type: ignore[attr-defined]
    assert by_channel[EMAIL].state == DEAD_LETTERED and by_channel[EMAIL].attempt_count == 1
    discard = service.DiscardDeliveryRequest(
        request_id=f"discard-{uuid.uuid4().hex}",
        delivery_id=by_channel[EMAIL].delivery_id,
        note="address is gone",
    )
    discarded = await mesh.stub.DiscardDelivery(discard, metadata=mesh.admin)
    assert discarded.delivery.state == DISCARDED
    assert await mesh.stub.DiscardDelivery(discard, metadata=mesh.admin) == discarded  # idempotent retry
    await refused(
        mesh.stub.RetryDelivery(
            service.RetryDeliveryRequest(
                request_id=f"retry-{uuid.uuid4().hex}", delivery_id=by_channel[EMAIL].delivery_id
            ),
            metadata=mesh.admin,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )


async def test_kyc_decisions_reach_the_inbox(mesh: Mesh) -> None:
    user = await mesh.identity.register(email=email())
    event = kyc_events_pb2.KycSubmissionApproved(
        submission_id=str(uuid.uuid4()),
        user_id=user.user_id,
        approved_level=3,
        reviewer_id="m",
        checker_id="c",
    )
    event.meta.event_id = str(uuid.uuid4())
    event.meta.aggregate_id = event.submission_id
    await mesh.publish(event)
    by_channel = {d.channel: d for d in await settled(mesh, event.meta.event_id, 2)}  # type: ignore[attr-defined]
    assert by_channel[IN_APP].state == SENT and by_channel[IN_APP].language == "en"
    assert by_channel[EMAIL].suppression_reason == NO_CONTACT
    token = await mesh.user_token(user.email)
    listed = await mesh.stub.ListInboxMessages(service.ListInboxMessagesRequest(category=4), metadata=token)
    assert [m.body for m in listed.inbox_messages] == [
        "Your identity verification is approved: your account is now at level L2."
    ]


async def test_push_goes_through_the_provider_api_with_retries(mesh: Mesh) -> None:
    user = await mesh.identity.register(email=email())
    me = await mesh.user_token(user.email)

    async def login_event() -> bool:
        logins = await mesh.identity.events(mesh.identity.auth_app, auth_events_pb2.LoginSucceeded)
        return any(e.user_id == user.user_id for e in logins)

    # The sign-in notice settles (no device yet) before the device exists.
    await eventually(login_event)
    logins = await mesh.identity.events(mesh.identity.auth_app, auth_events_pb2.LoginSucceeded)
    await settled(mesh, next(e for e in logins if e.user_id == user.user_id).meta.event_id, 3)
    await mesh.stub.RegisterPushDevice(
        service.RegisterPushDeviceRequest(
            request_id=f"dev-{uuid.uuid4().hex}",
            platform=2,
            push_token="fcm:device-token-1",
            device_name="Pixel",
        ),
        metadata=me,
    )
    mesh.push.answer_next("fcm:device-token-1", 503, 503)
    sent = await mesh.stub.SendNotification(
        service.SendNotificationRequest(
            request_id=f"send-{uuid.uuid4().hex}",
            user_id=user.user_id,
            event_key="withdrawal.confirmed",
            category=3,
            variables={
                "amount": "7",
                "asset": "ethereum:USDC",
                "destination": "0xabc",
                "tx_hash": "0xdef",
                "withdrawal_id": "w-1",
            },
            channels=[PUSH],
        )
    )
    (delivery,) = sent.deliveries

    async def delivered() -> bool:
        found = await mesh.stub.GetDelivery(
            service.GetDeliveryRequest(delivery_id=delivery.delivery_id), metadata=mesh.admin
        )
        return found.delivery.state == SENT

    await eventually(delivered)
    found = await mesh.stub.GetDelivery(
        service.GetDeliveryRequest(delivery_id=delivery.delivery_id), metadata=mesh.admin
    )
    assert found.delivery.attempt_count == 3 and found.delivery.provider == "push"
    assert found.delivery.provider_message_id.startswith("prov-")
    assert [a.detail[:8] for a in found.delivery.attempts] == ["HTTP 503", "HTTP 503", "accepted"]
    (posted,) = mesh.push.posted
    assert posted.body["to"] == "fcm:device-token-1" and posted.body["title"] == "Withdrawal completed"
    assert posted.body["link"] == "finmesh://withdrawals/w-1" and "7 ethereum:USDC" in posted.body["body"]
    assert posted.headers["Authorization"] == "Bearer push-api-token"
    assert posted.headers["Idempotency-Key"] == delivery.delivery_id

    # A refusal by the provider (4xx) is permanent: dead-lettered after one attempt.
    mesh.push.answer_next("fcm:device-token-1", 400)
    refusal = await mesh.stub.SendNotification(
        service.SendNotificationRequest(
            request_id=f"send-{uuid.uuid4().hex}",
            user_id=user.user_id,
            event_key="withdrawal.confirmed",
            category=3,
            variables={
                "amount": "1",
                "asset": "a",
                "destination": "d",
                "tx_hash": "t",
                "withdrawal_id": "w-2",
            },
            channels=[PUSH],
        )
    )

    async def dead() -> bool:
        found = await mesh.stub.GetDelivery(
            service.GetDeliveryRequest(delivery_id=refusal.deliveries[0].delivery_id), metadata=mesh.admin
        )
        return found.delivery.state == DEAD_LETTERED and found.delivery.attempt_count == 1

    await eventually(dead)
    assert len(mesh.push.posted) == 1


async def test_a_contact_change_is_told_to_the_contacts_the_user_has_now(mesh: Mesh) -> None:
    user = await mesh.identity.register(email=email())
    event = user_events_pb2.UserContactChangeRequested(user_id=user.user_id, channel=EMAIL)
    event.meta.event_id = str(uuid.uuid4())
    event.meta.aggregate_id = user.user_id
    await mesh.publish(event)
    by_channel = {d.channel: d for d in await settled(mesh, event.meta.event_id, 2)}  # type: ignore[attr-defined]
    assert by_channel[IN_APP].state == SENT
    # Security notices are mandatory by email; this address is not verified, so none goes to it.
    assert by_channel[EMAIL].suppression_reason == NO_CONTACT
    token = await mesh.user_token(user.email)
    listed = await mesh.stub.ListInboxMessages(service.ListInboxMessagesRequest(), metadata=token)
    [notice] = [m for m in listed.inbox_messages if m.event_key == "user.contact_change_requested"]
    assert "change the email address of your finmesh account" in notice.body
