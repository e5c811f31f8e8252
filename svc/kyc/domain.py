"""The KYC service's rules: levels and what they require and unlock, the submission state machine
with maker-checker, the sanctions case state machine, and the AML risk model. Pure: no I/O.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from svc.kit import errors

RISK_MODEL_VERSION = "kyc-risk-2026.1"
# The contract's per-submission document limit (ReviewSubmission's document_states max_pairs).
SUBMISSION_DOCUMENTS_MAX = 50


class Level(IntEnum):
    """finmesh.common.v1.KycLevel."""

    L0 = 1
    L1 = 2
    L2 = 3
    L3 = 4


class SubmissionState(IntEnum):
    """finmesh.kyc.v1.SubmissionState; transitions in SUBMISSION_TRANSITIONS."""

    DRAFT = 1
    SUBMITTED = 2
    PENDING_REVIEW = 3
    AWAITING_CHECK = 4
    NEEDS_INFORMATION = 5
    APPROVED = 6
    REJECTED = 7
    CANCELLED = 8
    EXPIRED = 9


TERMINAL_SUBMISSION_STATES = frozenset(
    {SubmissionState.APPROVED, SubmissionState.REJECTED, SubmissionState.CANCELLED, SubmissionState.EXPIRED}
)
EDITABLE_SUBMISSION_STATES = frozenset({SubmissionState.DRAFT, SubmissionState.NEEDS_INFORMATION})

SUBMISSION_TRANSITIONS = frozenset(
    {
        (SubmissionState.DRAFT, SubmissionState.SUBMITTED),
        (SubmissionState.DRAFT, SubmissionState.CANCELLED),
        (SubmissionState.DRAFT, SubmissionState.EXPIRED),
        (SubmissionState.SUBMITTED, SubmissionState.PENDING_REVIEW),
        (SubmissionState.SUBMITTED, SubmissionState.CANCELLED),
        (SubmissionState.PENDING_REVIEW, SubmissionState.AWAITING_CHECK),
        (SubmissionState.PENDING_REVIEW, SubmissionState.NEEDS_INFORMATION),
        (SubmissionState.PENDING_REVIEW, SubmissionState.CANCELLED),
        (SubmissionState.NEEDS_INFORMATION, SubmissionState.SUBMITTED),
        (SubmissionState.NEEDS_INFORMATION, SubmissionState.EXPIRED),
        (SubmissionState.NEEDS_INFORMATION, SubmissionState.CANCELLED),
        (SubmissionState.AWAITING_CHECK, SubmissionState.APPROVED),
        (SubmissionState.AWAITING_CHECK, SubmissionState.REJECTED),
        (SubmissionState.AWAITING_CHECK, SubmissionState.PENDING_REVIEW),
    }
)


def require_transition(current: SubmissionState, target: SubmissionState, submission_id: str) -> None:
    """Refuses (FAILED_PRECONDITION, INVALID_STATE) a transition the state machine does not allow."""
    if (current, target) not in SUBMISSION_TRANSITIONS:
        raise errors.InvalidState(
            f"submission {submission_id} is {current.name}, cannot become {target.name}",
            metadata={"submission_id": submission_id, "state": current.name, "target": target.name},
        )


class ReviewDecision(IntEnum):
    APPROVE = 1
    REJECT = 2
    REQUEST_INFORMATION = 3


class CheckerVerdict(IntEnum):
    CONFIRM = 1
    RETURN = 2


class DocumentType(IntEnum):
    PASSPORT = 1
    NATIONAL_ID = 2
    DRIVING_LICENCE = 3
    RESIDENCE_PERMIT = 4
    SELFIE = 5
    PROOF_OF_ADDRESS = 6
    SOURCE_OF_FUNDS = 7
    SOURCE_OF_WEALTH = 8
    OTHER = 9


IDENTITY_DOCUMENTS = frozenset(
    {
        DocumentType.PASSPORT,
        DocumentType.NATIONAL_ID,
        DocumentType.DRIVING_LICENCE,
        DocumentType.RESIDENCE_PERMIT,
    }
)


class DocumentState(IntEnum):
    UPLOADED = 1
    ACCEPTED = 2
    REJECTED = 3
    DELETED = 4


class SanctionsStatus(IntEnum):
    NOT_SCREENED = 1
    CLEAR = 2
    POTENTIAL_MATCH = 3
    CONFIRMED_MATCH = 4


class RiskRating(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    PROHIBITED = 4


class ScreeningState(IntEnum):
    """finmesh.kyc.v1.ScreeningState: CLEAR (terminal) or OPEN -> RESOLUTION_PROPOSED ->
    FALSE_POSITIVE | CONFIRMED_MATCH, RESOLUTION_PROPOSED -> OPEN (RETURN)."""

    CLEAR = 1
    OPEN = 2
    RESOLUTION_PROPOSED = 3
    FALSE_POSITIVE = 4
    CONFIRMED_MATCH = 5


SCREENING_TRANSITIONS = frozenset(
    {
        (ScreeningState.OPEN, ScreeningState.RESOLUTION_PROPOSED),
        (ScreeningState.RESOLUTION_PROPOSED, ScreeningState.OPEN),
        (ScreeningState.RESOLUTION_PROPOSED, ScreeningState.FALSE_POSITIVE),
        (ScreeningState.RESOLUTION_PROPOSED, ScreeningState.CONFIRMED_MATCH),
    }
)


def require_screening_transition(current: ScreeningState, target: ScreeningState, screening_id: str) -> None:
    if (current, target) not in SCREENING_TRANSITIONS:
        raise errors.InvalidState(
            f"screening {screening_id} is {current.name}, cannot become {target.name}",
            metadata={"screening_id": screening_id, "state": current.name, "target": target.name},
        )


class Action(IntEnum):
    """finmesh.kyc.v1.LimitedAction."""

    DEPOSIT = 1
    WITHDRAW = 2
    INTERNAL_TRANSFER = 3
    BORROW = 4
    STAKE = 5
    RWA_SUBSCRIBE = 6
    RWA_REDEEM = 7
    API_ACCESS = 8


class Denial(IntEnum):
    """finmesh.kyc.v1.LimitDenialReason."""

    NONE = 0
    LEVEL_TOO_LOW = 1
    SANCTIONS = 2
    RISK = 3


# -- levels ------------------------------------------------------------------------------------

L1_FIELDS = ("given_names", "family_name", "date_of_birth", "nationalities", "residential_address.country")
L3_FIELDS = (*L1_FIELDS, "occupation", "source_of_funds")


@dataclass(frozen=True)
class LevelRequirements:
    """What an application for a level must contain."""

    display_name: str
    description: str
    fields: tuple[str, ...]
    # Each inner set is one requirement met by any of its document types.
    documents: tuple[frozenset[DocumentType], ...]


REQUIREMENTS: Mapping[Level, LevelRequirements] = {
    Level.L0: LevelRequirements("Registered", "A registered user: deposits only, with low limits.", (), ()),
    Level.L1: LevelRequirements(
        "Identity data verified",
        "Name, date of birth, nationalities and address.",
        L1_FIELDS,
        (),
    ),
    Level.L2: LevelRequirements(
        "Identity document verified",
        "Level 1 data, an identity document (passport, national id, driving licence or residence "
        "permit) and a selfie.",
        L1_FIELDS,
        (IDENTITY_DOCUMENTS, frozenset({DocumentType.SELFIE})),
    ),
    Level.L3: LevelRequirements(
        "Enhanced due diligence",
        "Level 2, occupation and source of funds, a proof of address no older than 3 months and "
        "evidence of the source of funds.",
        L3_FIELDS,
        (
            IDENTITY_DOCUMENTS,
            frozenset({DocumentType.SELFIE}),
            frozenset({DocumentType.PROOF_OF_ADDRESS}),
            frozenset({DocumentType.SOURCE_OF_FUNDS}),
        ),
    ),
}


def missing_fields(level: Level, present: Mapping[str, bool]) -> list[str]:
    """The required personal-data fields of `level` that are empty."""
    return [name for name in REQUIREMENTS[level].fields if not present.get(name, False)]


def missing_documents(level: Level, uploaded: Sequence[DocumentType]) -> list[DocumentType]:
    """For each document requirement not met, its first (preferred) type."""
    have = set(uploaded)
    return [min(options) for options in REQUIREMENTS[level].documents if not options & have]


def check_target_level(target: Level, current: Level) -> None:
    if target <= current:
        raise errors.InvalidState(
            f"the user is at {current.name}; an application must be for a higher level",
            metadata={"current_level": current.name, "target_level": target.name},
        )


# -- limits ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """Limits of one allowed action, in the valuation asset's base units; None is no limit."""

    per_transaction_max: int | None = None
    daily_max: int | None = None
    monthly_max: int | None = None


