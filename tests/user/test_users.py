"""The user record through the gRPC contract: the caller's profile, staff look-ups and search
with filters and pagination, freezes with reasons and their events, and who may call what."""

from __future__ import annotations

import grpc
from finmesh.auth.v1 import auth_service_pb2 as auth
from finmesh.common.v1 import enums_pb2
from finmesh.events.v1 import user_events_pb2
from finmesh.user.v1 import user_service_pb2 as user
from google.protobuf import field_mask_pb2

from tests.harness.identity import Identity, bearer, refused, rid

FROZEN, ACTIVE = user.USER_STATUS_FROZEN, user.USER_STATUS_ACTIVE
COMPLIANCE, LEGAL = user.STATUS_REASON_COMPLIANCE, user.STATUS_REASON_LEGAL_ORDER


async def test_profile_update_applies_the_mask_only(identity: Identity) -> None:
    registered = await identity.register(
        email="profile@example.com", profile=user.UserProfile(display_name="A")
    )
    token = (await identity.tokens("profile@example.com")).access_token
    me = await identity.users.GetMyUser(user.GetMyUserRequest(), metadata=bearer(token))
    assert me.user.user_id == registered.user_id
    request = user.UpdateMyProfileRequest(
        request_id=rid(),
        profile=user.UserProfile(display_name="Anna", language="de-CH", time_zone="Europe/Zurich"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name", "language"]),
    )
    updated = await identity.users.UpdateMyProfile(request, metadata=bearer(token))
    assert (updated.user.profile.display_name, updated.user.profile.language) == ("Anna", "de-CH")
    assert updated.user.profile.time_zone == ""
    assert updated.user.version == 2
    assert await identity.users.UpdateMyProfile(request, metadata=bearer(token)) == updated
    events = await identity.events(identity.user_app, user_events_pb2.UserProfileUpdated)
    assert [list(event.updated_fields) for event in events] == [["display_name", "language"]]
    bad = user.UpdateMyProfileRequest(
        request_id=rid(), profile=user.UserProfile(), update_mask=field_mask_pb2.FieldMask(paths=["email"])
    )
    await refused(
        identity.users.UpdateMyProfile(bad, metadata=bearer(token)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        identity.users.GetMyUser(user.GetMyUserRequest()), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"
    )


async def test_end_users_reach_only_their_own_record(identity: Identity) -> None:
    other = await identity.register(email="other@example.com")
    await identity.register(email="nosy@example.com")
    token = (await identity.tokens("nosy@example.com")).access_token
    denied = grpc.StatusCode.PERMISSION_DENIED
    await refused(
        identity.users.GetUser(user.GetUserRequest(user_id=other.user_id), metadata=bearer(token)),
        denied,
        "PERMISSION_DENIED",
    )
    await refused(
        identity.users.SearchUsers(user.SearchUsersRequest(), metadata=bearer(token)),
        denied,
        "PERMISSION_DENIED",
    )
    lookup = identity.users.LookupUser(
        user.LookupUserRequest(email="other@example.com"), metadata=bearer(token)
    )
    await refused(lookup, denied, "PERMISSION_DENIED")
    freeze = user.FreezeUserRequest(
        request_id=rid(), user_id=other.user_id, reason=COMPLIANCE, note="n", approval_id="a1"
    )
    await refused(identity.users.FreezeUser(freeze, metadata=bearer(token)), denied, "PERMISSION_DENIED")
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    await refused(
        identity.users.GetMyUser(user.GetMyUserRequest(), metadata=bearer(tampered)),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    staff = await identity.admin_token()
    found = await identity.users.GetUser(user.GetUserRequest(user_id=other.user_id), metadata=bearer(staff))
    assert found.user.email == "other@example.com"
    await refused(
        identity.users.GetUser(user.GetUserRequest(user_id="6b0e3c52-3d3f-4e0b-9d1d-2f1f3f0e0a11")),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )


async def test_freeze_reasons_stack_and_block_login(identity: Identity) -> None:
    registered = await identity.register(email="frozen@example.com")
    tokens = await identity.tokens("frozen@example.com")

    def freeze(reason: int, key: str) -> user.FreezeUserRequest:
        return user.FreezeUserRequest(
            request_id=key, user_id=registered.user_id, reason=reason, note="case 42"
        )  # type: ignore[arg-type]

    first = await identity.users.FreezeUser(freeze(COMPLIANCE, "freeze-compliance-1"))
    assert (first.user.status, list(first.user.status_reasons)) == (FROZEN, [COMPLIANCE])
    assert await identity.users.FreezeUser(freeze(COMPLIANCE, "freeze-compliance-1")) == first
    second = await identity.users.FreezeUser(freeze(LEGAL, "freeze-legal-1"))
    assert list(second.user.status_reasons) == [COMPLIANCE, LEGAL]
    same = await identity.users.FreezeUser(freeze(LEGAL, "freeze-legal-2"))
    assert same.user.version == second.user.version

    await refused(identity.login("frozen@example.com"), grpc.StatusCode.PERMISSION_DENIED, "FROZEN")
    refresh = auth.RefreshTokenRequest(request_id=rid(), refresh_token=tokens.refresh_token)
    await refused(identity.auth.RefreshToken(refresh), grpc.StatusCode.PERMISSION_DENIED, "FROZEN")

    def unfreeze(reason: int) -> user.UnfreezeUserRequest:
        return user.UnfreezeUserRequest(
            request_id=rid(),
            user_id=registered.user_id,
            reason=reason,
            note="cleared",
            approval_id="approval-7",
        )  # type: ignore[arg-type]

    partly = await identity.users.UnfreezeUser(unfreeze(COMPLIANCE))
    assert (partly.user.status, list(partly.user.status_reasons)) == (FROZEN, [LEGAL])
    await refused(
        identity.users.UnfreezeUser(unfreeze(COMPLIANCE)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )
    lifted = await identity.users.UnfreezeUser(unfreeze(LEGAL))
    assert (lifted.user.status, list(lifted.user.status_reasons)) == (ACTIVE, [])
    assert (await identity.login("frozen@example.com")).HasField("tokens")

    changed = await identity.events(identity.user_app, user_events_pb2.UserStatusChanged)
    assert [(event.previous_status, event.new_status, event.reason) for event in changed] == [
        (ACTIVE, FROZEN, COMPLIANCE),
        (FROZEN, FROZEN, LEGAL),
        (FROZEN, FROZEN, COMPLIANCE),
        (FROZEN, ACTIVE, LEGAL),
    ]
    assert [event.meta.aggregate_version for event in changed] == [2, 3, 4, 5]
    assert changed[0].actor_type == user.ACTOR_TYPE_SYSTEM
    history = await identity.users.ListUserStatusChanges(
        user.ListUserStatusChangesRequest(user_id=registered.user_id, page_size=3)
    )
    assert [change.reason for change in history.status_changes] == [LEGAL, COMPLIANCE, LEGAL]
    rest = await identity.users.ListUserStatusChanges(
        user.ListUserStatusChangesRequest(user_id=registered.user_id, page_token=history.next_page_token)
    )
    assert [change.reason for change in rest.status_changes] == [COMPLIANCE]
    assert rest.next_page_token == ""


async def test_staff_freeze_needs_an_approval(identity: Identity) -> None:
    registered = await identity.register(email="approval@example.com")
    staff = await identity.admin_token()
    request = user.FreezeUserRequest(
        request_id=rid(), user_id=registered.user_id, reason=COMPLIANCE, note="n"
    )
    await refused(
        identity.users.FreezeUser(request, metadata=bearer(staff)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    request.approval_id = "approval-1"
    frozen = await identity.users.FreezeUser(request, metadata=bearer(staff))
    assert frozen.user.status == FROZEN
    history = await identity.users.ListUserStatusChanges(
        user.ListUserStatusChangesRequest(user_id=registered.user_id)
    )
    change = history.status_changes[0]
    assert (change.actor_type, change.approval_id) == (user.ACTOR_TYPE_OPERATOR, "approval-1")


async def test_search_filters_and_pages(identity: Identity) -> None:
    made = [
        await identity.register(
            email=f"search{index}@example.com", profile=user.UserProfile(country_of_residence=country)
        )
        for index, country in enumerate(["DE", "CH", "DE", "DE", "FR"])
    ]
    await identity.users.FreezeUser(
        user.FreezeUserRequest(request_id=rid(), user_id=made[2].user_id, reason=COMPLIANCE, note="n")
    )
    german = await identity.users.SearchUsers(user.SearchUsersRequest(country_of_residence="DE"))
    assert [found.user_id for found in german.users] == [made[3].user_id, made[2].user_id, made[0].user_id]
    pages: list[str] = []
    token = ""
    while True:
        page = await identity.users.SearchUsers(
            user.SearchUsersRequest(
                query="search", order=enums_pb2.SORT_ORDER_ASCENDING, page_size=2, page_token=token
            )
        )
        pages.append(",".join(found.email for found in page.users))
        token = page.next_page_token
        if not token:
            break
    assert pages == [
        "search0@example.com,search1@example.com",
        "search2@example.com,search3@example.com",
        "search4@example.com",
    ]
    frozen = await identity.users.SearchUsers(user.SearchUsersRequest(statuses=[FROZEN]))
    assert [found.user_id for found in frozen.users] == [made[2].user_id]
    by_reason = await identity.users.SearchUsers(user.SearchUsersRequest(status_reason=COMPLIANCE))
    assert [found.user_id for found in by_reason.users] == [made[2].user_id]
    exact = await identity.users.SearchUsers(user.SearchUsersRequest(query=made[4].user_id))
    assert [found.email for found in exact.users] == ["search4@example.com"]
    first = await identity.users.SearchUsers(user.SearchUsersRequest(query="search", page_size=1))
    other_filters = user.SearchUsersRequest(query="search0", page_token=first.next_page_token)
    await refused(
        identity.users.SearchUsers(other_filters), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )
    batch = await identity.users.BatchGetUsers(
        user.BatchGetUsersRequest(user_ids=[made[1].user_id, "6b0e3c52-3d3f-4e0b-9d1d-2f1f3f0e0a11"])
    )
    assert [found.user_id for found in batch.users] == [made[1].user_id]
    assert list(batch.missing_user_ids) == ["6b0e3c52-3d3f-4e0b-9d1d-2f1f3f0e0a11"]
