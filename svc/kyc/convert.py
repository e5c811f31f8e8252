"""Translation between the KYC service's records and the contract's messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from finmesh.common.v1 import money_pb2
from finmesh.kyc.v1 import kyc_resources_pb2 as resources
from google.protobuf import json_format, timestamp_pb2

from svc.kyc import domain
from svc.kyc.domain import ActionAnswer, Level, Limit, RiskResult
from svc.kyc.sanctions import Match, score_text
from svc.kyc.store import (
    Assessment,
    Document,
    Profile,
    SanctionsVersion,
    Screening,
    StoredEntry,
    Submission,
)

VALUATION_ASSET = money_pb2.Asset(id="fiat:USD", symbol="USD", chain="fiat", decimals=2)


def timestamp(time_us: int | None) -> timestamp_pb2.Timestamp | None:
    if time_us is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(time_us)
    return stamp


def document_message(record: Document) -> resources.Document:
    return resources.Document(
        document_id=record.document_id,
        submission_id=record.submission_id,
        type=record.type,  # type: ignore[arg-type]
        side=record.side,  # type: ignore[arg-type]
        content_type=record.content_type,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        file_name=record.file_name,
        issuing_country=record.issuing_country,
        expiry_date=record.expiry_date,
        state=record.state,  # type: ignore[arg-type]
        rejection_reason=record.rejection_reason,  # type: ignore[arg-type]
        upload_time=timestamp(record.upload_time_us),
    )


def present_fields(data: resources.PersonalData) -> dict[str, bool]:
    """Which of the personal-data fields that levels require are filled in."""
    return {
        "given_names": bool(data.given_names.strip()),
        "family_name": bool(data.family_name.strip()),
        "date_of_birth": bool(data.date_of_birth),
        "nationalities": bool(data.nationalities),
        "residential_address.country": bool(data.residential_address.country),
        "occupation": bool(data.occupation.strip()),
        "source_of_funds": bool(data.source_of_funds),
    }


def submission_message(
    record: Submission,
    documents: Sequence[Document],
    data: resources.PersonalData | None,
    screening_ids: Sequence[str] = (),
) -> resources.Submission:
    """The contract's Submission; personal data only when `data` is given (owner or reviewer)."""
    live = [document for document in documents if document.state != domain.DocumentState.DELETED]
    kinds = [domain.DocumentType(document.type) for document in live]
    missing: list[Any] = [kind.value for kind in domain.missing_documents(Level(record.target_level), kinds)]
    message = resources.Submission(
        submission_id=record.submission_id,
        user_id=record.user_id,
        target_level=record.target_level,  # type: ignore[arg-type]
        state=record.state,  # type: ignore[arg-type]
        personal_data=data,
        documents=[document_message(document) for document in live],
        missing_documents=missing,
        screening_ids=list(screening_ids),
        create_time=timestamp(record.create_time_us),
        submit_time=timestamp(record.submit_time_us),
        decide_time=timestamp(record.decide_time_us),
        update_time=timestamp(record.update_time_us),
        version=record.version,
    )
    if record.review_decision:
        message.review.CopyFrom(
            resources.Review(
                reviewer_id=record.reviewer_id,
                decision=record.review_decision,  # type: ignore[arg-type]
                approved_level=record.approved_level,  # type: ignore[arg-type]
                reasons=record.review_reasons,  # type: ignore[arg-type]
                message_to_user=record.message_to_user,
                internal_note=record.internal_note,
                review_time=timestamp(record.review_time_us),
            )
        )
    if record.check_verdict:
        message.check.CopyFrom(
            resources.Check(
                checker_id=record.checker_id,
                verdict=record.check_verdict,  # type: ignore[arg-type]
                note=record.check_note,
                check_time=timestamp(record.check_time_us),
            )
        )
    return message


def for_applicant(message: resources.Submission) -> resources.Submission:
    """What the applicant sees: no internal note, no checker note, no screenings."""
    visible = resources.Submission()
    visible.CopyFrom(message)
    visible.review.ClearField("internal_note")
    visible.check.ClearField("note")
    visible.ClearField("screening_ids")
    return visible


def assessment_message(record: Assessment) -> resources.AmlRiskAssessment:
    return resources.AmlRiskAssessment(
        assessment_id=record.assessment_id,
        user_id=record.user_id,
        rating=record.rating,  # type: ignore[arg-type]
        score=record.score,
        factors=[resources.RiskFactor(**factor) for factor in record.factors],
        method=record.method,  # type: ignore[arg-type]
        model_version=record.model_version,
        assess_time=timestamp(record.assess_time_us),
        next_review_time=timestamp(record.next_review_time_us),
    )


def factors_of(result: RiskResult) -> list[dict[str, Any]]:
    return [
        {"code": factor.code, "description": factor.description, "points": factor.points}
        for factor in result.factors
    ]


