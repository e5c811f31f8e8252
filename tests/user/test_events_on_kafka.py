"""The user and auth services with their events on the harness's real Kafka broker: a
registration's UserRegistered is on the users topic for any consumer group, and a security
freeze's UserStatusChanged reaches the auth service's consumer through the broker, which ends the
user's sessions."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.events.v1 import user_events_pb2
from finmesh.user.v1 import user_service_pb2 as user

from svc.kit.outbox import HEADER_EVENT_ID, HEADER_EVENT_TYPE
from tests.harness.calls import eventually
from tests.harness.identity import Identity, kafka_bus, refused, rid, start_identity
from tests.harness.servers import KafkaBroker

pytestmark = pytest.mark.kafka
USERS_TOPIC = "finmesh.user.v1.users"
REGISTERED = user_events_pb2.UserRegistered.DESCRIPTOR.full_name


@pytest.fixture
async def on_kafka(
    database_url: str, tmp_path: Path, kafka_broker: KafkaBroker
) -> AsyncIterator[tuple[Identity, str]]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    bus = kafka_bus(kafka_broker.bootstrap_servers, prefix, "identity")
    running = await start_identity(database_url, tmp_path, bus=bus)
    yield running, prefix
    await running.stop()


async def test_registration_and_a_freeze_travel_through_kafka(
    on_kafka: tuple[Identity, str], kafka_broker: KafkaBroker
) -> None:
    identity, prefix = on_kafka
    registered = await identity.register(email="kafka@example.com")
    tokens = await identity.tokens("kafka@example.com")
    [stored] = await identity.events(identity.user_app, user_events_pb2.UserRegistered)

    # Any consumer group reads the registration off the broker, as the relay published it.
    reader = kafka_bus(kafka_broker.bootstrap_servers, prefix, "test-reader")
    subscription = await reader.subscribe([USERS_TOPIC], group_id=f"reader-{uuid.uuid4().hex[:8]}")
    try:
        received: list[user_events_pb2.UserRegistered] = []

        async def arrived() -> bool:
            for message in await subscription.fetch(timeout_ms=500):
                if (
                    message.headers.get(HEADER_EVENT_TYPE)
                    == user_events_pb2.UserRegistered.DESCRIPTOR.full_name
                ):
                    assert message.key == registered.user_id
                    assert message.headers[HEADER_EVENT_ID] == stored.meta.event_id
                    received.append(user_events_pb2.UserRegistered.FromString(message.value))
            return bool(received)

        await eventually(arrived, timeout_s=30)
    finally:
        await subscription.close()
        await reader.stop()
    assert [event.user_id for event in received] == [registered.user_id]
    assert received[0] == stored

    # A security freeze: its event reaches auth's consumer through Kafka, which ends the session.
    await identity.users.FreezeUser(
        user.FreezeUserRequest(
            request_id=rid("freeze"),
            user_id=registered.user_id,
            reason=user.STATUS_REASON_SECURITY,
            note="suspected takeover",
            approval_id="action-7",
        )
    )

    async def session_ended() -> bool:
        try:
            await identity.auth.IntrospectToken(auth.IntrospectTokenRequest(access_token=tokens.access_token))
        except grpc.aio.AioRpcError as error:
            return error.code() is grpc.StatusCode.UNAUTHENTICATED
        return False

    await eventually(session_ended, timeout_s=30)
    sessions = await identity.auth.ListUserSessions(
        auth.ListUserSessionsRequest(user_id=registered.user_id, include_inactive=True)
    )
    assert [session.revoke_reason for session in sessions.sessions] == [
        auth_resources.REVOKE_REASON_USER_STATUS
    ]
    await refused(identity.login("kafka@example.com"), grpc.StatusCode.PERMISSION_DENIED, "FROZEN")
