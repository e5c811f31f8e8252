"""The built-in risk rules, used where the risk-control service is not deployed (the
custodial-wallet profile): per-transaction and daily thresholds, velocity, a first withdrawal to
an address, sanctioned destinations. Pure: the facts come in, a decision with reasons goes out."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Decision(enum.IntEnum):
    """finmesh.common.v1.Decision."""

    ALLOW = 1
    REVIEW = 2
    DENY = 3


@dataclass(frozen=True)
class Facts:
    """What the rules look at for one withdrawal."""

    amount: int
    # Requested in the last 24 hours and not ended unpaid, this withdrawal excluded.
    daily_total: int
    # Withdrawals requested in the velocity window, this one excluded.
    recent_count: int
    # No withdrawal to the destination was ever confirmed.
    first_to_address: bool
    # The KYC sanctions list has the destination (only known where kyc is deployed).
    sanctioned: bool


@dataclass(frozen=True)
class Thresholds:
    review_amount: int
    daily_review_amount: int
    new_address_review_amount: int
    velocity_max: int


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class Assessment:
    decision: Decision
    reasons: tuple[Reason, ...]


def assess(facts: Facts, thresholds: Thresholds) -> Assessment:
    """DENY if the destination is sanctioned; REVIEW if any threshold rule fires; ALLOW otherwise."""
    assert facts.amount > 0 and facts.daily_total >= 0 and facts.recent_count >= 0, facts
    if facts.sanctioned:
        return Assessment(
            Decision.DENY, (Reason("SANCTIONED_ADDRESS", "the destination is on the sanctions list"),)
        )
    reasons: list[Reason] = []
    if facts.amount >= thresholds.review_amount:
        reasons.append(
            Reason("TRANSACTION_THRESHOLD", f"amount {facts.amount} >= {thresholds.review_amount}")
        )
    daily = facts.daily_total + facts.amount
    if daily >= thresholds.daily_review_amount:
        reasons.append(
            Reason("DAILY_THRESHOLD", f"24-hour total {daily} >= {thresholds.daily_review_amount}")
        )
    if facts.recent_count + 1 > thresholds.velocity_max:
        reasons.append(
            Reason(
                "VELOCITY", f"{facts.recent_count + 1} withdrawals > {thresholds.velocity_max} in the window"
            )
        )
    if facts.first_to_address and facts.amount >= thresholds.new_address_review_amount:
        reasons.append(Reason("NEW_ADDRESS", "first withdrawal to this address"))
    return Assessment(Decision.REVIEW if reasons else Decision.ALLOW, tuple(reasons))


def needs_approvers(assessment: Assessment, amount: int, auto_approval_threshold: int) -> bool:
    """Whether an ALLOW/REVIEW withdrawal waits for approvers (auto-approved only under the
    threshold with ALLOW)."""
    assert assessment.decision is not Decision.DENY, assessment
    return assessment.decision is Decision.REVIEW or amount >= auto_approval_threshold
