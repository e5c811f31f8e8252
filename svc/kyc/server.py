"""KycService: translates the contract's messages to the KYC rules and records, one transaction per
operation (idempotent by request_id), with its events in the same transaction.

Who may call what: end users reach their own status, limits and submissions (anyone else's is
NOT_FOUND to them); staff roles reach the review queue and the sanctions cases; services (a
caller without an end user, admitted by the catalog) reach profiles, limits and screening.
Maker-checker: the maker (operator) and the checker (approver) of a review or of a sanctions
resolution are two different people, and neither is the applicant.
"""

from __future__ import annotations

import datetime
import hashlib
import time
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import grpc
from finmesh.kyc.v1 import kyc_resources_pb2 as resources
from finmesh.kyc.v1 import kyc_service_pb2 as service
from finmesh.kyc.v1 import kyc_service_pb2_grpc as service_grpc
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import errors, idempotency, paging, principals
from svc.kit.db import Database
from svc.kit.sealing import Sealer, SealingError
from svc.kyc import convert, domain, events, store
from svc.kyc.domain import (
    Action,
    CheckerVerdict,
    DocumentState,
    Level,
    Limit,
    ReviewDecision,
    SanctionsStatus,
    ScreeningState,
    SubmissionState,
)
from svc.kyc.registry import (
    STATE_ACTIVE,
    STATE_DISCARDED,
    STATE_STAGED,
    ActiveList,
    SanctionsRegistry,
    compared,
    entry_rows,
    supersede_active,
    version_ids,
)
from svc.kyc.sanctions import (
    SanctionsList,
    SanctionsListError,
    parse,
    score_text,
    screen_address,
    screen_name,
)
from svc.kyc.stepup import StepUp
from svc.kyc.storage import ObjectStore

SERVICE = "/finmesh.kyc.v1.KycService/"
OPERATOR_ROLES = frozenset({"operator", "admin"})
APPROVER_ROLES = frozenset({"approver", "admin"})
READER_ROLES = frozenset({"operator", "approver", "auditor", "admin"})
PROFILE_READER_ROLES = READER_ROLES | {"support"}
DECISION_ALLOW, DECISION_REVIEW, DECISION_DENY = 1, 2, 3
RESOLUTION_FALSE_POSITIVE, RESOLUTION_CONFIRMED = 1, 2
METHOD_AUTOMATIC = 1
CONTEXT_ONBOARDING = 1
CONTEXT_LIST_UPDATE = 3
RESCREEN_ADDRESSES_DAYS = 365
# The id of a document derives from its request, so a retried upload rewrites the same object.
DOCUMENT_ID_NAMESPACE = uuid.UUID("3c6f3a57-0b1e-4f4e-9d53-6b0a7c1f2e90")
CONTENT_MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "application/pdf": (b"%PDF-",),
}


class SubmissionIncomplete(errors.DomainError):
    """Required personal data or documents are missing for the target level."""

    reason = "SUBMISSION_INCOMPLETE"


class SealedDataUnreadable(errors.DomainError):
    """A sealed blob does not open under its record: tampered, moved to another row, or the key is gone."""

    code = grpc.StatusCode.DATA_LOSS
    reason = "SEALED_DATA_UNREADABLE"


class SanctionsCaseOpen(errors.DomainError):
    """An approval while the applicant has an unresolved or confirmed sanctions match."""

    reason = "SANCTIONS_CASE_OPEN"


def _now_us() -> int:
    return time.time_ns() // 1000


def _violation(field: str, description: str) -> errors.InvalidArgument:
    return errors.InvalidArgument([errors.FieldViolation(field, description)])


def _require_editable(record: store.Submission, consequence: str) -> None:
    state = SubmissionState(record.state)
    if state not in domain.EDITABLE_SUBMISSION_STATES:
        raise errors.InvalidState(
            f"submission {record.submission_id} is {state.name}: {consequence}",
            metadata={"submission_id": record.submission_id, "state": state.name},
        )


def _personal_aad(submission_id: str) -> bytes:
    return b"kyc.submission:" + submission_id.encode()


def _name_aad(screening_id: str) -> bytes:
    return b"kyc.screening:" + screening_id.encode()


def _document_aad(document_id: str) -> bytes:
    return b"kyc.document:" + document_id.encode()


def _full_name(data: resources.PersonalData) -> str:
    return " ".join(part for part in (data.given_names.strip(), data.family_name.strip()) if part)


def _name_subject(data: resources.PersonalData) -> resources.NameSubject:
    return resources.NameSubject(
        full_name=_full_name(data),
        date_of_birth=data.date_of_birth,
        nationalities=list(data.nationalities),
        is_person=True,
    )


def _countries(data: resources.PersonalData) -> frozenset[str]:
    found = set(data.nationalities)
    for country in (data.residential_address.country, data.tax_residence_country):
        if country:
            found.add(country)
    return frozenset(found)


def _require_staged(record: store.SanctionsVersion, consequence: str) -> None:
    if record.state != STATE_STAGED:
        state = resources.SanctionsListState.Name(record.state).removeprefix("SANCTIONS_LIST_STATE_")  # type: ignore[arg-type]
        raise errors.InvalidState(
            f"sanctions list version {record.version_id} is {state}: {consequence}",
            metadata={"version_id": record.version_id, "state": state},
        )


def _imported_list(request: service.ImportSanctionsListRequest) -> SanctionsList:
    """The file of an import, parsed and checked; INVALID_ARGUMENT naming each invalid record."""
    if request.WhichOneof("file") == "object_key":
        raise errors.Unimplemented(
            "this deployment has no compliance bucket to read object_key from: send the file in data"
        )
    violations = []
    try:
        datetime.date.fromisoformat(request.published_date)
    except ValueError:
        violations.append(errors.FieldViolation("published_date", "not a calendar date"))
    sha256 = hashlib.sha256(request.data).hexdigest()
    if sha256 != request.file_sha256:
        violations.append(errors.FieldViolation("file_sha256", f"the file's SHA-256 is {sha256}"))
    if violations:
        raise errors.InvalidArgument(violations)
    try:
        return parse(
            request.data,
            source=int(request.source),
            json_layout=request.format == resources.SANCTIONS_LIST_FORMAT_JSON,
        )
    except SanctionsListError as error:
        problems = error.problems or (str(error),)
        raise errors.InvalidArgument(
            [errors.FieldViolation("data", problem) for problem in problems], f"the list is refused: {error}"
        ) from None


