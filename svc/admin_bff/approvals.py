"""The unified approval queue of the console: the items waiting for a checker or approver at the
services that own them, as ApprovalItems, with whether the caller may decide each.

Sources: withdraw (AWAITING_APPROVAL withdrawals, M-of-N), kyc (submissions awaiting their maker,
reviews awaiting their checker, open sanctions cases and resolutions awaiting their checker) and
auth (role assignments awaiting their second admin). The other kinds of the contract have no
source yet and are reported DISABLED when asked for.

A page token holds, per source, the sort key (waiting since, id) of the last item of that source
shown, and a fingerprint of the filters: a later page shows only items after each source's
cursor, so items decided in between never shift the others.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass

from finmesh.admin_bff.v1 import admin_bff_service_pb2 as admin
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.common.v1 import enums_pb2, money_pb2
from finmesh.kyc.v1 import kyc_resources_pb2 as kyc_resources
from finmesh.withdraw.v1 import withdraw_resources_pb2 as withdraw_resources
from google.protobuf import timestamp_pb2

from svc.bff.activity import fingerprint
from svc.kit import errors
from svc.kit.context import EndUser

DEFAULT_PAGE = 50
SYSTEM_MAKER = "system"
# Roles each decision needs at the owning service (withdraw: approver; kyc: its maker and
# checker roles; auth: a second admin).
WITHDRAWAL_APPROVERS = frozenset({"approver"})
KYC_MAKERS = frozenset({"operator", "admin"})
KYC_CHECKERS = frozenset({"approver", "admin"})
ROLE_CHECKERS = frozenset({"admin"})

WITHDRAW, KYC, AUTH = "withdraw", "kyc", "auth"
SOURCE_KINDS: dict[str, frozenset[admin.ApprovalKind.ValueType]] = {
    WITHDRAW: frozenset({admin.APPROVAL_KIND_WITHDRAWAL}),
    KYC: frozenset(
        {
            admin.APPROVAL_KIND_KYC_SUBMISSION,
            admin.APPROVAL_KIND_KYC_REVIEW,
            admin.APPROVAL_KIND_SANCTIONS_CASE,
        }
    ),
    AUTH: frozenset({admin.APPROVAL_KIND_ROLE_ASSIGNMENT}),
}
ALL_KINDS = frozenset(kind for kind in admin.ApprovalKind.values() if kind)
SERVED_KINDS = frozenset().union(*SOURCE_KINDS.values())

NOT_YOURS = "you prepared this item"
YOUR_OWN = "this item concerns you"
ALREADY_DECIDED = "you already decided on this item"


@dataclass(frozen=True)
class Query:
    """The filters of one queue listing (everything but the page)."""

    kinds: frozenset[admin.ApprovalKind.ValueType]
    actionable_only: bool
    subject_user_id: str
    descending: bool

    @property
    def fingerprint(self) -> str:
        return fingerprint(sorted(self.kinds), self.actionable_only, self.subject_user_id, self.descending)

    def sources(self) -> list[str]:
        """The sources holding at least one wanted kind."""
        return [source for source, kinds in SOURCE_KINDS.items() if kinds & self.kinds]

    def unserved(self) -> list[str]:
        """Wanted kinds without a source in this version, as `admin_intervention`."""
        return [
            admin.ApprovalKind.Name(kind).removeprefix("APPROVAL_KIND_").lower()
            for kind in sorted(self.kinds - SERVED_KINDS)
        ]


def query_of(request: admin.ListPendingApprovalsRequest) -> Query:
    return Query(
        kinds=frozenset(request.kinds) or ALL_KINDS,
        actionable_only=request.actionable_by_me_only,
        subject_user_id=request.subject_user_id,
        descending=request.order == enums_pb2.SORT_ORDER_DESCENDING,
    )


@dataclass(frozen=True)
class Pending:
    """One item of the queue with its source and sort key (waiting since, in µs; its id)."""

    source: str
    item: admin.ApprovalItem

    @property
    def key(self) -> tuple[int, str]:
        return self.item.create_time.ToMicroseconds(), self.item.source_id


Cursor = tuple[int, str]


def decode_token(token: str, query: Query) -> dict[str, Cursor]:
    if not token:
        return {}
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
        cursors = {str(source): (int(key[0]), str(key[1])) for source, key in raw["c"].items()}
        filters = str(raw["f"])
    except (ValueError, KeyError, TypeError, IndexError):
        raise errors.InvalidArgument(
            [errors.FieldViolation("page_token", "not a token of this queue")]
        ) from None
    if filters != query.fingerprint:
        raise errors.InvalidArgument(
            [errors.FieldViolation("page_token", "the filters changed since the token was made")]
        )
    return cursors


def encode_token(cursors: dict[str, Cursor], query: Query) -> str:
    raw = {"f": query.fingerprint, "c": {source: list(key) for source, key in cursors.items()}}
    return base64.urlsafe_b64encode(json.dumps(raw, separators=(",", ":")).encode()).decode()


def page(
    items: list[Pending], query: Query, cursors: dict[str, Cursor], size: int
) -> tuple[list[Pending], str]:
    """The items after each source's cursor in the wanted order, up to `size`, and the token of
    the next page ('' on the last)."""

    def after(pending: Pending) -> bool:
        cursor = cursors.get(pending.source)
        if cursor is None:
            return True
        return pending.key < cursor if query.descending else pending.key > cursor

    remaining = sorted((pending for pending in items if after(pending)), key=lambda p: p.key)
    if query.descending:
        remaining.reverse()
    size = size or DEFAULT_PAGE
    shown = remaining[:size]
    if len(remaining) <= size:
        return shown, ""
    following = dict(cursors)
    for pending in shown:
        following[pending.source] = pending.key
    return shown, encode_token(following, query)


def wanted(items: Iterable[Pending], query: Query) -> list[Pending]:
    return [
        pending
        for pending in items
        if pending.item.kind in query.kinds
        and (not query.subject_user_id or pending.item.subject_user_id == query.subject_user_id)
        and (pending.item.actionable_by_me or not query.actionable_only)
    ]


def _decider(
    item: admin.ApprovalItem, caller: EndUser, roles: frozenset[str], *, decided: bool = False
) -> None:
    """Sets whether the caller may decide the item: holds a deciding role, did not prepare it,
    is not its subject and has not decided already."""
    if not caller.roles & roles:
        item.not_actionable_reason = f"needs one of the roles {', '.join(sorted(roles))}"
    elif item.maker_id and item.maker_id == caller.subject:
        item.not_actionable_reason = NOT_YOURS
    elif item.subject_user_id and item.subject_user_id == caller.subject:
        item.not_actionable_reason = YOUR_OWN
    elif decided:
        item.not_actionable_reason = ALREADY_DECIDED
    else:
        item.actionable_by_me = True


def _short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}" if len(address) > 12 else address


def _stamp(source: timestamp_pb2.Timestamp) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.CopyFrom(source)
    return stamp


def withdrawal_item(withdrawal: withdraw_resources.Withdrawal, caller: EndUser) -> Pending:
    """An AWAITING_APPROVAL withdrawal: its requester is its maker; M-of-N distinct approvers."""
    symbol = withdrawal.amount.asset.partition(":")[2]
    approvals = [
        a for a in withdrawal.approvals if a.decision == withdraw_resources.APPROVER_DECISION_APPROVE
    ]
    waiting_since = withdrawal.create_time
    for transition in withdrawal.history:
        if transition.to_state == withdraw_resources.WITHDRAWAL_STATE_AWAITING_APPROVAL:
            waiting_since = transition.transition_time
    item = admin.ApprovalItem(
        kind=admin.APPROVAL_KIND_WITHDRAWAL,
        source_service=WITHDRAW,
        source_id=withdrawal.withdrawal_id,
        title=(
            f"Withdrawal of {withdrawal.amount.amount} {symbol} (base units) "
            f"to {_short(withdrawal.destination.address)}"
        ),
        summary=(
            f"{withdrawal.amount.amount} {withdrawal.amount.asset} plus a fee of {withdrawal.fee.amount} to "
            f"{withdrawal.destination.chain}:{withdrawal.destination.address}"
            + (f" ({withdrawal.destination_label})" if withdrawal.destination_label else "")
            + f"; {len(approvals)} of {withdrawal.required_approvals} approvals"
        ),
        subject_user_id=withdrawal.user_id,
        amount=money_pb2.Money(asset=withdrawal.amount.asset, amount=withdrawal.amount.amount),
        maker_id=withdrawal.user_id,
        approvals_required=withdrawal.required_approvals,
        approvals_received=len(approvals),
        action_route=f"POST /v1/admin/withdrawals/{withdrawal.withdrawal_id}:approve",
        console_link=f"/console/withdrawals/{withdrawal.withdrawal_id}",
        create_time=_stamp(waiting_since),
    )
    if withdrawal.HasField("approval_expire_time"):
        item.expire_time.CopyFrom(withdrawal.approval_expire_time)
    decided = any(approval.approver_id == caller.subject for approval in withdrawal.approvals)
    _decider(item, caller, WITHDRAWAL_APPROVERS, decided=decided)
    return Pending(WITHDRAW, item)


def submission_item(submission: kyc_resources.Submission, caller: EndUser) -> Pending:
    """A submission awaiting its maker (PENDING_REVIEW) or its maker's review awaiting a checker."""
    level = enums_pb2.KycLevel.Name(submission.target_level).removeprefix("KYC_LEVEL_")
    link = f"/console/kyc/submissions/{submission.submission_id}"
    if submission.state == kyc_resources.SUBMISSION_STATE_AWAITING_CHECK:
        decision = kyc_resources.ReviewDecision.Name(submission.review.decision).removeprefix(
            "REVIEW_DECISION_"
        )
        item = admin.ApprovalItem(
            kind=admin.APPROVAL_KIND_KYC_REVIEW,
            title=f"KYC review of a {level} application: {decision}",
            summary=submission.review.internal_note,
            maker_id=submission.review.reviewer_id,
            action_route=f"POST /v1/admin/kyc/submissions/{submission.submission_id}:checkReview",
            create_time=_stamp(submission.review.review_time),
        )
        roles = KYC_CHECKERS
    else:
        item = admin.ApprovalItem(
            kind=admin.APPROVAL_KIND_KYC_SUBMISSION,
            title=f"KYC application for {level}",
            summary=f"{len(submission.documents)} documents",
            maker_id="",
            action_route=f"POST /v1/admin/kyc/submissions/{submission.submission_id}:review",
            create_time=_stamp(submission.submit_time),
        )
        roles = KYC_MAKERS
    item.source_service = KYC
    item.source_id = submission.submission_id
    item.subject_user_id = submission.user_id
    item.approvals_required = 1
    item.console_link = link
    _decider(item, caller, roles)
    return Pending(KYC, item)