# USD cents. An action missing from a level is not allowed at that level.
DEFAULT_LIMITS: Mapping[Level, Mapping[Action, Limit]] = {
    Level.L0: {Action.DEPOSIT: Limit(100_000, 100_000, 500_000)},
    Level.L1: {
        Action.DEPOSIT: Limit(1_000_000, 1_000_000, 5_000_000),
        Action.WITHDRAW: Limit(100_000, 200_000, 1_000_000),
        Action.INTERNAL_TRANSFER: Limit(100_000, 200_000, 1_000_000),
        Action.STAKE: Limit(1_000_000, 1_000_000, 5_000_000),
    },
    Level.L2: {
        Action.DEPOSIT: Limit(10_000_000, 10_000_000, 50_000_000),
        Action.WITHDRAW: Limit(2_500_000, 5_000_000, 50_000_000),
        Action.INTERNAL_TRANSFER: Limit(2_500_000, 5_000_000, 50_000_000),
        Action.BORROW: Limit(10_000_000, 10_000_000, 50_000_000),
        Action.STAKE: Limit(),
        Action.API_ACCESS: Limit(),
    },
    Level.L3: {
        Action.DEPOSIT: Limit(),
        Action.WITHDRAW: Limit(None, 100_000_000, None),
        Action.INTERNAL_TRANSFER: Limit(None, 100_000_000, None),
        Action.BORROW: Limit(),
        Action.STAKE: Limit(),
        Action.RWA_SUBSCRIBE: Limit(),
        Action.RWA_REDEEM: Limit(),
        Action.API_ACCESS: Limit(),
    },
}


