"""Sanctions screening of names (fuzzy) and addresses (exact) against the operator's list file,
reloaded when it changes; sanctions cases resolved with maker-checker; the AML rating and the
limits that follow."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
from finmesh.auth.v1 import auth_service_pb2 as auth_service
from finmesh.common.v1 import money_pb2
from finmesh.events.v1 import kyc_events_pb2, user_events_pb2
from finmesh.kyc.v1 import kyc_resources_pb2 as resources
from finmesh.kyc.v1 import kyc_service_pb2 as service
from finmesh.user.v1 import user_service_pb2 as user_service

from svc.kyc.sanctions import jaro_winkler, name_similarity, normalise, parse
from tests.harness.calls import eventually, refused
from tests.kyc.conftest import SANCTIONED_ADDRESS, SECOND_ADDRESS, Kyc, personal_data, request_id, start_kyc

OPEN, RESOLUTION_PROPOSED, FALSE_POSITIVE, CONFIRMED_MATCH, CLEAR = 2, 3, 4, 5, 1
ALLOW, REVIEW, DENY = 1, 2, 3
POTENTIAL, CONFIRMED, STATUS_CLEAR = 3, 4, 2
WITHDRAW, DEPOSIT = 2, 1
CLEAN_ADDRESS = "0x00000000219ab540356cBB839Cbe05303d7705Fa"


def new_id() -> str:
    return str(uuid.uuid4())


def screen_address(address: str, user_id: str = "") -> service.ScreenAddressRequest:
    return service.ScreenAddressRequest(
        request_id=request_id("screen"),
        address=money_pb2.ChainAddress(chain="ethereum", address=address),
        user_id=user_id,
        context=5,  # WITHDRAWAL_DESTINATION
        reference_id="withdrawal-1",
    )


def test_name_similarity_is_order_and_accent_insensitive() -> None:
    assert jaro_winkler("martha", "marhta") == jaro_winkler("marhta", "martha")
    assert round(jaro_winkler("martha", "marhta"), 4) == 0.9611  # the textbook value
    assert jaro_winkler("abc", "xyz") == 0.0
    assert normalise("José  MARÍA O'Brien-Straße") == ("jose", "maria", "o", "brien", "strasse")
    assert name_similarity(normalise("PETROV, Vladimir"), normalise("Vladimir Petrov")) == 1.0
    assert name_similarity(normalise("Vladimyr Petrof"), normalise("Vladimir Petrov")) > 0.9
    assert name_similarity(normalise("John"), normalise("John Smith")) < 0.85
    assert name_similarity(normalise("Erika Mustermann"), normalise("Vladimir Petrov")) < 0.7


def test_a_list_with_too_many_bad_records_is_refused() -> None:
    good = "".join(f"E{n},person,Person Number {n},,,,,P\n" for n in range(99))
    assert len(parse(good.encode() + b"BAD,alien,X,,,,,P\n", source=5).entries) == 99
    try:
        parse(good.encode() + b"BAD,alien,X,,,,,P\nBAD2,person,Y,,,,0x12,P\n", source=5)
    except ValueError as error:
        assert "2 of 101 records are invalid" in str(error)
    else:
        raise AssertionError("a list with 2 % invalid records was accepted")


async def test_sanctioned_name_opens_a_case_that_blocks_until_resolved(kyc_with_auth: Kyc) -> None:
    kyc = kyc_with_auth
    applicant, maker, checker = new_id(), new_id(), kyc.checker_id
    data = personal_data("Vladimyr", "Petrof", date_of_birth="1970-03-14", nationalities=["RU"])
    submitted = await kyc.apply(applicant, level=3, data=data)
    assert submitted.state == 3  # PENDING_REVIEW: the case goes to the operators, not to the user
    staff = kyc.user(maker, "operator")
    cases = await kyc.stub.ListScreenings(
        service.ListScreeningsRequest(user_id=applicant, states=[OPEN]), metadata=staff
    )
    assert len(cases.screenings) == 1
    case = cases.screenings[0]
    assert case.decision == REVIEW and case.reference_id == submitted.submission_id
    match = case.matches[0]
    assert match.entry.entry_id == "SDN-1001" and match.matched_value == "Vladimir Petrov"
    assert 0.85 <= float(match.score) < 0.95
    assert sorted(match.corroborating_fields) == ["date_of_birth", "nationality"]
    assert case.name.full_name == "Vladimyr Petrof" and case.version_ids
    profile = (await kyc.stub.GetKycProfile(service.GetKycProfileRequest(user_id=applicant))).profile
    assert profile.sanctions_status == POTENTIAL
    assert profile.risk_assessment.rating == 4  # PROHIBITED: potential match + high-risk country
    limits = await kyc.stub.GetUserLimits(service.GetUserLimitsRequest(user_id=applicant))
    by_action = {limit.action: limit for limit in limits.limits}
    assert not by_action[WITHDRAW].allowed and by_action[WITHDRAW].denial_reason == 2  # SANCTIONS
    assert by_action[DEPOSIT].allowed
    # No approval while the case is open.
    await refused(
        kyc.review(submitted.submission_id, maker, level=3),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SANCTIONS_CASE_OPEN",
    )
    proposed = await kyc.stub.ProposeScreeningResolution(
        service.ProposeScreeningResolutionRequest(
            request_id=request_id(),
            screening_id=case.screening_id,
            resolution=1,
            note="different person, DOB differs",
        ),
        metadata=staff,
    )
    assert proposed.screening.state == RESOLUTION_PROPOSED
    check = service.CheckScreeningResolutionRequest(
        request_id=request_id(), screening_id=case.screening_id, verdict=1, step_up_token="t"
    )
    # Checking needs the approver role first, then the checker's own step-up.
    await refused(
        kyc.stub.CheckScreeningResolution(check, metadata=kyc.user(new_id())),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    await refused(
        kyc.stub.CheckScreeningResolution(check, metadata=await kyc.checker()),
        grpc.StatusCode.PERMISSION_DENIED,
        "STEP_UP_REQUIRED",
    )
    check.step_up_token = await kyc.step_up()
    resolved = await kyc.stub.CheckScreeningResolution(check, metadata=await kyc.checker())
    assert resolved.screening.state == FALSE_POSITIVE and resolved.screening.check.checker_id == checker
    profile = (await kyc.stub.GetKycProfile(service.GetKycProfileRequest(user_id=applicant))).profile
    assert profile.sanctions_status == STATUS_CLEAR
    statuses = await kyc.events(kyc_events_pb2.SanctionsStatusChanged)
    assert [(e.previous_status, e.new_status) for e in statuses] == [
        (1, POTENTIAL),
        (POTENTIAL, STATUS_CLEAR),
    ]
    assert [e.state for e in await kyc.events(kyc_events_pb2.SanctionsScreeningResolved)] == [FALSE_POSITIVE]
    approved = await kyc.check(await kyc.review(submitted.submission_id, maker, level=3))
    assert approved.state == 6


async def test_confirmed_match_makes_the_user_prohibited(kyc_with_auth: Kyc) -> None:
    kyc = kyc_with_auth
    user, maker = new_id(), new_id()
    screened = await kyc.stub.ScreenName(
        service.ScreenNameRequest(
            request_id=request_id(),
            subject=resources.NameSubject(full_name="Kim Yong-chol", is_person=True),
            user_id=user,
            context=7,  # MANUAL
        ),
        metadata=kyc.user(maker, "operator"),
    )
    assert screened.screening.decision == DENY and screened.screening.matches[0].score == "1"
    screening_id = screened.screening.screening_id
    await kyc.stub.ProposeScreeningResolution(
        service.ProposeScreeningResolutionRequest(
            request_id=request_id(), screening_id=screening_id, resolution=2, note="same person"
        ),
        metadata=kyc.user(maker, "operator"),
    )
    confirmed = await kyc.stub.CheckScreeningResolution(
        service.CheckScreeningResolutionRequest(
            request_id=request_id(), screening_id=screening_id, verdict=1, step_up_token=await kyc.step_up()
        ),
        metadata=await kyc.checker(),
    )
    assert confirmed.screening.state == CONFIRMED_MATCH
    profile = (await kyc.stub.GetKycProfile(service.GetKycProfileRequest(user_id=user))).profile
    assert profile.sanctions_status == CONFIRMED and profile.risk_assessment.rating == 4
    assessments = await kyc.stub.ListRiskAssessments(
        service.ListRiskAssessmentsRequest(user_id=user, page_size=1), metadata=kyc.user(maker, "auditor")
    )
    assert "SANCTIONS_CONFIRMED_MATCH" in {factor.code for factor in assessments.assessments[0].factors}
    assert assessments.next_page_token
    # A case the checker proposed is not theirs to check.
    other = await kyc.stub.ScreenName(
        service.ScreenNameRequest(
            request_id=request_id(),
            subject=resources.NameSubject(full_name="Vladimir Petrov", is_person=True),
            user_id=new_id(),
            context=7,
        ),
        metadata=kyc.user(maker, "operator"),
    )
    await kyc.stub.ProposeScreeningResolution(
        service.ProposeScreeningResolutionRequest(
            request_id=request_id(), screening_id=other.screening.screening_id, resolution=2, note="same"
        ),
        metadata=await kyc.checker(),
    )
    info = await refused(
        kyc.stub.CheckScreeningResolution(
            service.CheckScreeningResolutionRequest(
                request_id=request_id(),
                screening_id=other.screening.screening_id,
                verdict=1,
                step_up_token=await kyc.step_up(),
            ),
            metadata=await kyc.checker(),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    assert info.metadata["rule"] == "MAKER_CHECKER"
    # A resolved case is terminal.
    await refused(
        kyc.stub.ProposeScreeningResolution(
            service.ProposeScreeningResolutionRequest(
                request_id=request_id(), screening_id=screening_id, resolution=1, note="changed my mind"
            ),
            metadata=kyc.user(maker, "operator"),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVALID_STATE",
    )


async def test_sanctioned_address_is_denied_and_the_list_reloads_when_the_file_changes(kyc: Kyc) -> None:
    user = new_id()
    flagged = await kyc.stub.ScreenAddress(screen_address(SANCTIONED_ADDRESS.lower(), user))
    assert flagged.screening.decision == DENY and flagged.screening.state == OPEN
    assert (
        flagged.screening.matches[0].entry.entry_id == "SDN-2002"
        and flagged.screening.matches[0].score == "1"
    )
    assert flagged.screening.address.address == SANCTIONED_ADDRESS.lower()
    clean = await kyc.stub.ScreenAddress(screen_address(CLEAN_ADDRESS))
    assert clean.screening.decision == ALLOW and clean.screening.state == CLEAR
    profile = (await kyc.stub.GetKycProfile(service.GetKycProfileRequest(user_id=user))).profile
    assert profile.sanctions_status == POTENTIAL
    retry = screen_address(CLEAN_ADDRESS)
    assert await kyc.stub.ScreenAddress(retry) == await kyc.stub.ScreenAddress(retry)

    # The operator adds an address to the file: the next screening sees it, no restart.
    kyc.write_sanctions(f"SDN-2002,entity,Tornado Cash,,,,{SECOND_ADDRESS};{CLEAN_ADDRESS},CYBER2\n")
    await asyncio.sleep(0.01)
    now_flagged = await kyc.stub.ScreenAddress(screen_address(CLEAN_ADDRESS))
    assert now_flagged.screening.decision == DENY
    assert now_flagged.screening.version_ids != clean.screening.version_ids
    # ... and the entry that left the list no longer matches.
    assert (await kyc.stub.ScreenAddress(screen_address(SANCTIONED_ADDRESS))).screening.decision == ALLOW
    staff = kyc.user(new_id(), "auditor")
    versions = await kyc.stub.ListSanctionsListVersions(
        service.ListSanctionsListVersionsRequest(), metadata=staff
    )
    assert [(v.state, v.entry_count, v.removed_count) for v in versions.versions] == [(2, 1, 2), (3, 3, 0)]
    activated = await kyc.events(kyc_events_pb2.SanctionsListVersionActivated)
    assert [e.superseded_version_id for e in activated] == ["", versions.versions[1].version_id]

    # A broken file keeps the last good list in force.
    kyc.sanctions_file.write_text("this is not, a sanctions list\n")
    await asyncio.sleep(0.01)
    still = await kyc.stub.ScreenAddress(screen_address(CLEAN_ADDRESS))
    assert still.screening.decision == DENY
    assert still.screening.version_ids == now_flagged.screening.version_ids
    completed = await kyc.events(kyc_events_pb2.SanctionsScreeningCompleted)
    assert [e.decision for e in completed] == [DENY, ALLOW, ALLOW, DENY, ALLOW, DENY]


async def test_screening_without_any_list_is_refused(database_url: str, tmp_path: Path) -> None:
    kyc = await start_kyc(database_url, tmp_path, sanctions=False)
    try:
        await refused(
            kyc.stub.ScreenAddress(screen_address(CLEAN_ADDRESS)),
            grpc.StatusCode.UNAVAILABLE,
            "SANCTIONS_LIST_UNAVAILABLE",
        )
        await refused(
            kyc.stub.ScreenAddress(screen_address(CLEAN_ADDRESS), metadata=kyc.user(new_id())),
            grpc.StatusCode.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        )
    finally:
        await kyc.connection.close()
        await kyc.app.stop(0)


async def test_a_confirmed_match_freezes_the_user_platform_wide(kyc_with_auth: Kyc) -> None:
    kyc = kyc_with_auth
    identity = kyc.identity
    assert identity is not None
    email = f"kim-{uuid.uuid4().hex[:8]}@example.com"
    registered = await identity.register(email=email)
    tokens = await identity.tokens(email)
    maker = new_id()
    screened = await kyc.stub.ScreenName(
        service.ScreenNameRequest(
            request_id=request_id(),
            subject=resources.NameSubject(full_name="Kim Yong Chol", is_person=True),
            user_id=registered.user_id,
            context=7,  # MANUAL
        ),
        metadata=kyc.user(maker, "operator"),
    )
    screening_id = screened.screening.screening_id
    await kyc.stub.ProposeScreeningResolution(
        service.ProposeScreeningResolutionRequest(
            request_id=request_id(), screening_id=screening_id, resolution=2, note="same person"
        ),
        metadata=kyc.user(maker, "operator"),
    )
    # A potential match alone freezes nobody.
    found = await identity.users.GetUser(user_service.GetUserRequest(user_id=registered.user_id))
    assert found.user.status == user_service.USER_STATUS_ACTIVE
    await kyc.stub.CheckScreeningResolution(
        service.CheckScreeningResolutionRequest(
            request_id=request_id(), screening_id=screening_id, verdict=1, step_up_token=await kyc.step_up()
        ),
        metadata=await kyc.checker(),
    )

    async def frozen() -> bool:
        found = await identity.users.GetUser(user_service.GetUserRequest(user_id=registered.user_id))
        return bool(found.user.status == user_service.USER_STATUS_FROZEN)

    await eventually(frozen)
    user = (await identity.users.GetUser(user_service.GetUserRequest(user_id=registered.user_id))).user
    assert list(user.status_reasons) == [user_service.STATUS_REASON_SANCTIONS]
    [changed] = await identity.events(identity.user_app, user_events_pb2.UserStatusChanged)
    assert changed.new_status == user_service.USER_STATUS_FROZEN
    assert changed.reason == user_service.STATUS_REASON_SANCTIONS
    assert changed.actor_type == user_service.ACTOR_TYPE_SYSTEM and changed.revoke_sessions
    history = await identity.users.ListUserStatusChanges(
        user_service.ListUserStatusChangesRequest(user_id=registered.user_id)
    )
    assert screening_id in history.status_changes[0].note
    [status] = [
        e for e in await kyc.events(kyc_events_pb2.SanctionsStatusChanged) if e.new_status == CONFIRMED
    ]
    assert (status.user_id, status.screening_id) == (registered.user_id, screening_id)
    # The frozen user can no longer log in, and the session they had ends.
    await refused(identity.login(email), grpc.StatusCode.PERMISSION_DENIED, "FROZEN")

    async def session_ended() -> bool:
        try:
            await identity.auth.IntrospectToken(
                auth_service.IntrospectTokenRequest(access_token=tokens.access_token)
            )
        except grpc.aio.AioRpcError as error:
            return error.code() is grpc.StatusCode.UNAUTHENTICATED
        return False

    await eventually(session_ended)