def screening_item(screening: kyc_resources.Screening, caller: EndUser) -> Pending:
    """A sanctions case: OPEN awaits an operator's resolution, RESOLUTION_PROPOSED its checker."""
    subject = screening.name.full_name if screening.HasField("name") else _short(screening.address.address)
    proposed = screening.state == kyc_resources.SCREENING_STATE_RESOLUTION_PROPOSED
    item = admin.ApprovalItem(
        kind=admin.APPROVAL_KIND_SANCTIONS_CASE,
        source_service=KYC,
        source_id=screening.screening_id,
        title=f"Sanctions case on {subject}: {len(screening.matches)} potential matches",
        summary=screening.proposal_note if proposed else "",
        subject_user_id=screening.user_id,
        maker_id=screening.proposed_by if proposed else "",
        approvals_required=1,
        action_route=(
            f"POST /v1/admin/kyc/screenings/{screening.screening_id}:checkResolution"
            if proposed
            else f"POST /v1/admin/kyc/screenings/{screening.screening_id}:proposeResolution"
        ),
        console_link=f"/console/kyc/screenings/{screening.screening_id}",
        create_time=_stamp(screening.screen_time),
    )
    _decider(item, caller, KYC_CHECKERS if proposed else KYC_MAKERS)
    return Pending(KYC, item)


def role_assignment_item(assignment: auth_resources.RoleAssignment, caller: EndUser) -> Pending:
    """A staff role grant requested by one admin, awaiting a second."""
    role = enums_pb2.Role.Name(assignment.role).removeprefix("ROLE_").lower()
    item = admin.ApprovalItem(
        kind=admin.APPROVAL_KIND_ROLE_ASSIGNMENT,
        source_service=AUTH,
        source_id=assignment.role_assignment_id,
        title=f"Grant of the {role} role",
        summary=assignment.justification,
        subject_user_id=assignment.user_id,
        maker_id=assignment.requested_by,
        approvals_required=1,
        action_route=f"POST /v1/admin/auth/role_assignments/{assignment.role_assignment_id}:approve",
        console_link=f"/console/role-assignments/{assignment.role_assignment_id}",
        create_time=_stamp(assignment.create_time),
    )
    _decider(item, caller, ROLE_CHECKERS)
    return Pending(AUTH, item)
