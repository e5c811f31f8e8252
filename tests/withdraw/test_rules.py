"""The built-in risk rules, the approval decision and the limit arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from svc.kit import errors
from svc.withdraw import domain, rules
from svc.withdraw.config import AssetPolicy, LevelLimits
from svc.withdraw.rules import Decision, Facts, Thresholds

THRESHOLDS = Thresholds(
    review_amount=1_000, daily_review_amount=2_000, new_address_review_amount=500, velocity_max=3
)


def facts(**overrides: object) -> Facts:
    values: dict[str, object] = {
        "amount": 100,
        "daily_total": 0,
        "recent_count": 0,
        "first_to_address": False,
        "sanctioned": False,
    }
    values.update(overrides)
    return Facts(**values)  # type: ignore[arg-type]


def codes(assessment: rules.Assessment) -> set[str]:
    return {reason.code for reason in assessment.reasons}


def test_a_small_withdrawal_to_a_known_address_is_allowed() -> None:
    assert rules.assess(facts(), THRESHOLDS) == rules.Assessment(Decision.ALLOW, ())


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"amount": 1_000}, "TRANSACTION_THRESHOLD"),
        ({"daily_total": 1_900}, "DAILY_THRESHOLD"),
        ({"recent_count": 3}, "VELOCITY"),
        ({"first_to_address": True, "amount": 500}, "NEW_ADDRESS"),
    ],
)
def test_each_rule_sends_to_review_at_its_threshold(changes: dict[str, object], code: str) -> None:
    assessed = rules.assess(facts(**changes), THRESHOLDS)
    assert assessed.decision is Decision.REVIEW and codes(assessed) == {code}


def test_just_under_every_threshold_is_allowed() -> None:
    under = facts(amount=499, daily_total=1_500, recent_count=2, first_to_address=True)
    assert rules.assess(under, THRESHOLDS).decision is Decision.ALLOW


def test_a_sanctioned_destination_is_denied_whatever_else() -> None:
    assessed = rules.assess(facts(sanctioned=True, amount=5_000), THRESHOLDS)
    assert assessed.decision is Decision.DENY and codes(assessed) == {"SANCTIONED_ADDRESS"}


def test_auto_approval_only_under_the_threshold_with_allow() -> None:
    allow = rules.Assessment(Decision.ALLOW, ())
    review = rules.Assessment(Decision.REVIEW, (rules.Reason("VELOCITY", ""),))
    assert not rules.needs_approvers(allow, 99, 100)
    assert rules.needs_approvers(allow, 100, 100)
    assert rules.needs_approvers(review, 1, 100)


@given(st.integers(1, 10**30), st.integers(0, 10**30), st.integers(0, 50), st.booleans(), st.booleans())
def test_review_exactly_when_a_rule_fires(
    amount: int, daily: int, recent: int, first: bool, bad: bool
) -> None:
    assessed = rules.assess(
        facts(amount=amount, daily_total=daily, recent_count=recent, first_to_address=first, sanctioned=bad),
        THRESHOLDS,
    )
    fired = amount >= 1_000 or daily + amount >= 2_000 or recent + 1 > 3 or (first and amount >= 500)
    expected = Decision.DENY if bad else (Decision.REVIEW if fired else Decision.ALLOW)
    assert assessed.decision is expected
    assert bool(assessed.reasons) == (bad or fired)


POLICY = AssetPolicy(
    fee=7,
    min_amount=10,
    limits={1: LevelLimits(max_amount=1_000, daily_limit=1_500)},
    auto_approval_threshold=100,
    review_amount=1_000,
    daily_review_amount=2_000,
)


def test_limits_per_level_and_day() -> None:
    limits = domain.limits_for("c:ETH", POLICY, 1, used=600)
    assert (limits.allowed, limits.max_amount, limits.remaining, limits.fee) == (True, 1_000, 900, 7)
    domain.check_limits(limits, 900)
    with pytest.raises(errors.LimitExceeded) as daily:
        domain.check_limits(limits, 901)
    assert daily.value.metadata["limit"] == "daily_limit"
    with pytest.raises(errors.LimitExceeded) as single:
        domain.check_limits(domain.limits_for("c:ETH", POLICY, 1, used=0), 1_001)
    assert single.value.metadata["limit"] == "max_amount"
    with pytest.raises(errors.InvalidArgument):
        domain.check_limits(limits, 9)


def test_a_level_without_limits_may_not_withdraw() -> None:
    limits = domain.limits_for("c:ETH", POLICY, 2, used=0)
    assert not limits.allowed and limits.remaining == 0
    with pytest.raises(errors.LimitExceeded):
        domain.check_limits(limits, 10)


@given(st.integers(0, 3_000), st.integers(1, 3_000))
def test_what_fits_never_exceeds_either_limit(used: int, amount: int) -> None:
    limits = domain.limits_for("c:ETH", POLICY, 1, used=used)
    try:
        domain.check_limits(limits, amount)
    except (errors.LimitExceeded, errors.InvalidArgument):
        assert amount < 10 or amount > 1_000 or used + amount > 1_500
    else:
        assert 10 <= amount <= 1_000 and used + amount <= 1_500