class KycServicer(service_grpc.KycServiceServicer):
    """The KYC service's gRPC surface over its store, the object store and the sanctions list."""

    def __init__(
        self,
        database: Database,
        sealer: Sealer,
        documents: ObjectStore,
        registry: SanctionsRegistry,
        step_up: StepUp,
        *,
        name_threshold: str,
        deny_threshold: str,
        high_risk_countries: frozenset[str],
        limits: Mapping[Level, Mapping[Action, Limit]] = domain.DEFAULT_LIMITS,
    ) -> None:
        self.database = database
        self.sealer = sealer
        self.documents = documents
        self.registry = registry
        self.step_up = step_up
        self.name_threshold = name_threshold
        self.deny_threshold = Decimal(deny_threshold)
        self.high_risk_countries = high_risk_countries
        self.limits = limits

    # -- helpers ---------------------------------------------------------------------------------

    async def _once(self, method: str, request: Message, response_type: type[Any], work: Any) -> Any:
        return await idempotency.run_once(self.database, SERVICE + method, request, response_type, work)

    def _unseal(self, blob: bytes, aad: bytes, what: str) -> bytes:
        try:
            return self.sealer.open(blob, aad=aad)
        except SealingError:
            raise SealedDataUnreadable(
                f"the stored {what} does not open", metadata={"record": what}
            ) from None

    def _open_data(self, record: store.Submission) -> resources.PersonalData:
        return resources.PersonalData.FromString(
            self._unseal(record.personal_data, _personal_aad(record.submission_id), "personal data")
        )

    def _seal_data(self, submission_id: str, data: resources.PersonalData) -> bytes:
        return self.sealer.seal(data.SerializeToString(deterministic=True), aad=_personal_aad(submission_id))

    async def _profile(self, session: AsyncSession, user_id: str, *, lock: bool = False) -> store.Profile:
        found = await store.profile(session, user_id, lock=lock)
        return found if found is not None else store.Profile(user_id=user_id, update_time_us=_now_us())

    async def _own_submission(
        self, session: AsyncSession, submission_id: str, *, lock: bool = False
    ) -> store.Submission:
        user = principals.require_end_user()
        found = await store.submission(session, submission_id, lock=lock)
        if found is None or found.user_id != user.subject:
            raise errors.NotFound(f"no submission {submission_id}", metadata={"submission_id": submission_id})
        return found

    async def _any_submission(
        self, session: AsyncSession, submission_id: str, *, lock: bool = False
    ) -> store.Submission:
        found = await store.submission(session, submission_id, lock=lock)
        if found is None:
            raise errors.NotFound(f"no submission {submission_id}", metadata={"submission_id": submission_id})
        return found

    async def _submission_message(
        self, session: AsyncSession, record: store.Submission, *, with_data: bool, staff: bool
    ) -> resources.Submission:
        documents = (await store.documents_of(session, [record.submission_id]))[record.submission_id]
        screening_ids: list[str] = []
        if staff:
            screening_ids = [
                screening.screening_id
                for screening in await store.list_screenings(
                    session, limit=paging.PAGE_SIZE_MAX, reference_id=record.submission_id
                )
            ]
        message = convert.submission_message(
            record, documents, self._open_data(record) if with_data else None, screening_ids
        )
        return message if staff else convert.for_applicant(message)

    def _change(self, record: store.Submission, target: SubmissionState) -> None:
        domain.require_transition(SubmissionState(record.state), target, record.submission_id)
        record.state = int(target)
        record.update_time_us = _now_us()
        if target in domain.TERMINAL_SUBMISSION_STATES:
            record.open_user_id = None

    async def _latest_data(self, session: AsyncSession, user_id: str) -> resources.PersonalData:
        """The personal data of the user's latest submission that got past DRAFT, or empty."""
        for record in await store.list_submissions(session, user_id=user_id, limit=paging.PAGE_SIZE_MAX):
            if record.submit_time_us is not None:
                return self._open_data(record)
        return resources.PersonalData()

    async def _reassess(
        self, session: AsyncSession, profile: store.Profile, data: resources.PersonalData
    ) -> store.Assessment:
        """Runs the AML model, records the assessment and sets it on the profile (saved by the caller)."""
        now = datetime.datetime.now(datetime.UTC)
        result = domain.assess(
            domain.RiskInputs(
                politically_exposed=data.politically_exposed,
                countries=_countries(data),
                source_of_funds=int(data.source_of_funds),
                level=Level(profile.level),
                sanctions=SanctionsStatus(profile.sanctions_status),
            ),
            self.high_risk_countries,
        )
        previous = (
            await store.assessment(session, profile.risk_assessment_id)
            if profile.risk_assessment_id
            else None
        )
        record = store.Assessment(
            assessment_id=str(uuid.uuid4()),
            user_id=profile.user_id,
            rating=int(result.rating),
            score=result.score,
            factors=convert.factors_of(result),
            method=METHOD_AUTOMATIC,
            model_version=domain.RISK_MODEL_VERSION,
            assess_time_us=int(now.timestamp() * 1_000_000),
            next_review_time_us=int(domain.next_review(result.rating, now).timestamp() * 1_000_000),
        )
        await store.insert_assessment(session, record)
        profile.risk_assessment_id = record.assessment_id
        if previous is None or previous.rating != record.rating:
            await events.risk_rating_changed(
                session,
                profile,
                previous.rating if previous is not None else 0,
                record.rating,
                record.score,
                record.method,
                record.assessment_id,
            )
        return record

    async def _set_sanctions_status(
        self, session: AsyncSession, profile: store.Profile, status: SanctionsStatus, screening_id: str
    ) -> None:
        previous = profile.sanctions_status
        if previous == status:
            return
        profile.sanctions_status = int(status)
        profile.sanctions_screening_id = screening_id
        await events.sanctions_status_changed(session, profile, previous, screening_id)

    def _answers(
        self, profile: store.Profile, rating: int, actions: Sequence[int]
    ) -> list[resources.ActionLimit]:
        wanted = [Action(action) for action in actions] or list(Action)
        return [
            convert.action_limit(
                domain.may(
                    action,
                    Level(profile.level),
                    SanctionsStatus(profile.sanctions_status),
                    domain.RiskRating(rating) if rating else None,
                    self.limits,
                )
            )
            for action in wanted
        ]

    async def _rating(self, session: AsyncSession, profile: store.Profile) -> int:
        if not profile.risk_assessment_id:
            return 0
        found = await store.assessment(session, profile.risk_assessment_id)
        return found.rating if found is not None else 0

    # -- the user's own view ---------------------------------------------------------------------

    async def GetKycStatus(self, request: service.GetKycStatusRequest, context: Any) -> Any:
        user = principals.require_end_user()
        async with self.database.transaction() as session:
            profile = await self._profile(session, user.subject)
            open_ones = await store.list_submissions(session, user_id=user.subject, limit=1)
        status = resources.KycStatus(level=profile.level)  # type: ignore[arg-type]
        if profile.level < Level.L3:
            status.next_level = profile.level + 1  # type: ignore[assignment]
        if open_ones and open_ones[0].open_user_id is not None:
            status.open_submission_id = open_ones[0].submission_id
            status.open_submission_state = open_ones[0].state  # type: ignore[assignment]
        return service.GetKycStatusResponse(status=status)

    async def ListKycLevels(self, request: service.ListKycLevelsRequest, context: Any) -> Any:
        if request.page_token:
            raise _violation("page_token", "every level fits on the first page")
        levels = list(Level)[: paging.page_size(request.page_size)]
        return service.ListKycLevelsResponse(
            levels=[convert.level_definition(level, self.limits) for level in levels],
            valuation_asset=convert.VALUATION_ASSET,
        )

    async def GetMyLimits(self, request: service.GetMyLimitsRequest, context: Any) -> Any:
        user = principals.require_end_user()
        async with self.database.transaction() as session:
            profile = await self._profile(session, user.subject)
            rating = await self._rating(session, profile)
        return service.GetMyLimitsResponse(
            level=profile.level,  # type: ignore[arg-type]
            limits=self._answers(profile, rating, request.actions),
            valuation_asset=convert.VALUATION_ASSET,
        )

    # -- submissions -----------------------------------------------------------------------------

    async def CreateSubmission(self, request: service.CreateSubmissionRequest, context: Any) -> Any:
        user = principals.require_end_user()

        async def work(session: AsyncSession) -> service.CreateSubmissionResponse:
            profile = await self._profile(session, user.subject)
            domain.check_target_level(Level(request.target_level), Level(profile.level))
            now_us = _now_us()
            submission_id = str(uuid.uuid4())
            record = store.Submission(
                submission_id=submission_id,
                user_id=user.subject,
                open_user_id=user.subject,
                target_level=int(request.target_level),
                state=int(SubmissionState.DRAFT),
                personal_data=self._seal_data(submission_id, request.personal_data),
                create_time_us=now_us,
                update_time_us=now_us,
            )
            await store.insert_submission(session, record)
            return service.CreateSubmissionResponse(
                submission=await self._submission_message(session, record, with_data=True, staff=False)
            )

        try:
            return await self._once("CreateSubmission", request, service.CreateSubmissionResponse, work)
        except IntegrityError:
            raise errors.InvalidState(
                "another submission of this user is not finished yet", metadata={"user_id": user.subject}
            ) from None

    async def GetSubmission(self, request: service.GetSubmissionRequest, context: Any) -> Any:
        async with self.database.transaction() as session:
            record = await self._own_submission(session, request.submission_id)
            return service.GetSubmissionResponse(
                submission=await self._submission_message(session, record, with_data=True, staff=False)
            )

    async def ListSubmissions(self, request: service.ListSubmissionsRequest, context: Any) -> Any:
        user = principals.require_end_user()
        limit = paging.page_size(request.page_size)
        after = paging.position(request.page_token, "create_time_us", "submission_id")
        async with self.database.transaction() as session:
            found = await store.list_submissions(
                session,
                user_id=user.subject,
                limit=limit + 1,
                after=after,
            )
            page = found[:limit]
            response = service.ListSubmissionsResponse(
                submissions=[
                    await self._submission_message(session, record, with_data=False, staff=False)
                    for record in page
                ]
            )
        response.next_page_token = paging.next_token(found, limit, "create_time_us", "submission_id")
        return response

    async def UpdateSubmission(self, request: service.UpdateSubmissionRequest, context: Any) -> Any:
        whole = "personal_data" in request.update_mask.paths
        mask = field_mask_pb2.FieldMask(
            paths=[
                path.removeprefix("personal_data.")
                for path in request.update_mask.paths
                if path != "personal_data"
            ]
        )
        if not request.update_mask.paths or not all(
            path == "personal_data" or path.startswith("personal_data.") for path in request.update_mask.paths
        ):
            raise _violation("update_mask", "name fields under personal_data")
        if not mask.IsValidForDescriptor(resources.PersonalData.DESCRIPTOR):
            raise _violation("update_mask", "names a field that PersonalData does not have")

        async def work(session: AsyncSession) -> service.UpdateSubmissionResponse:
            record = await self._own_submission(session, request.submission.submission_id, lock=True)
            _require_editable(record, "its personal data can no longer change")
            data = self._open_data(record)
            if whole:
                data.CopyFrom(request.submission.personal_data)
            else:
                mask.MergeMessage(request.submission.personal_data, data, True, True)
            record.personal_data = self._seal_data(record.submission_id, data)
            record.update_time_us = _now_us()
            await store.update_submission(session, record)
            return service.UpdateSubmissionResponse(
                submission=await self._submission_message(session, record, with_data=True, staff=False)
            )

        return await self._once("UpdateSubmission", request, service.UpdateSubmissionResponse, work)

    async def UploadDocument(self, request: service.UploadDocumentRequest, context: Any) -> Any:
        user = principals.require_end_user()
        if request.WhichOneof("content") != "inline":
            raise errors.NotFound(
                "no completed direct upload with this id: this store takes documents inline",
                metadata={"upload_id": request.upload_id},
            )
        content = request.inline
        if hashlib.sha256(content.data).hexdigest() != content.sha256:
            raise _violation("inline.sha256", "does not match the SHA-256 of inline.data")
        if not content.data.startswith(CONTENT_MAGIC[content.content_type]):
            raise _violation("inline.data", f"the content is not {content.content_type}")
        if request.expiry_date and request.expiry_date <= datetime.date.today().isoformat():
            raise _violation("expiry_date", "the document has expired")
        document_id = str(uuid.uuid5(DOCUMENT_ID_NAMESPACE, f"{user.subject}:{request.request_id}"))

        async def work(session: AsyncSession) -> service.UploadDocumentResponse:
            record = await self._own_submission(session, request.submission_id, lock=True)
            _require_editable(record, "documents can no longer be added")
            existing = (await store.documents_of(session, [record.submission_id]))[record.submission_id]
            if len(existing) >= domain.SUBMISSION_DOCUMENTS_MAX:
                raise errors.LimitExceeded(
                    f"a submission holds at most {domain.SUBMISSION_DOCUMENTS_MAX} documents",
                    metadata={"submission_id": record.submission_id},
                )
            object_key = f"documents/{user.subject}/{document_id}"
            await self.documents.put(
                object_key, self.sealer.seal(content.data, aad=_document_aad(document_id))
            )
            document = store.Document(
                document_id=document_id,
                submission_id=record.submission_id,
                user_id=user.subject,
                type=int(request.type),
                side=int(request.side),
                content_type=content.content_type,
                size_bytes=len(content.data),
                sha256=content.sha256,
                file_name=request.file_name,
                issuing_country=request.issuing_country,
                expiry_date=request.expiry_date,
                state=int(DocumentState.UPLOADED),
                rejection_reason=0,
                object_key=object_key,
                upload_time_us=_now_us(),
            )
            await store.insert_document(session, document)
            record.update_time_us = document.upload_time_us
            await store.update_submission(session, record)
            await events.document_uploaded(session, record, document_id, document.type, document.sha256)
            return service.UploadDocumentResponse(document=convert.document_message(document))

        return await self._once("UploadDocument", request, service.UploadDocumentResponse, work)

    async def DeleteDocument(self, request: service.DeleteDocumentRequest, context: Any) -> Any:
        async def work(session: AsyncSession) -> service.DeleteDocumentResponse:
            record = await self._own_submission(session, request.submission_id, lock=True)
            document = await store.document(session, request.document_id)
            if document is None or document.submission_id != record.submission_id:
                raise errors.NotFound(
                    f"no document {request.document_id} in this submission",
                    metadata={"document_id": request.document_id},
                )
            if (
                SubmissionState(record.state) not in domain.EDITABLE_SUBMISSION_STATES
                or document.state != DocumentState.UPLOADED
            ):
                raise errors.InvalidState(
                    "only unreviewed documents of an editable submission can be deleted",
                    metadata={"document_id": document.document_id},
                )
            await self.documents.delete(document.object_key)
            document.state = int(DocumentState.DELETED)
            await store.update_document(session, document)
            record.update_time_us = _now_us()
            await store.update_submission(session, record)
            return service.DeleteDocumentResponse(
                submission=await self._submission_message(session, record, with_data=True, staff=False)
            )

        return await self._once("DeleteDocument", request, service.DeleteDocumentResponse, work)

    async def SubmitSubmission(self, request: service.SubmitSubmissionRequest, context: Any) -> Any:
        """DRAFT or NEEDS_INFORMATION -> SUBMITTED, then the automatic checks (sanctions screening
        of the name) in the same transaction -> PENDING_REVIEW."""
        lists = await self.registry.active()

        async def work(session: AsyncSession) -> service.SubmitSubmissionResponse:
            record = await self._own_submission(session, request.submission_id, lock=True)
            resubmission = record.state == SubmissionState.NEEDS_INFORMATION
            domain.require_transition(
                SubmissionState(record.state), SubmissionState.SUBMITTED, record.submission_id
            )
            data = self._open_data(record)
            level = Level(record.target_level)
            documents = (await store.documents_of(session, [record.submission_id]))[record.submission_id]
            usable = [domain.DocumentType(d.type) for d in documents if d.state != DocumentState.REJECTED]
            fields_missing = domain.missing_fields(level, convert.present_fields(data))
            documents_missing = domain.missing_documents(level, usable)
            if fields_missing or documents_missing:
                raise SubmissionIncomplete(
                    f"the application for {level.name} is incomplete",
                    metadata={
                        "missing_fields": ",".join(fields_missing),
                        "missing_documents": ",".join(kind.name for kind in documents_missing),
                    },
                )
            now_us = _now_us()
            self._change(record, SubmissionState.SUBMITTED)
            record.submit_time_us = now_us
            record.resubmissions += 1 if resubmission else 0
            await store.update_submission(session, record)
            await events.submitted(session, record)
            profile = await self._profile(session, record.user_id, lock=True)
            subject = _name_subject(data)
            await self._screen_name_in(
                session,
                profile,
                subject,
                CONTEXT_ONBOARDING,
                record.submission_id,
                self.name_threshold,
                lists,
            )
            await self._reassess(session, profile, data)
            profile.update_time_us = now_us
            await store.save_profile(session, profile)
            self._change(record, SubmissionState.PENDING_REVIEW)
            await store.update_submission(session, record)
            return service.SubmitSubmissionResponse(
                submission=await self._submission_message(session, record, with_data=True, staff=False)
            )

        return await self._once("SubmitSubmission", request, service.SubmitSubmissionResponse, work)

    async def CancelSubmission(self, request: service.CancelSubmissionRequest, context: Any) -> Any:
        async def work(session: AsyncSession) -> service.CancelSubmissionResponse:
            record = await self._own_submission(session, request.submission_id, lock=True)
            self._change(record, SubmissionState.CANCELLED)
            await store.update_submission(session, record)
            await events.closed(session, record)
            return service.CancelSubmissionResponse(
                submission=await self._submission_message(session, record, with_data=True, staff=False)
            )

        return await self._once("CancelSubmission", request, service.CancelSubmissionResponse, work)

    # -- review ----------------------------------------------------------------------------------

    async def SearchSubmissions(self, request: service.SearchSubmissionsRequest, context: Any) -> Any:
        staff = principals.require_roles(READER_ROLES, "the review queue")
        limit = paging.page_size(request.page_size)
        newest_first = request.order == 2  # SORT_ORDER_DESCENDING; unset is queue order
        after = paging.position(request.page_token, "create_time_us", "submission_id")
        async with self.database.transaction() as session:
            found = await store.list_submissions(
                session,
                limit=limit + 1,
                user_id=request.user_id,
                states=list(request.states),
                target_level=int(request.target_level),
                reviewer_id=request.reviewer_id,
                exclude_reviewer=staff.subject if request.exclude_reviewed_by_me else "",
                newest_first=newest_first,
                after=after,
            )
            page = found[:limit]
            response = service.SearchSubmissionsResponse(
                submissions=[
                    await self._submission_message(session, record, with_data=False, staff=True)
                    for record in page
                ]
            )
        response.next_page_token = paging.next_token(found, limit, "create_time_us", "submission_id")
        return response

    async def GetSubmissionForReview(
        self, request: service.GetSubmissionForReviewRequest, context: Any
    ) -> Any:
        principals.require_roles(READER_ROLES, "reading an application")
        async with self.database.transaction() as session:
            record = await self._any_submission(session, request.submission_id)
            message = await self._submission_message(session, record, with_data=True, staff=True)
            profile = await self._profile(session, record.user_id)
            assessment = await store.assessment(session, profile.risk_assessment_id)
            open_submission = record if record.open_user_id is not None else None
            screenings = await store.list_screenings(
                session, limit=paging.PAGE_SIZE_MAX, reference_id=record.submission_id
            )
            return service.GetSubmissionForReviewResponse(
                submission=message,
                profile=convert.profile_message(profile, assessment, open_submission),
                screenings=[convert.screening_message(item, self._name_of(item)) for item in screenings],
            )

    async def GetDocumentContent(self, request: service.GetDocumentContentRequest, context: Any) -> Any:
        principals.require_roles(READER_ROLES, "reading a document")
        async with self.database.transaction() as session:
            document = await store.document(session, request.document_id)
        if document is None or document.state == DocumentState.DELETED:
            raise errors.NotFound(
                f"no document {request.document_id}", metadata={"document_id": request.document_id}
            )
        sealed = await self.documents.get(document.object_key)
        data = self._unseal(sealed, _document_aad(document.document_id), "document")
        if hashlib.sha256(data).hexdigest() != document.sha256:
            raise errors.DomainError(
                "document content does not match its recorded SHA-256",
                metadata={"document_id": document.document_id},
            )
        return service.GetDocumentContentResponse(document=convert.document_message(document), data=data)

    async def ReviewSubmission(self, request: service.ReviewSubmissionRequest, context: Any) -> Any:
        maker = principals.require_roles(OPERATOR_ROLES, "reviewing an application")
        decision = ReviewDecision(request.decision)
        if decision is ReviewDecision.APPROVE and not request.approved_level:
            raise _violation("approved_level", "an approval names the level to grant")
        if decision is ReviewDecision.APPROVE and Level(request.approved_level) is Level.L0:
            raise _violation("approved_level", "an approval grants L1, L2 or L3")
        if decision is not ReviewDecision.APPROVE and not request.reasons:
            raise _violation("reasons", "a rejection or a request for information gives its reasons")

        async def work(session: AsyncSession) -> service.ReviewSubmissionResponse:
            record = await self._any_submission(session, request.submission_id, lock=True)
            domain.require_not_applicant(maker.subject, record.user_id)
            if record.state != SubmissionState.PENDING_REVIEW:
                raise errors.InvalidState(
                    f"submission {record.submission_id} is {SubmissionState(record.state).name}, "
                    "not PENDING_REVIEW",
                    metadata={"submission_id": record.submission_id},
                )
            if decision is ReviewDecision.APPROVE:
                if request.approved_level > record.target_level:
                    raise _violation("approved_level", "at most the level applied for")
                profile = await self._profile(session, record.user_id)
                if profile.sanctions_status in (
                    SanctionsStatus.POTENTIAL_MATCH,
                    SanctionsStatus.CONFIRMED_MATCH,
                ):
                    raise SanctionsCaseOpen(
                        "the applicant has an unresolved or confirmed sanctions match",
                        metadata={"submission_id": record.submission_id},
                    )
            documents = {
                d.document_id: d
                for d in (await store.documents_of(session, [record.submission_id]))[record.submission_id]
            }
            for document_id, state in request.document_states.items():
                document = documents.get(document_id)
                if document is None:
                    raise _violation(f"document_states[{document_id}]", "not a document of this submission")
                document.state = int(state)
                await store.update_document(session, document)
            now_us = _now_us()
            record.reviewer_id = maker.subject
            record.review_decision = int(decision)
            record.approved_level = int(request.approved_level) if decision is ReviewDecision.APPROVE else 0
            record.review_reasons = [int(reason) for reason in request.reasons]
            record.message_to_user = request.message_to_user
            record.internal_note = request.internal_note
            record.review_time_us = now_us
            record.checker_id, record.check_verdict, record.check_note, record.check_time_us = "", 0, "", None
            if decision is ReviewDecision.REQUEST_INFORMATION:
                self._change(record, SubmissionState.NEEDS_INFORMATION)
            else:
                self._change(record, SubmissionState.AWAITING_CHECK)
            await store.update_submission(session, record)
            await events.reviewed(session, record)
            if decision is ReviewDecision.REQUEST_INFORMATION:
                await events.information_requested(session, record)
            return service.ReviewSubmissionResponse(
                submission=await self._submission_message(session, record, with_data=False, staff=True)
            )

        return await self._once("ReviewSubmission", request, service.ReviewSubmissionResponse, work)

    async def CheckReview(self, request: service.CheckReviewRequest, context: Any) -> Any:
        checker = principals.require_roles(APPROVER_ROLES, "checking a review")
        verdict = CheckerVerdict(request.verdict)
        if verdict is CheckerVerdict.RETURN and not request.note:
            raise _violation("note", "a returned review says why")
        await self.step_up.redeem(request.step_up_token, checker, f"kyc.check-review.{request.request_id}")

        async def work(session: AsyncSession) -> service.CheckReviewResponse:
            record = await self._any_submission(session, request.submission_id, lock=True)
            domain.require_not_applicant(checker.subject, record.user_id)
            if record.state != SubmissionState.AWAITING_CHECK:
                raise errors.InvalidState(
                    f"submission {record.submission_id} is {SubmissionState(record.state).name}, "
                    "not AWAITING_CHECK",
                    metadata={"submission_id": record.submission_id},
                )
            if record.version != request.expected_version:
                raise errors.Conflict(
                    f"submission {record.submission_id} is at version {record.version}, "
                    f"not {request.expected_version}",
                    metadata={"submission_id": record.submission_id, "version": str(record.version)},
                )
            domain.require_distinct(record.reviewer_id, checker.subject, "review")
            now_us = _now_us()
            record.checker_id = checker.subject
            record.check_verdict = int(verdict)
            record.check_note = request.note
            record.check_time_us = now_us
            if verdict is CheckerVerdict.RETURN:
                self._change(record, SubmissionState.PENDING_REVIEW)
                await store.update_submission(session, record)
                await events.review_returned(session, record)
            elif record.review_decision == ReviewDecision.REJECT:
                self._change(record, SubmissionState.REJECTED)
                record.decide_time_us = now_us
                await store.update_submission(session, record)
                await events.rejected(session, record)
            else:
                self._change(record, SubmissionState.APPROVED)
                record.decide_time_us = now_us
                await store.update_submission(session, record)
                await events.approved(session, record)
                await self._grant(session, record, now_us)
            return service.CheckReviewResponse(
                submission=await self._submission_message(session, record, with_data=False, staff=True)
            )

        return await self._once("CheckReview", request, service.CheckReviewResponse, work)

    async def _grant(self, session: AsyncSession, record: store.Submission, now_us: int) -> None:
        """Raises the applicant's level to the approved one and re-rates the applicant."""
        profile = await self._profile(session, record.user_id, lock=True)
        data = self._open_data(record)
        previous = profile.level
        if record.approved_level > profile.level:
            profile.level = record.approved_level
            profile.level_grant_time_us = now_us
        profile.country_of_residence = data.residential_address.country
        profile.politically_exposed = data.politically_exposed
        profile.update_time_us = now_us
        await self._reassess(session, profile, data)
        await store.save_profile(session, profile)
        if profile.level != previous:
            await events.level_changed(session, profile, previous, record.submission_id)

    # -- profiles and limits ---------------------------------------------------------------------

    async def _profile_message(self, session: AsyncSession, user_id: str) -> resources.KycProfile:
        profile = await self._profile(session, user_id)
        assessment = await store.assessment(session, profile.risk_assessment_id)
        latest = await store.list_submissions(session, user_id=user_id, limit=1)
        open_submission = latest[0] if latest and latest[0].open_user_id is not None else None
        return convert.profile_message(profile, assessment, open_submission)

    async def GetKycProfile(self, request: service.GetKycProfileRequest, context: Any) -> Any:
        principals.service_or_roles(PROFILE_READER_ROLES, "a compliance profile")
        async with self.database.transaction() as session:
            return service.GetKycProfileResponse(
                profile=await self._profile_message(session, request.user_id)
            )

    async def BatchGetKycProfiles(self, request: service.BatchGetKycProfilesRequest, context: Any) -> Any:
        principals.service_or_roles(PROFILE_READER_ROLES, "compliance profiles")
        async with self.database.transaction() as session:
            return service.BatchGetKycProfilesResponse(
                profiles=[await self._profile_message(session, user_id) for user_id in request.user_ids]
            )

    async def GetUserLimits(self, request: service.GetUserLimitsRequest, context: Any) -> Any:
        principals.service_or_roles(PROFILE_READER_ROLES, "a user's limits")
        async with self.database.transaction() as session:
            profile = await self._profile(session, request.user_id)
            rating = await self._rating(session, profile)
        return service.GetUserLimitsResponse(
            level=profile.level,  # type: ignore[arg-type]
            limits=self._answers(profile, rating, request.actions),
            valuation_asset=convert.VALUATION_ASSET,
            profile_version=profile.version,
        )

    async def DowngradeKycLevel(self, request: service.DowngradeKycLevelRequest, context: Any) -> Any:
        if principals.end_user() is not None:
            raise errors.PermissionDenied("levels are lowered by the admin service after its maker-checker")

        async def work(session: AsyncSession) -> service.DowngradeKycLevelResponse:
            profile = await self._profile(session, request.user_id, lock=True)
            if request.new_level >= profile.level:
                raise errors.InvalidState(
                    f"the user is at {Level(profile.level).name}; a downgrade goes lower",
                    metadata={"user_id": request.user_id},
                )
            previous = profile.level
            profile.level = int(request.new_level)
            profile.level_grant_time_us = profile.update_time_us = _now_us()
            await store.save_profile(session, profile)
            await events.level_changed(session, profile, previous, "")
            return service.DowngradeKycLevelResponse(
                profile=await self._profile_message(session, request.user_id)
            )

        return await self._once("DowngradeKycLevel", request, service.DowngradeKycLevelResponse, work)

    # -- screening -------------------------------------------------------------------------------

    def _name_of(self, record: store.Screening) -> resources.NameSubject | None:
        if record.sealed_name is None:
            return None
        return resources.NameSubject.FromString(
            self._unseal(record.sealed_name, _name_aad(record.screening_id), "screened name")
        )

    async def _screen_name_in(
        self,
        session: AsyncSession,
        profile: store.Profile | None,
        subject: resources.NameSubject,
        context: int,
        reference_id: str,
        threshold: str,
        lists: Sequence[ActiveList],
    ) -> store.Screening:
        """Screens a name, records the screening and its event, and moves the user's sanctions
        status (the caller saves the profile)."""
        found = [
            (match, listed)
            for listed in lists
            for match in screen_name(
                [listed.listed],
                subject.full_name,
                float(threshold),
                date_of_birth=subject.date_of_birth,
                nationalities=list(subject.nationalities),
            )
        ]
        found.sort(key=lambda pair: (-pair[0].score, pair[0].entry.entry_id))
        matches = [match for match, _ in found]
        screening_id = str(uuid.uuid4())
        decision = DECISION_ALLOW
        if matches:
            decision = (
                DECISION_DENY
                if Decimal(score_text(matches[0].score)) >= self.deny_threshold
                else DECISION_REVIEW
            )
        record = store.Screening(
            screening_id=screening_id,
            user_id=profile.user_id if profile is not None else "",
            subject_kind="name",
            sealed_name=self.sealer.seal(
                subject.SerializeToString(deterministic=True), aad=_name_aad(screening_id)
            ),
            chain="",
            address="",
            context=context,
            reference_id=reference_id,
            decision=decision,
            state=int(ScreeningState.OPEN if matches else ScreeningState.CLEAR),
            matches=[
                convert.match_record(match, listed.listed.source, listed.version_id)
                for match, listed in found
            ],
            threshold=threshold,
            version_ids=version_ids(lists),
            screen_time_us=_now_us(),
        )
        await self._record_screening(session, profile, record)
        return record

    async def _record_screening(
        self, session: AsyncSession, profile: store.Profile | None, record: store.Screening
    ) -> None:
        await store.insert_screening(session, record)
        top = record.matches[0]["score"] if record.matches else ""
        await events.screening_completed(session, record, top)
        if profile is None:
            return
        if (
            record.state == ScreeningState.OPEN
            and profile.sanctions_status != SanctionsStatus.CONFIRMED_MATCH
        ):
            await self._set_sanctions_status(
                session, profile, SanctionsStatus.POTENTIAL_MATCH, record.screening_id
            )
        elif (
            record.state == ScreeningState.CLEAR and profile.sanctions_status == SanctionsStatus.NOT_SCREENED
        ):
            await self._set_sanctions_status(session, profile, SanctionsStatus.CLEAR, record.screening_id)

    async def ScreenName(self, request: service.ScreenNameRequest, context: Any) -> Any:
        principals.service_or_roles(READER_ROLES, "screening a name")
        lists = await self.registry.active()
        threshold = request.threshold or self.name_threshold

        async def work(session: AsyncSession) -> service.ScreenNameResponse:
            profile = await self._profile(session, request.user_id, lock=True) if request.user_id else None
            record = await self._screen_name_in(
                session,
                profile,
                request.subject,
                int(request.context),
                request.reference_id,
                threshold,
                lists,
            )
            if profile is not None:
                await self._reassess(session, profile, await self._latest_data(session, profile.user_id))
                profile.update_time_us = _now_us()
                await store.save_profile(session, profile)
            return service.ScreenNameResponse(screening=convert.screening_message(record, request.subject))

        return await self._once("ScreenName", request, service.ScreenNameResponse, work)

    async def _screen_address_in(
        self,
        session: AsyncSession,
        chain: str,
        address: str,
        user_id: str,
        context: int,
        reference_id: str,
        lists: Sequence[ActiveList],
    ) -> store.Screening:
        """Screens an address and records the screening; a match moves the user's sanctions status."""
        found = [(match, listed) for listed in lists for match in screen_address([listed.listed], address)]
        profile = await self._profile(session, user_id, lock=True) if user_id and found else None
        record = store.Screening(
            screening_id=str(uuid.uuid4()),
            user_id=user_id,
            subject_kind="address",
            sealed_name=None,
            chain=chain,
            address=address.lower(),
            context=context,
            reference_id=reference_id,
            decision=DECISION_DENY if found else DECISION_ALLOW,
            state=int(ScreeningState.OPEN if found else ScreeningState.CLEAR),
            matches=[
                convert.match_record(match, listed.listed.source, listed.version_id)
                for match, listed in found
            ],
            threshold="1",
            version_ids=version_ids(lists),
            screen_time_us=_now_us(),
        )
        await self._record_screening(session, profile, record)
        if profile is not None:
            await self._reassess(session, profile, await self._latest_data(session, profile.user_id))
            profile.update_time_us = _now_us()
            await store.save_profile(session, profile)
        return record

    async def rescreen(self, session: AsyncSession, version_id: str) -> None:
        """The re-screening after an activation (context LIST_UPDATE, reference: the version) in
        one transaction: every user's name from their latest submitted data, and every address
        screened in the last RESCREEN_ADDRESSES_DAYS days, against the lists now in force."""
        lists = await self.registry.active_in(session)
        if not lists:
            return
        for user_id in await store.profile_user_ids(session):
            data = await self._latest_data(session, user_id)
            if not _full_name(data):
                continue
            profile = await self._profile(session, user_id, lock=True)
            status = profile.sanctions_status
            subject = _name_subject(data)
            await self._screen_name_in(
                session, profile, subject, CONTEXT_LIST_UPDATE, version_id, self.name_threshold, lists
            )
            if profile.sanctions_status != status:
                await self._reassess(session, profile, data)
                profile.update_time_us = _now_us()
                await store.save_profile(session, profile)
        since_us = _now_us() - RESCREEN_ADDRESSES_DAYS * 86_400_000_000
        for chain, address, user_id in await store.screened_addresses(session, since_us):
            await self._screen_address_in(
                session, chain, address, user_id, CONTEXT_LIST_UPDATE, version_id, lists
            )

    async def ScreenAddress(self, request: service.ScreenAddressRequest, context: Any) -> Any:
        principals.service_or_roles(READER_ROLES, "screening an address")
        lists = await self.registry.active()

        async def work(session: AsyncSession) -> service.ScreenAddressResponse:
            record = await self._screen_address_in(
                session,
                request.address.chain,
                request.address.address,
                request.user_id,
                int(request.context),
                request.reference_id,
                lists,
            )
            return service.ScreenAddressResponse(screening=convert.screening_message(record, None))

        return await self._once("ScreenAddress", request, service.ScreenAddressResponse, work)

    async def GetScreening(self, request: service.GetScreeningRequest, context: Any) -> Any:
        principals.require_roles(READER_ROLES, "reading a screening")
        async with self.database.transaction() as session:
            record = await store.screening(session, request.screening_id)
        if record is None:
            raise errors.NotFound(
                f"no screening {request.screening_id}", metadata={"screening_id": request.screening_id}
            )
        return service.GetScreeningResponse(
            screening=convert.screening_message(record, self._name_of(record))
        )

    async def ListScreenings(self, request: service.ListScreeningsRequest, context: Any) -> Any:
        staff = principals.require_roles(READER_ROLES, "the sanctions case queue")
        limit = paging.page_size(request.page_size)
        after = paging.position(request.page_token, "screen_time_us", "screening_id")
        async with self.database.transaction() as session:
            found = await store.list_screenings(
                session,
                limit=limit + 1,
                user_id=request.user_id,
                states=list(request.states),
                context=int(request.context),
                address=request.address,
                exclude_proposer=staff.subject if request.exclude_proposed_by_me else "",
                from_us=request.screen_time_from.ToMicroseconds()
                if request.HasField("screen_time_from")
                else None,
                to_us=request.screen_time_to.ToMicroseconds() if request.HasField("screen_time_to") else None,
                after=after,
            )
        page = found[:limit]
        response = service.ListScreeningsResponse(
            screenings=[convert.screening_message(record, self._name_of(record)) for record in page]
        )
        response.next_page_token = paging.next_token(found, limit, "screen_time_us", "screening_id")
        return response

    async def _any_screening(self, session: AsyncSession, screening_id: str) -> store.Screening:
        record = await store.screening(session, screening_id, lock=True)
        if record is None:
            raise errors.NotFound(f"no screening {screening_id}", metadata={"screening_id": screening_id})
        return record

    async def ProposeScreeningResolution(
        self, request: service.ProposeScreeningResolutionRequest, context: Any
    ) -> Any:
        maker = principals.require_roles(OPERATOR_ROLES, "resolving a sanctions case")

        async def work(session: AsyncSession) -> service.ProposeScreeningResolutionResponse:
            record = await self._any_screening(session, request.screening_id)
            if record.user_id:
                domain.require_not_applicant(maker.subject, record.user_id)
            domain.require_screening_transition(
                ScreeningState(record.state), ScreeningState.RESOLUTION_PROPOSED, record.screening_id
            )
            record.state = int(ScreeningState.RESOLUTION_PROPOSED)
            record.proposed_resolution = int(request.resolution)
            record.proposed_by = maker.subject
            record.proposal_note = request.note
            record.checker_id, record.check_verdict, record.check_note, record.check_time_us = "", 0, "", None
            await store.update_screening(session, record)
            return service.ProposeScreeningResolutionResponse(
                screening=convert.screening_message(record, self._name_of(record))
            )

        return await self._once(
            "ProposeScreeningResolution", request, service.ProposeScreeningResolutionResponse, work
        )

    async def CheckScreeningResolution(
        self, request: service.CheckScreeningResolutionRequest, context: Any
    ) -> Any:
        checker = principals.require_roles(APPROVER_ROLES, "checking a sanctions resolution")
        verdict = CheckerVerdict(request.verdict)
        if verdict is CheckerVerdict.RETURN and not request.note:
            raise _violation("note", "a returned resolution says why")
        await self.step_up.redeem(
            request.step_up_token, checker, f"kyc.check-resolution.{request.request_id}"
        )

        async def work(session: AsyncSession) -> service.CheckScreeningResolutionResponse:
            record = await self._any_screening(session, request.screening_id)
            if record.user_id:
                domain.require_not_applicant(checker.subject, record.user_id)
            if record.state != ScreeningState.RESOLUTION_PROPOSED:
                raise errors.InvalidState(
                    f"screening {record.screening_id} is {ScreeningState(record.state).name}, "
                    "not RESOLUTION_PROPOSED",
                    metadata={"screening_id": record.screening_id},
                )
            domain.require_distinct(record.proposed_by, checker.subject, "sanctions resolution")
            now_us = _now_us()
            record.checker_id = checker.subject
            record.check_verdict = int(verdict)
            record.check_note = request.note
            record.check_time_us = now_us
            if verdict is CheckerVerdict.RETURN:
                record.state = int(ScreeningState.OPEN)
                await store.update_screening(session, record)
            else:
                target = (
                    ScreeningState.CONFIRMED_MATCH
                    if record.proposed_resolution == RESOLUTION_CONFIRMED
                    else ScreeningState.FALSE_POSITIVE
                )
                domain.require_screening_transition(ScreeningState(record.state), target, record.screening_id)
                record.state = int(target)
                record.resolve_time_us = now_us
                await store.update_screening(session, record)
                await events.screening_resolved(session, record)
                if record.user_id:
                    await self._after_resolution(session, record)
            return service.CheckScreeningResolutionResponse(
                screening=convert.screening_message(record, self._name_of(record))
            )

        return await self._once(
            "CheckScreeningResolution", request, service.CheckScreeningResolutionResponse, work
        )

    async def _after_resolution(self, session: AsyncSession, record: store.Screening) -> None:
        """A confirmed match makes the user CONFIRMED_MATCH; the last open case ruled out, CLEAR."""
        profile = await self._profile(session, record.user_id, lock=True)
        if record.state == ScreeningState.CONFIRMED_MATCH:
            await self._set_sanctions_status(
                session, profile, SanctionsStatus.CONFIRMED_MATCH, record.screening_id
            )
        elif (
            profile.sanctions_status == SanctionsStatus.POTENTIAL_MATCH
            and await store.open_screening_count(session, record.user_id) == 0
        ):
            await self._set_sanctions_status(session, profile, SanctionsStatus.CLEAR, record.screening_id)
        await self._reassess(session, profile, await self._latest_data(session, record.user_id))
        profile.update_time_us = _now_us()
        await store.save_profile(session, profile)

    # -- sanctions list versions -----------------------------------------------------------------

    async def ListSanctionsListVersions(
        self, request: service.ListSanctionsListVersionsRequest, context: Any
    ) -> Any:
        principals.require_roles(READER_ROLES, "sanctions list versions")
        limit = paging.page_size(request.page_size)
        after = paging.position(request.page_token, "import_time_us", "version_id")
        async with self.database.transaction() as session:
            found = await store.list_versions(
                session,
                limit=limit + 1,
                source=int(request.source),
                states=list(request.states),
                after=after,
            )
        page = found[:limit]
        response = service.ListSanctionsListVersionsResponse(
            versions=[convert.version_message(record) for record in page]
        )
        response.next_page_token = paging.next_token(found, limit, "import_time_us", "version_id")
        return response

    async def GetSanctionsListVersion(
        self, request: service.GetSanctionsListVersionRequest, context: Any
    ) -> Any:
        principals.require_roles(READER_ROLES, "a sanctions list version")
        async with self.database.transaction() as session:
            record = await store.version(session, request.version_id)
        if record is None:
            raise errors.NotFound(
                f"no sanctions list version {request.version_id}", metadata={"version_id": request.version_id}
            )
        return service.GetSanctionsListVersionResponse(version=convert.version_message(record))

    async def _any_version(
        self, session: AsyncSession, version_id: str, *, lock: bool = False
    ) -> store.SanctionsVersion:
        record = await store.version(session, version_id, lock=lock)
        if record is None:
            raise errors.NotFound(
                f"no sanctions list version {version_id}", metadata={"version_id": version_id}
            )
        return record

    async def ImportSanctionsList(self, request: service.ImportSanctionsListRequest, context: Any) -> Any:
        """A file as a STAGED version with its entries, compared with the ACTIVE version of its
        source; refused as a whole (INVALID_ARGUMENT, a violation per invalid record) when more
        than 1 % of its records are invalid."""
        importer = principals.require_roles(OPERATOR_ROLES, "importing a sanctions list")
        listed = _imported_list(request)

        async def work(session: AsyncSession) -> service.ImportSanctionsListResponse:
            current = await store.active_version(session, int(request.source))
            added, removed = compared(listed, current)
            record = store.SanctionsVersion(
                version_id=str(uuid.uuid4()),
                source=int(request.source),
                state=STATE_STAGED,
                file_sha256=listed.sha256,
                entry_count=len(listed.entries),
                address_count=listed.address_count,
                added_count=added,
                removed_count=removed,
                entry_ids=sorted(listed.entry_ids),
                imported_by=importer.subject,
                note=request.note,
                import_time_us=_now_us(),
                published_date=request.published_date,
                previous_version_id=current.version_id if current is not None else "",
            )
            await store.insert_version(session, record)
            await store.insert_entries(session, record.version_id, entry_rows(listed))
            await events.list_imported(session, record)
            return service.ImportSanctionsListResponse(
                version=convert.version_message(record), warnings=list(listed.warnings)
            )

        return await self._once("ImportSanctionsList", request, service.ImportSanctionsListResponse, work)

    async def ActivateSanctionsListVersion(
        self, request: service.ActivateSanctionsListVersionRequest, context: Any
    ) -> Any:
        """STAGED -> ACTIVE, the source's ACTIVE version -> SUPERSEDED, in one transaction; the
        lists in memory change once it committed."""
        approver = principals.require_roles(APPROVER_ROLES, "activating a sanctions list version")
        async with self.database.transaction() as session:
            staged = await self._any_version(session, request.version_id)
        # The four-eyes rule before the step-up token is spent on a request it cannot carry.
        domain.require_distinct(staged.imported_by, approver.subject, "sanctions list version")
        await self.step_up.redeem(request.step_up_token, approver, f"kyc.activate-list.{request.request_id}")

        async def work(session: AsyncSession) -> service.ActivateSanctionsListVersionResponse:
            record = await self._any_version(session, request.version_id, lock=True)
            _require_staged(record, "only a STAGED version is activated")
            domain.require_distinct(record.imported_by, approver.subject, "sanctions list version")
            superseded = await supersede_active(session, record.source, record)
            before = frozenset(superseded.entry_ids) if superseded is not None else frozenset()
            after = frozenset(record.entry_ids)
            record.added_count, record.removed_count = len(after - before), len(before - after)
            record.state = STATE_ACTIVE
            record.activated_by = approver.subject
            record.activate_time_us = _now_us()
            await store.update_version(session, record)
            await events.list_activated(session, record, superseded)
            response = service.ActivateSanctionsListVersionResponse(version=convert.version_message(record))
            if superseded is not None:
                response.superseded_version.CopyFrom(convert.version_message(superseded))
            return response

        try:
            response = await self._once(
                "ActivateSanctionsListVersion", request, service.ActivateSanctionsListVersionResponse, work
            )
        except IntegrityError:
            # The partial unique index: another version of the source became ACTIVE meanwhile.
            raise errors.Conflict(
                f"another version of the source of {request.version_id} was activated at the same time",
                metadata={"version_id": request.version_id},
            ) from None
        await self.registry.reload()
        return response

    async def DiscardSanctionsListVersion(
        self, request: service.DiscardSanctionsListVersionRequest, context: Any
    ) -> Any:
        staff = principals.require_roles(OPERATOR_ROLES, "discarding a sanctions list version")

        async def work(session: AsyncSession) -> service.DiscardSanctionsListVersionResponse:
            record = await self._any_version(session, request.version_id, lock=True)
            _require_staged(record, "only a STAGED version is discarded")
            record.state = STATE_DISCARDED
            record.discarded_by = staff.subject
            record.discard_note = request.note
            record.discard_time_us = _now_us()
            await store.update_version(session, record)
            await events.list_discarded(session, record)
            return service.DiscardSanctionsListVersionResponse(version=convert.version_message(record))

        return await self._once(
            "DiscardSanctionsListVersion", request, service.DiscardSanctionsListVersionResponse, work
        )

    async def ListSanctionsEntries(self, request: service.ListSanctionsEntriesRequest, context: Any) -> Any:
        principals.require_roles(READER_ROLES, "sanctions list entries")
        limit = paging.page_size(request.page_size)
        after = paging.position(request.page_token, "entry_id")
        if after is not None and not isinstance(after[0], str):
            raise _violation("page_token", "not a token from this listing")
        async with self.database.transaction() as session:
            record = await self._any_version(session, request.version_id)
            found = await store.list_entries(
                session,
                record.version_id,
                limit=limit + 1,
                query=request.query.casefold(),
                # A source's first version adds every entry it has.
                not_in_version=record.previous_version_id if request.only_added else "",
                after=after[0] if after is not None else None,
            )
        response = service.ListSanctionsEntriesResponse(
            entries=[convert.entry_message(entry) for entry in found[:limit]]
        )
        response.next_page_token = paging.next_token(found, limit, "entry_id")
        return response

    # -- AML risk --------------------------------------------------------------------------------

    async def ListRiskAssessments(self, request: service.ListRiskAssessmentsRequest, context: Any) -> Any:
        principals.require_roles(READER_ROLES, "risk assessments")
        limit = paging.page_size(request.page_size)
        after = paging.position(request.page_token, "assess_time_us", "assessment_id")
        async with self.database.transaction() as session:
            found = await store.list_assessments(session, request.user_id, limit=limit + 1, after=after)
        page = found[:limit]
        response = service.ListRiskAssessmentsResponse(
            assessments=[convert.assessment_message(record) for record in page]
        )
        response.next_page_token = paging.next_token(found, limit, "assess_time_us", "assessment_id")
        return response

    async def RecalculateRiskRating(self, request: service.RecalculateRiskRatingRequest, context: Any) -> Any:
        principals.require_roles(OPERATOR_ROLES, "re-rating a user")

        async def work(session: AsyncSession) -> service.RecalculateRiskRatingResponse:
            profile = await self._profile(session, request.user_id, lock=True)
            assessment = await self._reassess(
                session, profile, await self._latest_data(session, request.user_id)
            )
            profile.update_time_us = _now_us()
            await store.save_profile(session, profile)
            return service.RecalculateRiskRatingResponse(assessment=convert.assessment_message(assessment))

        return await self._once("RecalculateRiskRating", request, service.RecalculateRiskRatingResponse, work)

    # -- not served by this deployment -----------------------------------------------------------

    async def CreateDocumentUpload(self, request: service.CreateDocumentUploadRequest, context: Any) -> Any:
        raise errors.Unimplemented("direct uploads need an object store with pre-signed URLs; upload inline")

    async def OverrideRiskRating(self, request: service.OverrideRiskRatingRequest, context: Any) -> Any:
        raise errors.Unimplemented("manual overrides need the admin service's maker-checker approval")