def profile_message(
    record: Profile, assessment: Assessment | None, open_submission: Submission | None
) -> resources.KycProfile:
    message = resources.KycProfile(
        user_id=record.user_id,
        level=record.level,  # type: ignore[arg-type]
        level_grant_time=timestamp(record.level_grant_time_us),
        sanctions_status=record.sanctions_status,  # type: ignore[arg-type]
        country_of_residence=record.country_of_residence,
        politically_exposed=record.politically_exposed,
        version=record.version,
    )
    if assessment is not None:
        message.risk_assessment.CopyFrom(assessment_message(assessment))
    if open_submission is not None:
        message.open_submission_id = open_submission.submission_id
        message.open_submission_state = open_submission.state  # type: ignore[assignment]
    return message


def _money(amount: int | None) -> money_pb2.Money | None:
    return None if amount is None else money_pb2.Money(asset=VALUATION_ASSET.id, amount=str(amount))


def action_limit(answer: ActionAnswer) -> resources.ActionLimit:
    limit = answer.limit or Limit()
    return resources.ActionLimit(
        action=int(answer.action),  # type: ignore[arg-type]
        allowed=answer.allowed,
        denial_reason=int(answer.denial),  # type: ignore[arg-type]
        required_level=int(answer.required_level),  # type: ignore[arg-type]
        per_transaction_max=_money(limit.per_transaction_max),
        daily_max=_money(limit.daily_max),
        monthly_max=_money(limit.monthly_max),
    )


def level_definition(
    level: Level, limits: Mapping[Level, Mapping[domain.Action, Limit]]
) -> resources.KycLevelDefinition:
    requirements = domain.REQUIREMENTS[level]
    return resources.KycLevelDefinition(
        level=int(level),  # type: ignore[arg-type]
        display_name=requirements.display_name,
        required_fields=list(requirements.fields),
        required_documents=[min(options).value for options in requirements.documents],  # type: ignore[misc]
        description=requirements.description,
        limits=[
            action_limit(domain.may(action, level, domain.SanctionsStatus.CLEAR, None, limits))
            for action in domain.Action
        ],
    )


def match_record(match: Match, source: int, version_id: str) -> dict[str, Any]:
    """A match as stored (JSON): the entry in proto3 JSON and the match figures."""
    return {
        "entry": json_format.MessageToDict(match.entry),
        "source": source,
        "version_id": version_id,
        "matched_value": match.matched_value,
        "score": score_text(match.score),
        "corroborating_fields": list(match.corroborating_fields),
    }


def screening_message(record: Screening, name: resources.NameSubject | None) -> resources.Screening:
    message = resources.Screening(
        screening_id=record.screening_id,
        user_id=record.user_id,
        context=record.context,  # type: ignore[arg-type]
        reference_id=record.reference_id,
        decision=record.decision,  # type: ignore[arg-type]
        state=record.state,  # type: ignore[arg-type]
        threshold=record.threshold,
        version_ids=record.version_ids,
        proposed_resolution=record.proposed_resolution,  # type: ignore[arg-type]
        proposed_by=record.proposed_by,
        proposal_note=record.proposal_note,
        screen_time=timestamp(record.screen_time_us),
        resolve_time=timestamp(record.resolve_time_us),
    )
    for stored in record.matches:
        message.matches.append(
            resources.SanctionsMatch(
                entry=json_format.ParseDict(stored["entry"], resources.SanctionsEntry()),
                source=stored["source"],
                version_id=stored["version_id"],
                matched_value=stored["matched_value"],
                score=stored["score"],
                corroborating_fields=stored["corroborating_fields"],
            )
        )
    if record.subject_kind == "address":
        message.address.CopyFrom(money_pb2.ChainAddress(chain=record.chain, address=record.address))
    elif name is not None:
        message.name.CopyFrom(name)
    if record.check_verdict:
        message.check.CopyFrom(
            resources.Check(
                checker_id=record.checker_id,
                verdict=record.check_verdict,  # type: ignore[arg-type]
                note=record.check_note,
                check_time=timestamp(record.check_time_us),
            )
        )
    return message


def version_message(record: SanctionsVersion) -> resources.SanctionsListVersion:
    return resources.SanctionsListVersion(
        version_id=record.version_id,
        source=record.source,  # type: ignore[arg-type]
        state=record.state,  # type: ignore[arg-type]
        file_sha256=record.file_sha256,
        entry_count=record.entry_count,
        address_count=record.address_count,
        added_count=record.added_count,
        removed_count=record.removed_count,
        imported_by=record.imported_by,
        activated_by=record.activated_by,
        note=record.note,
        published_date=record.published_date,
        import_time=timestamp(record.import_time_us),
        activate_time=timestamp(record.activate_time_us),
    )


def entry_message(record: StoredEntry) -> resources.SanctionsEntry:
    return json_format.ParseDict(record.entry, resources.SanctionsEntry())
