"""Registration through the gRPC contract: normalised, validated and unique identifiers, the
password stored at the auth service, idempotent retries, and the UserRegistered event."""

from __future__ import annotations

import grpc
from finmesh.events.v1 import auth_events_pb2, user_events_pb2
from finmesh.user.v1 import user_service_pb2 as user

from tests.harness.identity import PASSWORD, Identity, refused, rid


async def test_register_by_email_normalises_and_logs_in(identity: Identity) -> None:
    registered = await identity.register(email="Anna.Muster@Example.COM")
    assert registered.email == "anna.muster@example.com"
    assert registered.status == user.USER_STATUS_ACTIVE
    assert registered.version == 1
    tokens = await identity.tokens("ANNA.muster@example.com")
    assert tokens.session_id
    events = await identity.events(identity.user_app, user_events_pb2.UserRegistered)
    assert [event.user_id for event in events] == [registered.user_id]
    assert events[0].identifier_channel == user.CONTACT_CHANNEL_EMAIL
    assert events[0].meta.aggregate_version == 1
    created = await identity.events(identity.auth_app, auth_events_pb2.PasswordCredentialCreated)
    assert [event.user_id for event in created] == [registered.user_id]


async def test_register_by_phone(identity: Identity) -> None:
    registered = await identity.register(phone="+4915112345678")
    assert (registered.phone, registered.email) == ("+4915112345678", "")
    found = await identity.users.LookupUser(user.LookupUserRequest(phone="+4915112345678"))
    assert found.user.user_id == registered.user_id


async def test_identifier_is_unique_case_insensitively(identity: Identity) -> None:
    await identity.register(email="taken@example.com")
    await refused(
        identity.register(email="TAKEN@example.com"), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"
    )


async def test_retry_returns_the_first_result_and_creates_one_user(identity: Identity) -> None:
    request = user.RegisterUserRequest(
        request_id=rid(), email="retry@example.com", password=PASSWORD, accepted_terms_version="2024-06"
    )
    first = await identity.users.RegisterUser(request)
    again = await identity.users.RegisterUser(request)
    assert again == first
    changed = user.RegisterUserRequest()
    changed.CopyFrom(request)
    changed.email = "other@example.com"
    await refused(
        identity.users.RegisterUser(changed), grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED"
    )
    assert len(await identity.events(identity.user_app, user_events_pb2.UserRegistered)) == 1


async def test_bad_input_is_refused_with_the_field(identity: Identity) -> None:
    short = identity.register(email="short@example.com", password="too short")
    error = await refused(short, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert "password" in (error.details() or "")
    breached = identity.register(email="breached@example.com", password="password1234")
    error = await refused(breached, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    await refused(identity.register(phone="0151 1234"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    await refused(
        identity.register(email="not-an-email"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    missing_terms = identity.register(email="terms@example.com", accepted_terms_version="")
    await refused(missing_terms, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    # Nothing half-applied: the refused identifiers are still free.
    assert (await identity.register(email="breached@example.com")).email == "breached@example.com"