@dataclass(frozen=True)
class ActionAnswer:
    """Whether a user may do one action, and its limits when allowed."""

    action: Action
    allowed: bool
    denial: Denial
    required_level: Level
    limit: Limit | None


def required_level(action: Action, limits: Mapping[Level, Mapping[Action, Limit]]) -> Level:
    for level in Level:
        if action in limits[level]:
            return level
    return Level.L3


def may(
    action: Action,
    level: Level,
    sanctions: SanctionsStatus,
    rating: RiskRating | None,
    limits: Mapping[Level, Mapping[Action, Limit]],
) -> ActionAnswer:
    """The answer to "may this user do `action`": sanctions first, then risk, then the level.

    Deposits stay allowed under a sanctions or risk restriction: funds arriving are frozen by the
    deposit service rather than bounced, which would tip off the sender.
    """
    needed = required_level(action, limits)
    limit = limits[level].get(action)
    denial = Denial.NONE
    if action is not Action.DEPOSIT and sanctions in (
        SanctionsStatus.POTENTIAL_MATCH,
        SanctionsStatus.CONFIRMED_MATCH,
    ):
        denial = Denial.SANCTIONS
    elif action is not Action.DEPOSIT and (
        rating is RiskRating.PROHIBITED or (rating is RiskRating.HIGH and level < Level.L3)
    ):
        denial = Denial.RISK
    elif limit is None:
        denial = Denial.LEVEL_TOO_LOW
    allowed = denial is Denial.NONE
    return ActionAnswer(action, allowed, denial, needed, limit if allowed else None)


# -- AML risk model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RiskFactor:
    code: str
    description: str
    points: int


