"""The admin BFF's servicer: console views aggregated from the services that own their parts, for
staff only (support, operator, approver, admin, auditor; PERMISSION_DENIED with ErrorInfo
otherwise, checked before any downstream call).

Implemented: GetUserOverview, SearchUsers, ListPendingApprovals (withdraw, kyc and auth queues,
svc.admin_bff.approvals). GetConsoleHome and GetSystemHealth answer UNIMPLEMENTED with ErrorInfo
(after the role check).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from finmesh.admin_bff.v1 import admin_bff_service_pb2 as admin
from finmesh.admin_bff.v1 import admin_bff_service_pb2_grpc as admin_grpc
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.common.v1 import enums_pb2, money_pb2
from finmesh.deposit.v1 import deposit_resources_pb2 as deposit_resources
from finmesh.kyc.v1 import kyc_resources_pb2 as kyc_resources
from finmesh.user.v1 import user_service_pb2 as user_service
from finmesh.withdraw.v1 import withdraw_resources_pb2 as withdraw_resources
from google.protobuf import duration_pb2

from svc.admin_bff import approvals, health
from svc.admin_bff.approvals import Pending, Query
from svc.admin_bff.health import ChainCheck, HealthReads, ServiceCheck, Summary
from svc.admin_bff.reads import LATEST, AuthRecord, Movements, StaffReads, UserRecord
from svc.kit.aggregate import Aggregation, Results, Section, SectionOutcome, SectionState
from svc.kit.context import EndUser
from svc.kit.principals import require_roles

STAFF_ROLES = frozenset({"support", "operator", "approver", "admin", "auditor"})
NOT_CALLABLE = "the catalog does not let admin-bff call notification"
NOT_AGGREGATED = "approvals are not aggregated by this version of admin-bff"
NOT_SERVED = "{what} is not served by this version of admin-bff: its sources do not exist yet"

_USER_STATUS = {
    user_service.USER_STATUS_ACTIVE: admin.USER_STATUS_ACTIVE,
    user_service.USER_STATUS_FROZEN: admin.USER_STATUS_FROZEN,
    user_service.USER_STATUS_CLOSED: admin.USER_STATUS_CLOSED,
}
_RISK = {
    kyc_resources.AML_RISK_RATING_LOW: admin.RISK_RATING_LOW,
    kyc_resources.AML_RISK_RATING_MEDIUM: admin.RISK_RATING_MEDIUM,
    kyc_resources.AML_RISK_RATING_HIGH: admin.RISK_RATING_HIGH,
    kyc_resources.AML_RISK_RATING_PROHIBITED: admin.RISK_RATING_PROHIBITED,
}
_SANCTIONS = {
    kyc_resources.SANCTIONS_STATUS_CLEAR: admin.SANCTIONS_STATE_CLEAR,
    kyc_resources.SANCTIONS_STATUS_POTENTIAL_MATCH: admin.SANCTIONS_STATE_POTENTIAL_MATCH,
    kyc_resources.SANCTIONS_STATUS_CONFIRMED_MATCH: admin.SANCTIONS_STATE_CONFIRMED_MATCH,
}
_WANTED_STATUS = {value: key for key, value in _USER_STATUS.items()}
# The console's queues (contract names) of each approval kind, and their console routes.
_QUEUES = {
    admin.APPROVAL_KIND_KYC_SUBMISSION: ("kyc_review", "/console/kyc/review"),
    admin.APPROVAL_KIND_KYC_REVIEW: ("kyc_check", "/console/kyc/check"),
    admin.APPROVAL_KIND_SANCTIONS_CASE: ("sanctions_cases", "/console/kyc/sanctions"),
    admin.APPROVAL_KIND_WITHDRAWAL: ("withdrawal_approvals", "/console/withdrawals/approvals"),
    admin.APPROVAL_KIND_ROLE_ASSIGNMENT: ("role_assignments", "/console/role-assignments"),
}
# Health sources this version does not read: Kafka consumer lag (no admin client), hot wallets
# (custody is not an edge of admin-bff), reconciliation (the service does not exist yet).
UNREAD_HEALTH = (
    (admin.SECTION_EVENT_CONSUMERS, "event consumer lag is not read by this version of admin-bff"),
    (admin.SECTION_WALLETS, "hot wallet levels are not read by this version of admin-bff"),
    (admin.SECTION_RECONCILIATION, "reconciliation runs are not read by this version of admin-bff"),
    (admin.SECTION_NOTIFICATIONS, NOT_CALLABLE),
)


_ROLES = {
    "support": enums_pb2.ROLE_SUPPORT,
    "operator": enums_pb2.ROLE_OPERATOR,
    "approver": enums_pb2.ROLE_APPROVER,
    "admin": enums_pb2.ROLE_ADMIN,
    "auditor": enums_pb2.ROLE_AUDITOR,
}


def queue_counts(items: list[Pending]) -> list[admin.QueueCount]:
    """One count per queue with items, largest first: how many wait, how many the caller may
    decide, and how long the oldest has waited."""
    now_us = time.time_ns() // 1000
    counts: dict[str, admin.QueueCount] = {}
    oldest: dict[str, int] = {}
    for pending in items:
        name, link = _QUEUES[pending.item.kind]
        queue = counts.setdefault(name, admin.QueueCount(queue=name, console_link=link))
        queue.count += 1
        queue.actionable_by_me += int(pending.item.actionable_by_me)
        waiting_since = pending.item.create_time.ToMicroseconds()
        oldest[name] = min(oldest.get(name, waiting_since), waiting_since)
    for name, queue in counts.items():
        age = duration_pb2.Duration()
        age.FromMicroseconds(max(0, now_us - oldest[name]))
        queue.oldest_age.CopyFrom(age)
    return sorted(counts.values(), key=lambda queue: (-queue.count, queue.queue))


def require_staff(what: str) -> EndUser:
    return require_roles(STAFF_ROLES, what)


def user_row(user: user_service.User, profile: kyc_resources.KycProfile | None) -> admin.UserRow:
    row = admin.UserRow(
        user_id=user.user_id,
        email=user.email,
        phone=user.phone,
        display_name=user.profile.display_name,
        status=_USER_STATUS.get(user.status, admin.USER_STATUS_UNSPECIFIED),
    )
    row.create_time.CopyFrom(user.create_time)
    if profile is not None:
        row.kyc_level = profile.level
        row.risk_rating = _RISK.get(profile.risk_assessment.rating, admin.RISK_RATING_UNSPECIFIED)
        row.sanctions = _SANCTIONS.get(profile.sanctions_status, admin.SANCTIONS_STATE_UNSPECIFIED)
    return row


def compliance_view(profile: kyc_resources.KycProfile) -> admin.ComplianceView:
    view = admin.ComplianceView(
        kyc_level=profile.level,
        open_submission_state=kyc_resources.SubmissionState.Name(profile.open_submission_state).removeprefix(
            "SUBMISSION_STATE_"
        )
        if profile.open_submission_id
        else "",
        open_submission_id=profile.open_submission_id,
        sanctions=_SANCTIONS.get(profile.sanctions_status, admin.SANCTIONS_STATE_UNSPECIFIED),
        risk_rating=_RISK.get(profile.risk_assessment.rating, admin.RISK_RATING_UNSPECIFIED),
        risk_score=profile.risk_assessment.score,
        politically_exposed=profile.politically_exposed,
    )
    if profile.HasField("reverification_due_time"):
        view.reverification_due_time.CopyFrom(profile.reverification_due_time)
    return view


def balance_rows(accounts: list[Any]) -> list[admin.BalanceRow]:
    rows = []
    for account in accounts:
        figures = account.balance
        rows.append(
            admin.BalanceRow(
                asset=money_pb2.Asset(
                    id=account.asset,
                    symbol=account.asset.partition(":")[2],
                    chain=account.asset.partition(":")[0],
                    decimals=account.decimals,
                ),
                available=figures.available,
                held=figures.held,
                pending=figures.pending_incoming,
                frozen=figures.frozen,
            )
        )
    return rows


def activity_rows(movements: Movements) -> list[admin.ActivityRow]:
    """Deposits and withdrawals of the user, newest first, the 20 latest."""
    rows: list[tuple[int, admin.ActivityRow]] = []
    for deposit in movements.deposits:
        row = admin.ActivityRow(
            source_service="deposit",
            source_id=deposit.deposit_id,
            kind="DEPOSIT",
            status=deposit_resources.DepositState.Name(deposit.state).removeprefix("DEPOSIT_STATE_"),
            amount=money_pb2.SignedMoney(asset=deposit.amount.asset, amount=deposit.amount.amount),
            counterparty=deposit.from_address,
            tx_hash=deposit.tx_hash,
        )
        row.occur_time.CopyFrom(deposit.seen_time)
        rows.append((deposit.seen_time.ToMicroseconds(), row))
    for withdrawal in movements.withdrawals:
        amount = withdrawal.amount.amount
        row = admin.ActivityRow(
            source_service="withdraw",
            source_id=withdrawal.withdrawal_id,
            kind="WITHDRAWAL",
            status=withdraw_resources.WithdrawalState.Name(withdrawal.state).removeprefix(
                "WITHDRAWAL_STATE_"
            ),
            amount=money_pb2.SignedMoney(
                asset=withdrawal.amount.asset, amount=amount if amount == "0" else f"-{amount}"
            ),
            counterparty=withdrawal.destination.address,
            tx_hash=withdrawal.tx_hash,
        )
        row.occur_time.CopyFrom(withdrawal.create_time)
        rows.append((withdrawal.create_time.ToMicroseconds(), row))
    rows.sort(key=lambda pair: pair[0], reverse=True)
    return [row for _, row in rows[:LATEST]]


def auth_views(record: AuthRecord, response: admin.GetUserOverviewResponse) -> None:
    for session in record.sessions:
        view = admin.SessionRow(
            session_id=session.session_id,
            device=session.device.device_name,
            login_ip=session.login_ip,
            last_ip=session.last_ip,
            approximate_location=session.approximate_location,
        )
        view.create_time.CopyFrom(session.create_time)
        if session.HasField("last_refresh_time"):
            view.last_refresh_time.CopyFrom(session.last_refresh_time)
        response.sessions.append(view)
    for login in record.logins:
        row = admin.LoginRow(
            outcome=auth_resources.LoginOutcome.Name(login.outcome).removeprefix("LOGIN_OUTCOME_"),
            ip=login.ip,
            approximate_location=login.approximate_location,
            new_device_or_ip=login.new_device_or_ip,
        )
        row.attempt_time.CopyFrom(login.attempt_time)
        response.recent_logins.append(row)
    for key in record.api_keys:
        key_row = admin.ApiKeyRow(
            api_key_id=key.api_key_id,
            display_name=key.display_name,
            state=auth_resources.ApiKeyState.Name(key.state).removeprefix("API_KEY_STATE_"),
            scopes=list(key.scopes),
            allowed_ip_ranges=list(key.allowed_ip_ranges),
        )
        if key.HasField("expire_time"):
            key_row.expire_time.CopyFrom(key.expire_time)
        if key.HasField("last_used_time"):
            key_row.last_used_time.CopyFrom(key.last_used_time)
        response.api_keys.append(key_row)


class AdminBffServicer(admin_grpc.AdminBffServiceServicer):
    """Console views for staff, each aggregated from the services that own its parts."""

    def __init__(self, reads: StaffReads, health: HealthReads, aggregation: Aggregation) -> None:
        self.reads = reads
        self.health = health
        self.aggregation = aggregation

    async def GetUserOverview(
        self, request: admin.GetUserOverviewRequest, context: Any
    ) -> admin.GetUserOverviewResponse:
        """Profile and status history, compliance, balances, activity, sessions, logins, keys."""
        require_staff("the user overview")
        user_id = request.user_id
        results = await self.aggregation.run(
            [
                Section(
                    admin.SECTION_USERS,
                    ("user",),
                    lambda deadline_s: self.reads.user(deadline_s, user_id),
                    required=True,
                ),
                Section(
                    admin.SECTION_COMPLIANCE,
                    ("kyc",),
                    lambda deadline_s: self.reads.kyc_profile(deadline_s, user_id),
                ),
                Section(
                    admin.SECTION_BALANCES,
                    ("account",),
                    lambda deadline_s: self.reads.accounts(deadline_s, user_id),
                ),
                Section(
                    admin.SECTION_ACTIVITY,
                    ("deposit", "withdraw"),
                    lambda deadline_s: self.reads.movements(deadline_s, user_id),
                ),
                Section(
                    admin.SECTION_AUTH, ("auth",), lambda deadline_s: self.reads.auth(deadline_s, user_id)
                ),
            ]
        )
        results.add(SectionOutcome(admin.SECTION_NOTIFICATIONS, SectionState.DISABLED, NOT_CALLABLE))
        results.add(SectionOutcome(admin.SECTION_APPROVALS, SectionState.DISABLED, NOT_AGGREGATED))
        record: UserRecord = results.get(admin.SECTION_USERS)
        profile: kyc_resources.KycProfile | None = results.get(admin.SECTION_COMPLIANCE)
        user = record.user
        response = admin.GetUserOverviewResponse(
            user=user_row(user, profile),
            email_verified=user.email_verified,
            phone_verified=user.phone_verified,
            language=user.profile.language,
            country_of_residence=user.profile.country_of_residence,
        )
        for change in record.status_changes:
            row = admin.StatusChangeRow(
                previous_status=_USER_STATUS.get(change.previous_status, admin.USER_STATUS_UNSPECIFIED),
                new_status=_USER_STATUS.get(change.new_status, admin.USER_STATUS_UNSPECIFIED),
                reason=user_service.StatusReason.Name(change.reason).removeprefix("STATUS_REASON_"),
                note=change.note,
                actor_id=change.actor_id,
            )
            row.change_time.CopyFrom(change.change_time)
            response.status_changes.append(row)
        if profile is not None:
            response.compliance.CopyFrom(compliance_view(profile))
        if (accounts := results.get(admin.SECTION_BALANCES)) is not None:
            response.balances.extend(balance_rows(accounts))
        if (movements := results.get(admin.SECTION_ACTIVITY)) is not None:
            response.recent_activity.extend(activity_rows(movements))
        if (auth := results.get(admin.SECTION_AUTH)) is not None:
            auth_views(auth, response)
        response.sections.extend(results.statuses(admin.SectionStatus))
        return response

    async def SearchUsers(self, request: admin.SearchUsersRequest, context: Any) -> admin.SearchUsersResponse:
        """Users matching the query, newest first, with their KYC level, risk rating and sanctions."""
        require_staff("the user search")
        search = user_service.SearchUsersRequest(
            query=request.query, page_size=request.page_size, page_token=request.page_token
        )
        if request.status:
            search.statuses.append(_WANTED_STATUS[request.status])
        found = await self.aggregation.run(
            [
                Section(
                    admin.SECTION_USERS,
                    ("user",),
                    lambda deadline_s: self.reads.search(deadline_s, search),
                    required=True,
                )
            ]
        )
        users: user_service.SearchUsersResponse = found.get(admin.SECTION_USERS)
        user_ids = [user.user_id for user in users.users]
        compliance = await self.aggregation.run(
            [
                Section(
                    admin.SECTION_COMPLIANCE,
                    ("kyc",),
                    lambda deadline_s: self.reads.kyc_profiles(deadline_s, user_ids),
                    required=bool(request.kyc_level),
                )
            ]
        )
        profiles: dict[str, kyc_resources.KycProfile] | None = compliance.get(admin.SECTION_COMPLIANCE)
        response = admin.SearchUsersResponse(next_page_token=users.next_page_token)
        for user in users.users:
            profile = profiles.get(user.user_id) if profiles is not None else None
            if request.kyc_level and (profile is None or profile.level != request.kyc_level):
                continue
            response.users.append(user_row(user, profile))
        response.sections.extend(found.statuses(admin.SectionStatus))
        response.sections.extend(compliance.statuses(admin.SectionStatus))
        return response

    async def GetConsoleHome(
        self, request: admin.GetConsoleHomeRequest, context: Any
    ) -> admin.GetConsoleHomeResponse:
        """The sizes of the work queues, largest first, and the platform's condition."""
        caller = require_staff("the console home")
        query = approvals.Query(
            kinds=approvals.ALL_KINDS, actionable_only=False, subject_user_id="", descending=False
        )
        (items, queue_outcomes), (health, health_outcomes) = await asyncio.gather(
            self.pending_items(caller, query), self.system_health()
        )
        response = admin.GetConsoleHomeResponse(
            queues=queue_counts(items),
            health=health.state,
            health_reasons=health.reasons,
            product_profile=self.health.profile,
            my_roles=sorted(_ROLES[role] for role in caller.roles if role in _ROLES),
        )
        response.sections.extend(queue_outcomes.statuses(admin.SectionStatus))
        response.sections.extend(health_outcomes.statuses(admin.SectionStatus))
        return response

    async def ListPendingApprovals(
        self, request: admin.ListPendingApprovalsRequest, context: Any
    ) -> admin.ListPendingApprovalsResponse:
        """The items waiting for a checker or approver, in waiting order, marked actionable where
        the caller may decide them; sources that could not be read are listed in `sections`."""
        caller = require_staff("the approval queue")
        query = approvals.query_of(request)
        cursors = approvals.decode_token(request.page_token, query)
        items, outcomes = await self.pending_items(caller, query)
        shown, token = approvals.page(items, query, cursors, request.page_size)
        response = admin.ListPendingApprovalsResponse(
            items=[pending.item for pending in shown], next_page_token=token
        )
        response.sections.extend(
            status
            for status in outcomes.statuses(admin.SectionStatus)
            if status.state != admin.SECTION_STATE_OK
        )
        return response

    async def pending_items(self, caller: EndUser, query: Query) -> tuple[list[Pending], Results]:
        """Every wanted item of the queue, read from each source in parallel (one section per
        source, so that one failing source leaves only its own items out)."""
        subject = query.subject_user_id
        kyc_submissions = bool(
            query.kinds & {admin.APPROVAL_KIND_KYC_SUBMISSION, admin.APPROVAL_KIND_KYC_REVIEW}
        )
        kyc_cases = admin.APPROVAL_KIND_SANCTIONS_CASE in query.kinds

        async def withdrawals(deadline_s: float) -> list[Pending]:
            found = await self.reads.pending_withdrawals(deadline_s, subject)
            return [approvals.withdrawal_item(withdrawal, caller) for withdrawal in found]

        async def kyc(deadline_s: float) -> list[Pending]:
            submissions, screenings = await asyncio.gather(
                self.reads.pending_submissions(deadline_s, subject) if kyc_submissions else _nothing(),
                self.reads.open_screenings(deadline_s, subject) if kyc_cases else _nothing(),
            )
            return [approvals.submission_item(found, caller) for found in submissions] + [
                approvals.screening_item(found, caller) for found in screenings
            ]

        async def role_assignments(deadline_s: float) -> list[Pending]:
            found = await self.reads.pending_role_assignments(deadline_s, subject)
            return [approvals.role_assignment_item(assignment, caller) for assignment in found]

        reads = {approvals.WITHDRAW: withdrawals, approvals.KYC: kyc, approvals.AUTH: role_assignments}
        runs = await asyncio.gather(
            *(
                self.aggregation.run([Section(admin.SECTION_APPROVALS, (source,), reads[source])])
                for source in query.sources()
            )
        )
        merged = Results()
        items: list[Pending] = []
        for results in runs:
            merged.outcomes.extend(results.outcomes)
            items.extend(results.get(admin.SECTION_APPROVALS) or [])
        if unserved := query.unserved():
            merged.add(
                SectionOutcome(
                    admin.SECTION_APPROVALS,
                    SectionState.DISABLED,
                    f"not aggregated by this version of admin-bff: {', '.join(unserved)}",
                )
            )
        return approvals.wanted(items, query), merged

    async def GetSystemHealth(
        self, request: admin.GetSystemHealthRequest, context: Any
    ) -> admin.GetSystemHealthResponse:
        """Every service of the catalog and every chain, with the overall condition."""
        require_staff("the system health")
        summary, results = await self.system_health()
        response = admin.GetSystemHealthResponse(overall=summary.state, product_profile=self.health.profile)
        for check in results.get(admin.SECTION_SERVICES) or []:
            response.services.append(check.health)
        for chain in results.get(admin.SECTION_CHAINS) or []:
            response.chains.append(chain.health)
        for section, why in UNREAD_HEALTH:
            results.add(SectionOutcome(section, SectionState.DISABLED, why))
        response.sections.extend(results.statuses(admin.SectionStatus))
        return response

    async def system_health(self) -> tuple[Summary, Results]:
        """The services' health checks and the chains' status, read in parallel, summed up."""
        results = await self.aggregation.run(
            [
                Section(admin.SECTION_SERVICES, (), self.health.services),
                Section(admin.SECTION_CHAINS, ("chain-gateway",), self.health.chains),
            ]
        )
        services: list[ServiceCheck] | None = results.get(admin.SECTION_SERVICES)
        chains: list[ChainCheck] | None = results.get(admin.SECTION_CHAINS)
        chains_disabled = any(
            outcome.section == admin.SECTION_CHAINS and outcome.state is SectionState.DISABLED
            for outcome in results.outcomes
        )
        return health.summary(services, [] if chains_disabled else chains), results


async def _nothing() -> list[Any]:
    return []
