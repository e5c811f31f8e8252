"""Applications from draft to decision with maker-checker, limits per level, bad inputs, idempotent
retries and personal data encrypted at rest, through the contract."""

from __future__ import annotations

import uuid

import grpc
import pytest
from finmesh.events.v1 import kyc_events_pb2
from finmesh.kyc.v1 import kyc_resources_pb2 as resources
from finmesh.kyc.v1 import kyc_service_pb2 as service
from google.protobuf import field_mask_pb2
from sqlalchemy import select

from svc.kyc import store
from tests.harness.calls import refused
from tests.kyc.conftest import JPEG, PNG, SELFIE, Kyc, inline, personal_data, request_id

APPROVED, REJECTED, PENDING_REVIEW, AWAITING_CHECK, NEEDS_INFORMATION = 6, 7, 3, 4, 5
L0, L1, L2, L3 = 1, 2, 3, 4
WITHDRAW, DEPOSIT, API_ACCESS = 2, 1, 8


def new_id() -> str:
    return str(uuid.uuid4())


async def limits(kyc: Kyc, user: str) -> dict[int, resources.ActionLimit]:
    """What a service (no end user) is told this user may do, by action."""
    answer = await kyc.stub.GetUserLimits(service.GetUserLimitsRequest(user_id=user))
    return {limit.action: limit for limit in answer.limits}