@dataclass(frozen=True)
class RiskInputs:
    """What the model looks at: declared data and the compliance state."""

    politically_exposed: bool = False
    countries: frozenset[str] = frozenset()
    source_of_funds: int = 0
    level: Level = Level.L0
    sanctions: SanctionsStatus = SanctionsStatus.NOT_SCREENED


@dataclass(frozen=True)
class RiskResult:
    rating: RiskRating
    score: int
    factors: tuple[RiskFactor, ...] = field(default_factory=tuple)


SOURCE_OF_FUNDS_OTHER = 7
SOURCE_OF_FUNDS_CRYPTO = 6
RISK_SCORE_MAX = 100
# Score bands: below 25 LOW, below 50 MEDIUM, below 80 HIGH, else PROHIBITED.
RISK_BANDS = ((25, RiskRating.LOW), (50, RiskRating.MEDIUM), (80, RiskRating.HIGH))
REVIEW_INTERVAL_DAYS = {
    RiskRating.LOW: 3 * 365,
    RiskRating.MEDIUM: 2 * 365,
    RiskRating.HIGH: 365,
    RiskRating.PROHIBITED: 365,
}


def assess(inputs: RiskInputs, high_risk_countries: frozenset[str]) -> RiskResult:
    """The AML score (0..100) as a sum of factor points, and its rating band.

    A confirmed sanctions match is PROHIBITED whatever the score.
    """
    factors: list[RiskFactor] = [RiskFactor("BASE", "Every customer", 10)]
    if inputs.politically_exposed:
        factors.append(RiskFactor("PEP", "Politically exposed person (self-declared)", 40))
    risky = sorted(inputs.countries & high_risk_countries)
    if risky:
        factors.append(RiskFactor("HIGH_RISK_COUNTRY", "Nationality or residence in " + ", ".join(risky), 30))
    if inputs.source_of_funds == SOURCE_OF_FUNDS_OTHER:
        factors.append(RiskFactor("SOURCE_OF_FUNDS_OTHER", "Source of funds outside the usual kinds", 10))
    elif inputs.source_of_funds == SOURCE_OF_FUNDS_CRYPTO:
        factors.append(RiskFactor("SOURCE_OF_FUNDS_CRYPTO", "Funds from earlier crypto holdings", 5))
    if inputs.sanctions is SanctionsStatus.POTENTIAL_MATCH:
        factors.append(RiskFactor("SANCTIONS_POTENTIAL_MATCH", "An open sanctions screening match", 50))
    if inputs.level is Level.L3:
        factors.append(RiskFactor("ENHANCED_DUE_DILIGENCE", "Source of funds evidenced (L3)", -5))
    score = max(0, min(RISK_SCORE_MAX, sum(factor.points for factor in factors)))
    if inputs.sanctions is SanctionsStatus.CONFIRMED_MATCH:
        factors.append(RiskFactor("SANCTIONS_CONFIRMED_MATCH", "A confirmed sanctions match", 100))
        return RiskResult(RiskRating.PROHIBITED, RISK_SCORE_MAX, tuple(factors))
    rating = RiskRating.PROHIBITED
    for bound, band in RISK_BANDS:
        if score < bound:
            rating = band
            break
    return RiskResult(rating, score, tuple(factors))


def next_review(rating: RiskRating, now: datetime.datetime) -> datetime.datetime:
    return now + datetime.timedelta(days=REVIEW_INTERVAL_DAYS[rating])


# -- maker-checker -----------------------------------------------------------------------------


def require_distinct(maker: str, checker: str, what: str) -> None:
    """The four-eyes rule: the checker is never the maker."""
    if maker == checker:
        raise errors.PermissionDenied(
            f"the checker of a {what} must not be its maker",
            metadata={"rule": "MAKER_CHECKER", "staff_id": checker},
        )


def require_not_applicant(staff_id: str, applicant: str) -> None:
    if staff_id == applicant:
        raise errors.PermissionDenied(
            "staff never review their own application",
            metadata={"rule": "MAKER_CHECKER", "staff_id": staff_id},
        )
