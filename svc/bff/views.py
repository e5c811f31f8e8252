"""Rules the end-user BFFs share when they turn downstream records into screen views: which
activity kind a balance movement is, how balances of several accounts add up per asset, where the
caller stands with KYC. The contract-specific messages are built by each BFF from these."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from finmesh.account.v1 import account_resources_pb2 as account_resources
from finmesh.kyc.v1 import kyc_resources_pb2 as kyc_resources

SOURCE_ACCOUNT = "account"
IN = account_resources.ACTIVITY_DIRECTION_IN


class Movement(enum.Enum):
    """What a balance movement was, from its ledger category and direction."""

    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    TRANSFER_IN = "transfer_in"
    TRANSFER_OUT = "transfer_out"
    INTEREST = "interest"
    FEE = "fee"
    ADJUSTMENT = "adjustment"


# Category prefixes (`deposit.credit`, `withdrawal.hold`, `transfer.internal`) to movements.
_PREFIXES = {
    "deposit": Movement.DEPOSIT,
    "withdrawal": Movement.WITHDRAWAL,
    "withdraw": Movement.WITHDRAWAL,
    "interest": Movement.INTEREST,
    "fee": Movement.FEE,
}


def movement(activity: account_resources.AccountActivity) -> Movement:
    prefix = activity.category.partition(".")[0]
    if prefix == "transfer":
        return Movement.TRANSFER_IN if activity.direction == IN else Movement.TRANSFER_OUT
    return _PREFIXES.get(prefix, Movement.ADJUSTMENT)


def signed_amount(activity: account_resources.AccountActivity) -> str:
    """The movement's amount, negative when the caller's balance shrinks."""
    if activity.direction == IN or activity.amount == "0":
        return activity.amount
    return f"-{activity.amount}"


def activity_id(activity: account_resources.AccountActivity) -> str:
    return f"{SOURCE_ACCOUNT}:{activity.activity_id}"


@dataclass
class AssetBalance:
    """The caller's balance of one asset summed over its accounts (base units)."""

    asset: str
    decimals: int
    available: int = 0
    held: int = 0
    pending: int = 0

    @property
    def total(self) -> int:
        return self.available + self.held

    @property
    def chain(self) -> str:
        return self.asset.partition(":")[0]

    @property
    def symbol(self) -> str:
        return self.asset.partition(":")[2]


def balances(
    accounts: Iterable[account_resources.Account], *, include_zero: bool = False
) -> list[AssetBalance]:
    """Per asset: available, held (holds and frozen amounts) and pending incoming, by asset id."""
    summed: dict[str, AssetBalance] = {}
    for account in accounts:
        entry = summed.setdefault(account.asset, AssetBalance(account.asset, account.decimals))
        figures = account.balance
        entry.available += int(figures.available or 0)
        entry.held += int(figures.held or 0) + int(figures.frozen or 0)
        entry.pending += int(figures.pending_incoming or 0)
    return [entry for _, entry in sorted(summed.items()) if include_zero or entry.total or entry.pending]


class KycProgress(enum.Enum):
    """Where the caller stands with identity verification."""

    NONE = "none"
    DRAFT = "draft"
    IN_REVIEW = "in_review"
    ACTION_REQUIRED = "action_required"
    REJECTED = "rejected"


_PROGRESS = {
    kyc_resources.SUBMISSION_STATE_DRAFT: KycProgress.DRAFT,
    kyc_resources.SUBMISSION_STATE_SUBMITTED: KycProgress.IN_REVIEW,
    kyc_resources.SUBMISSION_STATE_PENDING_REVIEW: KycProgress.IN_REVIEW,
    kyc_resources.SUBMISSION_STATE_AWAITING_CHECK: KycProgress.IN_REVIEW,
    kyc_resources.SUBMISSION_STATE_NEEDS_INFORMATION: KycProgress.ACTION_REQUIRED,
    kyc_resources.SUBMISSION_STATE_REJECTED: KycProgress.REJECTED,
}


def kyc_progress(status: kyc_resources.KycStatus) -> KycProgress:
    if not status.open_submission_id:
        return KycProgress.NONE
    return _PROGRESS.get(status.open_submission_state, KycProgress.NONE)