@pytest.mark.embedded
async def test_application_to_approval_with_maker_and_checker(kyc_with_auth: Kyc) -> None:
    kyc = kyc_with_auth
    applicant, maker, checker = new_id(), new_id(), kyc.checker_id
    before = await limits(kyc, applicant)
    assert before[DEPOSIT].allowed and before[DEPOSIT].daily_max.amount == "100000"
    assert not before[WITHDRAW].allowed and before[WITHDRAW].denial_reason == 1
    assert before[WITHDRAW].required_level == L1

    submitted = await kyc.apply(applicant, level=L2)
    assert submitted.state == PENDING_REVIEW and not submitted.missing_documents
    assert submitted.personal_data.family_name == "Mustermann" and not submitted.screening_ids
    status = await kyc.stub.GetKycStatus(service.GetKycStatusRequest(), metadata=kyc.user(applicant))
    assert status.status.level == L0 and status.status.open_submission_id == submitted.submission_id

    queue = await kyc.stub.SearchSubmissions(
        service.SearchSubmissionsRequest(states=[PENDING_REVIEW]), metadata=kyc.user(maker, "operator")
    )
    assert [s.submission_id for s in queue.submissions] == [submitted.submission_id]
    assert not queue.submissions[0].HasField("personal_data")
    review_view = await kyc.stub.GetSubmissionForReview(
        service.GetSubmissionForReviewRequest(submission_id=submitted.submission_id),
        metadata=kyc.user(maker, "operator"),
    )
    assert review_view.submission.personal_data.given_names == "Erika"
    assert [s.state for s in review_view.screenings] == [1]  # CLEAR
    passport = review_view.submission.documents[0]
    content = await kyc.stub.GetDocumentContent(
        service.GetDocumentContentRequest(document_id=passport.document_id),
        metadata=kyc.user(maker, "operator"),
    )
    assert content.data == JPEG

    reviewed = await kyc.review(submitted.submission_id, maker, level=L2)
    assert reviewed.state == AWAITING_CHECK and reviewed.review.reviewer_id == maker
    # The checker's second factor is required, and a token is good for one request only.
    await refused(
        kyc.check(reviewed, step_up_token="not-a-step-up-token"),
        grpc.StatusCode.PERMISSION_DENIED,
        "STEP_UP_REQUIRED",
    )
    spent = await kyc.step_up()
    await refused(
        kyc.check(reviewed, step_up_token=spent, expected_version=reviewed.version - 1),
        grpc.StatusCode.ABORTED,
        "CONFLICT",
    )
    await refused(
        kyc.check(reviewed, step_up_token=spent), grpc.StatusCode.PERMISSION_DENIED, "STEP_UP_REQUIRED"
    )
    # A holder of the approver role without a session at the auth service has no step-up.
    await refused(
        kyc.stub.CheckReview(
            service.CheckReviewRequest(
                request_id=request_id(),
                submission_id=reviewed.submission_id,
                verdict=1,
                step_up_token=spent,
                expected_version=reviewed.version,
            ),
            metadata=kyc.user(new_id(), "approver"),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "STEP_UP_REQUIRED",
    )
    approved = await kyc.check(reviewed)
    assert approved.state == APPROVED and approved.check.checker_id == checker
    assert approved.HasField("decide_time")

    status = await kyc.stub.GetKycStatus(service.GetKycStatusRequest(), metadata=kyc.user(applicant))
    assert (
        status.status.level == L2 and status.status.next_level == L3 and not status.status.open_submission_id
    )
    after = await limits(kyc, applicant)
    assert after[WITHDRAW].allowed and after[WITHDRAW].daily_max.amount == "5000000"
    assert after[API_ACCESS].allowed and not after[API_ACCESS].HasField("daily_max")
    mine = await kyc.stub.GetMyLimits(
        service.GetMyLimitsRequest(actions=[WITHDRAW]), metadata=kyc.user(applicant)
    )
    assert mine.level == L2 and [limit.action for limit in mine.limits] == [WITHDRAW]
    profile = await kyc.stub.GetKycProfile(service.GetKycProfileRequest(user_id=applicant))
    assert profile.profile.level == L2 and profile.profile.sanctions_status == 2  # CLEAR
    assert profile.profile.risk_assessment.rating == 1 and profile.profile.country_of_residence == "DE"

    changed = await kyc.events(kyc_events_pb2.KycLevelChanged)
    assert [(e.user_id, e.previous_level, e.new_level) for e in changed] == [(applicant, L0, L2)]
    decided = await kyc.events(kyc_events_pb2.KycSubmissionApproved)
    assert [(e.reviewer_id, e.checker_id, e.approved_level) for e in decided] == [(maker, checker, L2)]
    assert len(await kyc.events(kyc_events_pb2.KycDocumentUploaded)) == 2
    assert len(await kyc.events(kyc_events_pb2.KycSubmissionSubmitted)) == 1
    assert len(await kyc.events(kyc_events_pb2.KycSubmissionReviewed)) == 1
    assert len(await kyc.events(kyc_events_pb2.SanctionsScreeningCompleted)) == 1
    assert len(await kyc.events(kyc_events_pb2.AmlRiskRatingChanged)) == 1


async def test_request_for_information_then_rejection(kyc_with_auth: Kyc) -> None:
    kyc = kyc_with_auth
    applicant, maker = new_id(), new_id()
    submitted = await kyc.apply(applicant, level=L2)
    asked = await kyc.review(
        submitted.submission_id, maker, decision=3, reasons=[1], message_to_user="the scan is blurred"
    )
    assert asked.state == NEEDS_INFORMATION
    informed = await kyc.events(kyc_events_pb2.KycInformationRequested)
    assert [(e.user_id, list(e.reasons)) for e in informed] == [(applicant, [1])]
    mine = await kyc.stub.GetSubmission(
        service.GetSubmissionRequest(submission_id=submitted.submission_id), metadata=kyc.user(applicant)
    )
    assert mine.submission.review.message_to_user == "the scan is blurred"
    assert not mine.submission.review.internal_note  # internal notes never reach the applicant
    await kyc.stub.UploadDocument(
        service.UploadDocumentRequest(
            request_id=request_id(), submission_id=submitted.submission_id, type=2, inline=inline(JPEG + b"2")
        ),
        metadata=kyc.user(applicant),
    )
    again = await kyc.stub.SubmitSubmission(
        service.SubmitSubmissionRequest(
            request_id=request_id(), submission_id=submitted.submission_id, attest_truthful=True
        ),
        metadata=kyc.user(applicant),
    )
    assert again.submission.state == PENDING_REVIEW
    resubmitted = await kyc.events(kyc_events_pb2.KycSubmissionSubmitted)
    assert [e.resubmission for e in resubmitted] == [False, True]
    proposed = await kyc.review(submitted.submission_id, maker, decision=2, reasons=[3])
    returned = await kyc.check(proposed, verdict=2, note="look at the address again")
    assert returned.state == PENDING_REVIEW
    assert len(await kyc.events(kyc_events_pb2.KycReviewReturned)) == 1
    proposed = await kyc.review(submitted.submission_id, maker, decision=2, reasons=[3])
    rejected = await kyc.check(proposed)
    assert rejected.state == REJECTED
    assert [list(e.reasons) for e in await kyc.events(kyc_events_pb2.KycSubmissionRejected)] == [[3]]
    status = await kyc.stub.GetKycStatus(service.GetKycStatusRequest(), metadata=kyc.user(applicant))
    assert status.status.level == L0 and not status.status.open_submission_id
    # A finished application frees the user to apply again.
    await kyc.apply(applicant, level=L1, documents=())


async def test_refusals_are_precise_and_change_nothing(kyc: Kyc) -> None:
    applicant, other, maker = new_id(), new_id(), new_id()
    me = kyc.user(applicant)
    create = service.CreateSubmissionRequest(
        request_id="create-once-1", target_level=L2, personal_data=personal_data()
    )
    first = await kyc.stub.CreateSubmission(create, metadata=me)
    assert await kyc.stub.CreateSubmission(create, metadata=me) == first  # replayed, not created twice
    reused = service.CreateSubmissionRequest(request_id="create-once-1", target_level=L3)
    await refused(
        kyc.stub.CreateSubmission(reused, metadata=me),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    second = service.CreateSubmissionRequest(request_id=request_id(), target_level=L3)
    await refused(
        kyc.stub.CreateSubmission(second, metadata=me), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE"
    )
    await refused(
        kyc.stub.CreateSubmission(
            service.CreateSubmissionRequest(request_id=request_id(), target_level=L0), metadata=me
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(kyc.stub.CreateSubmission(second), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    submission_id = first.submission.submission_id

    submit = service.SubmitSubmissionRequest(
        request_id=request_id(), submission_id=submission_id, attest_truthful=True
    )
    info = await refused(
        kyc.stub.SubmitSubmission(submit, metadata=me),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SUBMISSION_INCOMPLETE",
    )
    assert info.metadata["missing_documents"] == "PASSPORT,SELFIE" and not info.metadata["missing_fields"]

    def upload(content: service.InlineContent, **fields: object) -> service.UploadDocumentRequest:
        values: dict[str, object] = {"request_id": request_id(), "submission_id": submission_id, "type": 1}
        values.update(fields)
        return service.UploadDocumentRequest(inline=content, **values)  # type: ignore[arg-type]

    tampered = inline(JPEG)
    tampered.sha256 = "0" * 64
    await refused(
        kyc.stub.UploadDocument(upload(tampered), metadata=me),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        kyc.stub.UploadDocument(upload(inline(PNG)), metadata=me),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        kyc.stub.UploadDocument(upload(inline(JPEG), expiry_date="2020-01-01"), metadata=me),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    # Someone else's submission does not exist for them.
    await refused(
        kyc.stub.UploadDocument(upload(inline(JPEG)), metadata=kyc.user(other)),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    await refused(
        kyc.stub.GetSubmission(
            service.GetSubmissionRequest(submission_id=submission_id), metadata=kyc.user(other)
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    # Uploading twice under one request id stores one document.
    once = upload(inline(JPEG))
    stored = await kyc.stub.UploadDocument(once, metadata=me)
    assert await kyc.stub.UploadDocument(once, metadata=me) == stored
    await kyc.stub.UploadDocument(upload(inline(SELFIE), type=5), metadata=me)
    deleted = await kyc.stub.DeleteDocument(
        service.DeleteDocumentRequest(
            request_id=request_id(), submission_id=submission_id, document_id=stored.document.document_id
        ),
        metadata=me,
    )
    assert [d.type for d in deleted.submission.documents] == [5] and list(
        deleted.submission.missing_documents
    ) == [1]
    assert not (kyc.documents_dir / "documents" / applicant / stored.document.document_id).exists()
    await kyc.stub.UploadDocument(upload(inline(JPEG)), metadata=me)
    submitted = await kyc.stub.SubmitSubmission(submit, metadata=me)
    assert submitted.submission.state == PENDING_REVIEW
    assert await kyc.stub.SubmitSubmission(submit, metadata=me) == submitted  # an idempotent retry

    # Roles: an end user cannot review; staff never review their own application.
    review = service.ReviewSubmissionRequest(
        request_id=request_id(),
        submission_id=submission_id,
        decision=1,
        approved_level=L2,
        internal_note="ok",
    )
    await refused(
        kyc.stub.ReviewSubmission(review, metadata=me), grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"
    )
    info = await refused(
        kyc.stub.ReviewSubmission(review, metadata=kyc.user(applicant, "operator")),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    assert info.metadata["rule"] == "MAKER_CHECKER"
    too_high = service.ReviewSubmissionRequest(
        request_id=request_id(),
        submission_id=submission_id,
        decision=1,
        approved_level=L3,
        internal_note="ok",
    )
    await refused(
        kyc.stub.ReviewSubmission(too_high, metadata=kyc.user(maker, "operator")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    no_reasons = service.ReviewSubmissionRequest(
        request_id=request_id(), submission_id=submission_id, decision=2, internal_note="no"
    )
    await refused(
        kyc.stub.ReviewSubmission(no_reasons, metadata=kyc.user(maker, "operator")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    edit = service.UpdateSubmissionRequest(
        request_id=request_id(),
        submission=resources.Submission(submission_id=submission_id),
        update_mask=field_mask_pb2.FieldMask(paths=["personal_data.occupation"]),
    )
    await refused(
        kyc.stub.UpdateSubmission(edit, metadata=me), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE"
    )
    assert len(await kyc.events(kyc_events_pb2.KycSubmissionReviewed)) == 0
    assert len(await kyc.events(kyc_events_pb2.KycDocumentUploaded)) == 3


async def test_update_by_field_mask_and_personal_data_encrypted_at_rest(kyc: Kyc) -> None:
    applicant = new_id()
    me = kyc.user(applicant)
    created = await kyc.stub.CreateSubmission(
        service.CreateSubmissionRequest(
            request_id=request_id(), target_level=L1, personal_data=personal_data()
        ),
        metadata=me,
    )
    submission_id = created.submission.submission_id
    change = created.submission
    change.personal_data.family_name = "Gabler"
    change.personal_data.tax_id = "DE-77-1234"
    updated = await kyc.stub.UpdateSubmission(
        service.UpdateSubmissionRequest(
            request_id=request_id(),
            submission=change,
            update_mask=field_mask_pb2.FieldMask(paths=["personal_data.family_name"]),
        ),
        metadata=me,
    )
    assert updated.submission.personal_data.family_name == "Gabler"
    assert updated.submission.personal_data.tax_id == ""  # not in the mask
    assert updated.submission.personal_data.given_names == "Erika"
    await refused(
        kyc.stub.UpdateSubmission(
            service.UpdateSubmissionRequest(
                request_id=request_id(),
                submission=change,
                update_mask=field_mask_pb2.FieldMask(paths=["personal_data.shoe_size"]),
            ),
            metadata=me,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    uploaded = await kyc.stub.UploadDocument(
        service.UploadDocumentRequest(
            request_id=request_id(), submission_id=submission_id, type=1, inline=inline(JPEG)
        ),
        metadata=me,
    )
    await kyc.stub.SubmitSubmission(
        service.SubmitSubmissionRequest(
            request_id=request_id(), submission_id=submission_id, attest_truthful=True
        ),
        metadata=me,
    )
    async with kyc.app.database.transaction() as session:
        raw = (
            await session.execute(
                select(store.submissions.c.personal_data).where(
                    store.submissions.c.submission_id == submission_id
                )
            )
        ).scalar_one()
        names = (await session.execute(select(store.screenings.c.sealed_name))).scalars().all()
    assert b"Gabler" not in raw and b"Erika" not in raw and b"1984-08-12" not in raw
    assert names and all(b"Gabler" not in sealed and b"Erika" not in sealed for sealed in names)
    on_disk = (kyc.documents_dir / "documents" / applicant / uploaded.document.document_id).read_bytes()
    assert b"passport scan" not in on_disk and len(on_disk) > len(JPEG)
    # The stored blob is bound to its row: copied into another submission, it does not open.
    other = await kyc.stub.CreateSubmission(
        service.CreateSubmissionRequest(request_id=request_id(), target_level=L1), metadata=kyc.user(new_id())
    )
    async with kyc.app.database.transaction() as session:
        await session.execute(
            store.submissions.update()
            .where(store.submissions.c.submission_id == other.submission.submission_id)
            .values(personal_data=raw)
        )
    await refused(
        kyc.stub.GetSubmissionForReview(
            service.GetSubmissionForReviewRequest(submission_id=other.submission.submission_id),
            metadata=kyc.user(new_id(), "operator"),
        ),
        grpc.StatusCode.DATA_LOSS,
        "SEALED_DATA_UNREADABLE",
    )


async def test_levels_describe_requirements_and_limits(kyc: Kyc) -> None:
    listed = await kyc.stub.ListKycLevels(service.ListKycLevelsRequest(), metadata=kyc.user(new_id()))
    assert [level.level for level in listed.levels] == [L0, L1, L2, L3]
    assert listed.valuation_asset.id == "fiat:USD"
    l2 = listed.levels[2]
    assert list(l2.required_documents) == [1, 5] and "date_of_birth" in l2.required_fields
    allowed = {limit.action: limit.allowed for limit in l2.limits}
    assert allowed[WITHDRAW] and allowed[API_ACCESS] and not allowed[6]  # RWA_SUBSCRIBE needs L3


async def test_the_maker_never_checks_and_only_reviewed_submissions_are_checked(kyc_with_auth: Kyc) -> None:
    kyc = kyc_with_auth
    submitted = await kyc.apply(new_id(), level=L2)
    await refused(kyc.check(submitted), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE")
    # The checker (an admin, who may also review) made this review: checking it is refused.
    reviewed = await kyc.review(
        submitted.submission_id, kyc.checker_id, level=L2, metadata=await kyc.checker()
    )
    info = await refused(kyc.check(reviewed), grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert info.metadata["rule"] == "MAKER_CHECKER"
    assert len(await kyc.events(kyc_events_pb2.KycSubmissionApproved)) == 0
