"""What the KYC service publishes, through the outbox in the transaction of each decision.

Events carry no personal data (the contract's rule): ids, levels, states and reasons only.
"""

from __future__ import annotations

from finmesh.common.v1 import money_pb2
from finmesh.events.v1 import event_meta_pb2, kyc_events_pb2
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.outbox import add_event
from svc.kyc.store import Profile, SanctionsVersion, Screening, Submission

PRODUCER = "kyc"
STAGED = 1  # finmesh.kyc.v1.SanctionsListState


def _meta(aggregate_type: str, aggregate_id: str, version: int) -> event_meta_pb2.EventMeta:
    return event_meta_pb2.EventMeta(
        aggregate_type=aggregate_type, aggregate_id=aggregate_id, aggregate_version=version
    )


def _submission_meta(submission: Submission) -> event_meta_pb2.EventMeta:
    return _meta("kyc_submission", submission.submission_id, submission.version)


async def _add(session: AsyncSession, event: Message) -> None:
    await add_event(session, event, producer=PRODUCER)


async def submitted(session: AsyncSession, submission: Submission) -> None:
    await _add(
        session,
        kyc_events_pb2.KycSubmissionSubmitted(
            meta=_submission_meta(submission),
            submission_id=submission.submission_id,
            user_id=submission.user_id,
            target_level=submission.target_level,  # type: ignore[arg-type]
            resubmission=submission.resubmissions > 0,
        ),
    )


async def document_uploaded(
    session: AsyncSession, submission: Submission, document_id: str, kind: int, sha256: str
) -> None:
    await _add(
        session,
        kyc_events_pb2.KycDocumentUploaded(
            meta=_submission_meta(submission),
            submission_id=submission.submission_id,
            user_id=submission.user_id,
            document_id=document_id,
            type=kind,  # type: ignore[arg-type]
            sha256=sha256,
        ),
    )


async def reviewed(session: AsyncSession, submission: Submission) -> None:
    await _add(
        session,
        kyc_events_pb2.KycSubmissionReviewed(
            meta=_submission_meta(submission),
            submission_id=submission.submission_id,
            user_id=submission.user_id,
            reviewer_id=submission.reviewer_id,
            decision=submission.review_decision,  # type: ignore[arg-type]
            approved_level=submission.approved_level,  # type: ignore[arg-type]
        ),
    )


async def information_requested(session: AsyncSession, submission: Submission) -> None:
    await _add(
        session,
        kyc_events_pb2.KycInformationRequested(
            meta=_submission_meta(submission),
            submission_id=submission.submission_id,
            user_id=submission.user_id,
            reasons=submission.review_reasons,  # type: ignore[arg-type]
        ),
    )


async def review_returned(session: AsyncSession, submission: Submission) -> None:
    await _add(
        session,
        kyc_events_pb2.KycReviewReturned(
            meta=_submission_meta(submission),
            submission_id=submission.submission_id,
            user_id=submission.user_id,
            reviewer_id=submission.reviewer_id,
            checker_id=submission.checker_id,
        ),
    )


async def approved(session: AsyncSession, submission: Submission) -> None:
    await _add(
        session,
        kyc_events_pb2.KycSubmissionApproved(
            meta=_submission_meta(submission),
            submission_id=submission.submission_id,
            user_id=submission.user_id,
            approved_level=submission.approved_level,  # type: ignore[arg-type]
            reviewer_id=submission.reviewer_id,
            checker_id=submission.checker_id,
        ),
    )


async def rejected(session: AsyncSession, submission: Submission) -> None:
    await _add(
        session,
        kyc_events_pb2.KycSubmissionRejected(
            meta=_submission_meta(submission),
            submission_id=submission.submission_id,
            user_id=submission.user_id,
            reasons=submission.review_reasons,  # type: ignore[arg-type]
            reviewer_id=submission.reviewer_id,
            checker_id=submission.checker_id,
        ),
    )


async def closed(session: AsyncSession, submission: Submission) -> None:
    await _add(
        session,
        kyc_events_pb2.KycSubmissionClosed(
            meta=_submission_meta(submission),
            submission_id=submission.submission_id,
            user_id=submission.user_id,
            state=submission.state,  # type: ignore[arg-type]
        ),
    )


def _profile_meta(profile: Profile, *, pending: bool = False) -> event_meta_pb2.EventMeta:
    """The profile's meta; `pending` for a change the caller saves afterwards (version + 1)."""
    return _meta("kyc_profile", profile.user_id, profile.version + (1 if pending else 0))


async def level_changed(session: AsyncSession, profile: Profile, previous: int, submission_id: str) -> None:
    await _add(
        session,
        kyc_events_pb2.KycLevelChanged(
            meta=_profile_meta(profile),
            user_id=profile.user_id,
            previous_level=previous,  # type: ignore[arg-type]
            new_level=profile.level,  # type: ignore[arg-type]
            submission_id=submission_id,
        ),
    )


async def sanctions_status_changed(
    session: AsyncSession, profile: Profile, previous: int, screening_id: str
) -> None:
    await _add(
        session,
        kyc_events_pb2.SanctionsStatusChanged(
            meta=_profile_meta(profile, pending=True),
            user_id=profile.user_id,
            previous_status=previous,  # type: ignore[arg-type]
            new_status=profile.sanctions_status,  # type: ignore[arg-type]
            screening_id=screening_id,
        ),
    )


async def risk_rating_changed(
    session: AsyncSession,
    profile: Profile,
    previous: int,
    rating: int,
    score: int,
    method: int,
    assessment_id: str,
) -> None:
    await _add(
        session,
        kyc_events_pb2.AmlRiskRatingChanged(
            meta=_profile_meta(profile, pending=True),
            user_id=profile.user_id,
            previous_rating=previous,  # type: ignore[arg-type]
            new_rating=rating,  # type: ignore[arg-type]
            score=score,
            method=method,  # type: ignore[arg-type]
            assessment_id=assessment_id,
        ),
    )


def _address(screening: Screening) -> money_pb2.ChainAddress | None:
    if screening.subject_kind != "address":
        return None
    return money_pb2.ChainAddress(chain=screening.chain, address=screening.address)


async def screening_completed(session: AsyncSession, screening: Screening, top_score: str) -> None:
    await _add(
        session,
        kyc_events_pb2.SanctionsScreeningCompleted(
            meta=_meta("kyc_screening", screening.screening_id, screening.version),
            screening_id=screening.screening_id,
            user_id=screening.user_id,
            context=screening.context,  # type: ignore[arg-type]
            reference_id=screening.reference_id,
            address=_address(screening),
            decision=screening.decision,  # type: ignore[arg-type]
            state=screening.state,  # type: ignore[arg-type]
            match_count=len(screening.matches),
            top_score=top_score,
        ),
    )


async def screening_resolved(session: AsyncSession, screening: Screening) -> None:
    await _add(
        session,
        kyc_events_pb2.SanctionsScreeningResolved(
            meta=_meta("kyc_screening", screening.screening_id, screening.version),
            screening_id=screening.screening_id,
            user_id=screening.user_id,
            address=_address(screening),
            state=screening.state,  # type: ignore[arg-type]
            proposed_by=screening.proposed_by,
            checked_by=screening.checker_id,
        ),
    )


def _version_meta(version: SanctionsVersion) -> event_meta_pb2.EventMeta:
    # A version changes state at most twice: imported (1), then activated or discarded (2).
    changes = 1 if version.state == STAGED else 2
    return _meta("kyc_sanctions_list_version", version.version_id, changes)


async def list_imported(session: AsyncSession, version: SanctionsVersion) -> None:
    await _add(
        session,
        kyc_events_pb2.SanctionsListVersionImported(
            meta=_meta("kyc_sanctions_list_version", version.version_id, 1),
            version_id=version.version_id,
            source=version.source,  # type: ignore[arg-type]
            entry_count=version.entry_count,
            added_count=version.added_count,
            removed_count=version.removed_count,
            imported_by=version.imported_by,
        ),
    )


async def list_activated(
    session: AsyncSession, version: SanctionsVersion, superseded: SanctionsVersion | None
) -> None:
    await _add(
        session,
        kyc_events_pb2.SanctionsListVersionActivated(
            meta=_version_meta(version),
            version_id=version.version_id,
            source=version.source,  # type: ignore[arg-type]
            superseded_version_id=superseded.version_id if superseded is not None else "",
            entry_count=version.entry_count,
            address_count=version.address_count,
            activated_by=version.activated_by,
        ),
    )


async def list_discarded(session: AsyncSession, version: SanctionsVersion) -> None:
    await _add(
        session,
        kyc_events_pb2.SanctionsListVersionDiscarded(
            meta=_version_meta(version),
            version_id=version.version_id,
            source=version.source,  # type: ignore[arg-type]
            discarded_by=version.discarded_by,
        ),
    )
