"""The web BFF's servicer: one call per page, its sections read in parallel from the services that
own them (svc.kit.aggregate), turned into the contract's views here.

Implemented: GetDashboard, GetSecurityOverview, ListActivity (the balance movements of every
account, from the account service), GetWithdrawalContext (account, withdraw, kyc and auth),
GetPortfolio (balances per asset from the account service; lending, staking and rwa positions are
not read yet, and there is no price feed for valuations).
"""

from __future__ import annotations

import time
from typing import Any

from finmesh.account.v1 import account_resources_pb2 as account_resources
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.common.v1 import enums_pb2, money_pb2
from finmesh.user.v1 import user_service_pb2 as user_service
from finmesh.web_bff.v1 import web_bff_service_pb2 as web
from finmesh.web_bff.v1 import web_bff_service_pb2_grpc as web_grpc
from finmesh.withdraw.v1 import withdraw_resources_pb2 as withdraw_resources

from svc.bff import views
from svc.bff.activity import ActivityList, Query, fingerprint
from svc.bff.reads import CallerReads, Inbox, Security, WithdrawalTerms
from svc.kit import errors
from svc.kit.aggregate import Aggregation, Results, Section, SectionOutcome, SectionState
from svc.kit.principals import require_end_user

DEFAULT_RECENT = 5
NO_PRICE_FEED = "no price feed in this deployment: balances are shown without valuations"
NOT_AGGREGATED = "positions of {service} are not aggregated by this version of web-bff"
POSITION_SECTIONS = (
    (web.SECTION_LENDING, "lending"),
    (web.SECTION_STAKING, "staking"),
    (web.SECTION_RWA, "rwa"),
)

_STATUS = {
    user_service.USER_STATUS_ACTIVE: web.ACCOUNT_STATUS_ACTIVE,
    user_service.USER_STATUS_FROZEN: web.ACCOUNT_STATUS_FROZEN,
    user_service.USER_STATUS_CLOSED: web.ACCOUNT_STATUS_CLOSED,
}
_PROGRESS = {
    views.KycProgress.NONE: web.VERIFICATION_PROGRESS_NONE,
    views.KycProgress.DRAFT: web.VERIFICATION_PROGRESS_DRAFT,
    views.KycProgress.IN_REVIEW: web.VERIFICATION_PROGRESS_IN_REVIEW,
    views.KycProgress.ACTION_REQUIRED: web.VERIFICATION_PROGRESS_ACTION_REQUIRED,
    views.KycProgress.REJECTED: web.VERIFICATION_PROGRESS_REJECTED,
}
_KIND = {
    views.Movement.DEPOSIT: web.ACTIVITY_KIND_DEPOSIT,
    views.Movement.WITHDRAWAL: web.ACTIVITY_KIND_WITHDRAWAL,
    views.Movement.TRANSFER_IN: web.ACTIVITY_KIND_TRANSFER_IN,
    views.Movement.TRANSFER_OUT: web.ACTIVITY_KIND_TRANSFER_OUT,
    views.Movement.INTEREST: web.ACTIVITY_KIND_INTEREST,
    views.Movement.FEE: web.ACTIVITY_KIND_FEE,
    views.Movement.ADJUSTMENT: web.ACTIVITY_KIND_ADJUSTMENT,
}
_ACTIVITY_STATUS = {
    account_resources.ACTIVITY_STATUS_PENDING: web.ACTIVITY_STATUS_PENDING,
    account_resources.ACTIVITY_STATUS_COMPLETED: web.ACTIVITY_STATUS_COMPLETED,
    account_resources.ACTIVITY_STATUS_CANCELLED: web.ACTIVITY_STATUS_CANCELLED,
}


def profile_view(user: user_service.User) -> web.ProfileView:
    return web.ProfileView(
        user_id=user.user_id,
        display_name=user.profile.display_name,
        email=user.email,
        email_verified=user.email_verified,
        phone=user.phone,
        phone_verified=user.phone_verified,
        language=user.profile.language,
        time_zone=user.profile.time_zone,
        status=_STATUS.get(user.status, web.ACCOUNT_STATUS_UNSPECIFIED),
    )


def kyc_view(status: Any) -> web.KycView:
    view = web.KycView(
        level=status.level,
        next_level=status.next_level,
        progress=_PROGRESS[views.kyc_progress(status)],
        submission_id=status.open_submission_id,
    )
    if status.HasField("reverification_due_time"):
        view.reverification_due_time.CopyFrom(status.reverification_due_time)
    return view


def balance_view(balance: views.AssetBalance) -> web.BalanceView:
    return web.BalanceView(
        asset=money_pb2.Asset(
            id=balance.asset, symbol=balance.symbol, chain=balance.chain, decimals=balance.decimals
        ),
        available=str(balance.available),
        held=str(balance.held),
        pending=str(balance.pending),
        total=str(balance.total),
    )


def activity_item(
    account: account_resources.Account, activity: account_resources.AccountActivity
) -> web.ActivityItem:
    status = _ACTIVITY_STATUS.get(activity.status, web.ACTIVITY_STATUS_UNSPECIFIED)
    item = web.ActivityItem(
        activity_id=views.activity_id(activity),
        kind=_KIND[views.movement(activity)],
        status=status,
        source_status=account_resources.ActivityStatus.Name(activity.status).removeprefix("ACTIVITY_STATUS_"),
        amount=money_pb2.SignedMoney(asset=account.asset, amount=views.signed_amount(activity)),
        title=activity.description or activity.category,
        chain=account.asset.partition(":")[0] if activity.tx_hash else "",
        tx_hash=activity.tx_hash,
    )
    item.occur_time.CopyFrom(activity.create_time)
    if status == web.ACTIVITY_STATUS_COMPLETED:
        item.complete_time.CopyFrom(activity.update_time)
    return item


def security_summary(security: Security) -> web.SecuritySummary:
    summary = web.SecuritySummary(
        two_factor_enabled=security.two_factor.totp_enabled,
        recovery_codes_remaining=security.two_factor.recovery_codes_remaining,
        active_session_count=sum(
            1 for session in security.sessions if session.state == auth_resources.SESSION_STATE_ACTIVE
        ),
        active_api_key_count=len(security.api_keys),
    )
    previous = security.previous_login()
    if previous is not None:
        summary.previous_login_time.CopyFrom(previous.attempt_time)
        summary.previous_login_ip = previous.ip
    return summary


def whitelisted_view(entry: withdraw_resources.WithdrawalAddress, now_us: int) -> web.WhitelistedAddressView:
    usable = entry.state == withdraw_resources.WITHDRAWAL_ADDRESS_STATE_ACTIVE or (
        entry.state == withdraw_resources.WITHDRAWAL_ADDRESS_STATE_COOLING_DOWN
        and entry.usable_time.ToMicroseconds() <= now_us
    )
    view = web.WhitelistedAddressView(
        address_id=entry.address_id, label=entry.label, address=entry.address, usable=usable
    )
    if not usable:
        view.usable_time.CopyFrom(entry.usable_time)
    return view


def withdrawal_terms(
    response: web.GetWithdrawalContextResponse, terms: WithdrawalTerms, asset: str, next_level: int
) -> None:
    """Fee, minimum and KYC allowance of the asset, and the usable whitelist of its chain."""
    symbol, chain = asset.partition(":")[2], asset.partition(":")[0]
    limit = terms.limit(asset)
    if limit is None:
        response.allowance.CopyFrom(
            web.WithdrawalAllowance(allowed=False, denial_message=f"{symbol} on {chain} cannot be withdrawn")
        )
        return
    response.fee.CopyFrom(money_pb2.Money(asset=asset, amount=limit.fee))
    response.minimum_amount.CopyFrom(money_pb2.Money(asset=asset, amount=limit.min_amount))
    allowance = web.WithdrawalAllowance(allowed=limit.allowed)
    if limit.allowed:
        allowance.per_transaction_max.CopyFrom(money_pb2.Money(asset=asset, amount=limit.max_amount))
        allowance.daily_remaining.CopyFrom(money_pb2.Money(asset=asset, amount=limit.remaining_amount))
    elif next_level:
        level = enums_pb2.KycLevel.Name(next_level).removeprefix("KYC_LEVEL_")  # type: ignore[arg-type]
        allowance.denial_message = f"Verify your identity ({level}) to withdraw {symbol}"
    else:
        allowance.denial_message = f"Your verification level does not allow withdrawals of {symbol}"
    response.allowance.CopyFrom(allowance)
    now_us = time.time_ns() // 1000
    response.addresses.extend(
        whitelisted_view(entry, now_us)
        for entry in terms.addresses
        if entry.state != withdraw_resources.WITHDRAWAL_ADDRESS_STATE_REMOVED
    )


def notification_previews(inbox: Inbox) -> list[web.NotificationPreview]:
    previews = []
    for message in inbox.latest:
        preview = web.NotificationPreview(
            inbox_message_id=message.inbox_message_id, title=message.title, action_link=message.action_link
        )
        preview.create_time.CopyFrom(message.create_time)
        previews.append(preview)
    return previews


class WebBffServicer(web_grpc.WebBffServiceServicer):
    """Pages of the web front end, each aggregated from the services that own its parts."""

    def __init__(self, reads: CallerReads, activity: ActivityList, aggregation: Aggregation) -> None:
        self.reads = reads
        self.activity = activity
        self.aggregation = aggregation

    def _positions(self, results: Results) -> None:
        # Not read by this BFF yet: DISABLED by the profile, or named as not aggregated.
        for section, service in POSITION_SECTIONS:
            outcome = self.aggregation.undeployed(section, (service,))
            message = NOT_AGGREGATED.format(service=service)
            results.add(outcome or SectionOutcome(section, SectionState.DISABLED, message))

    async def GetDashboard(self, request: web.GetDashboardRequest, context: Any) -> web.GetDashboardResponse:
        """Profile, KYC, balances, recent activity, unread notifications and security at once."""
        require_end_user()
        recent = request.recent_activity_count or DEFAULT_RECENT

        results = await self.aggregation.run(
            [
                Section(web.SECTION_PROFILE, ("user",), self.reads.profile, required=True),
                Section(web.SECTION_KYC, ("kyc",), self.reads.kyc_status),
                Section(web.SECTION_BALANCES, ("account",), self.reads.accounts),
                Section(
                    web.SECTION_ACTIVITY,
                    ("account",),
                    lambda deadline_s: self.reads.activity(deadline_s, recent),
                ),
                Section(web.SECTION_NOTIFICATIONS, ("notification",), self.reads.inbox),
                Section(web.SECTION_SECURITY, ("auth",), self.reads.security),
            ]
        )
        self._positions(results)
        results.add(SectionOutcome(web.SECTION_VALUATIONS, SectionState.DISABLED, NO_PRICE_FEED))
        response = web.GetDashboardResponse(profile=profile_view(results.get(web.SECTION_PROFILE)))
        if (status := results.get(web.SECTION_KYC)) is not None:
            response.kyc.CopyFrom(kyc_view(status))
        if (accounts := results.get(web.SECTION_BALANCES)) is not None:
            response.balances.extend(balance_view(balance) for balance in views.balances(accounts))
        if (activity := results.get(web.SECTION_ACTIVITY)) is not None:
            response.recent_activity.extend(activity_item(account, item) for account, item in activity)
        if (inbox := results.get(web.SECTION_NOTIFICATIONS)) is not None:
            response.unread_notification_count = inbox.unread
            response.latest_notifications.extend(notification_previews(inbox))
        if (security := results.get(web.SECTION_SECURITY)) is not None:
            response.security.CopyFrom(security_summary(security))
        response.sections.extend(results.statuses(web.SectionStatus))
        return response

    async def GetSecurityOverview(
        self, request: web.GetSecurityOverviewRequest, context: Any
    ) -> web.GetSecurityOverviewResponse:
        """2FA, sessions, API keys and recent logins, from the auth service."""
        require_end_user()
        results = await self.aggregation.run([Section(web.SECTION_SECURITY, ("auth",), self.reads.security)])
        response = web.GetSecurityOverviewResponse()
        security: Security | None = results.get(web.SECTION_SECURITY)
        if security is not None:
            response.summary.CopyFrom(security_summary(security))
            for session in security.sessions:
                if session.state != auth_resources.SESSION_STATE_ACTIVE:
                    continue
                view = web.SessionView(
                    session_id=session.session_id,
                    device_name=session.device.device_name,
                    platform=auth_resources.DevicePlatform.Name(session.device.platform).removeprefix(
                        "DEVICE_PLATFORM_"
                    ),
                    approximate_location=session.approximate_location,
                    last_ip=session.last_ip,
                    current=session.current,
                )
                view.create_time.CopyFrom(session.create_time)
                view.last_active_time.CopyFrom(
                    session.last_refresh_time
                    if session.HasField("last_refresh_time")
                    else session.create_time
                )
                response.sessions.append(view)
            for key in security.api_keys:
                key_view = web.ApiKeyView(
                    api_key_id=key.api_key_id,
                    display_name=key.display_name,
                    scopes=list(key.scopes),
                    allowed_ip_ranges=list(key.allowed_ip_ranges),
                )
                if key.HasField("expire_time"):
                    key_view.expire_time.CopyFrom(key.expire_time)
                if key.HasField("last_used_time"):
                    key_view.last_used_time.CopyFrom(key.last_used_time)
                response.api_keys.append(key_view)
            for login in security.logins:
                view_login = web.LoginView(
                    succeeded=login.outcome == auth_resources.LOGIN_OUTCOME_SUCCEEDED,
                    outcome=auth_resources.LoginOutcome.Name(login.outcome).removeprefix("LOGIN_OUTCOME_"),
                    ip=login.ip,
                    approximate_location=login.approximate_location,
                    device=login.device.device_name,
                )
                view_login.attempt_time.CopyFrom(login.attempt_time)
                response.recent_logins.append(view_login)
        response.sections.extend(results.statuses(web.SectionStatus))
        return response

    async def ListActivity(self, request: web.ListActivityRequest, context: Any) -> web.ListActivityResponse:
        """The caller's balance movements over every account, newest first, filtered and paged."""
        require_end_user()
        start_us = request.occur_time_from.ToMicroseconds() if request.HasField("occur_time_from") else 0
        end_us = request.occur_time_to.ToMicroseconds() if request.HasField("occur_time_to") else 0
        if start_us and end_us and start_us >= end_us:
            raise errors.InvalidArgument(
                [errors.FieldViolation("occur_time_to", "must be after occur_time_from")]
            )
        kinds, statuses = set(request.kinds), set(request.statuses)
        query = Query(
            asset=request.asset,
            start_us=start_us,
            end_us=end_us,
            fingerprint=fingerprint(sorted(kinds), request.asset, sorted(statuses), start_us, end_us),
        )

        def accept(account: account_resources.Account, activity: account_resources.AccountActivity) -> bool:
            kind = _KIND[views.movement(activity)]
            status = _ACTIVITY_STATUS.get(activity.status, web.ACTIVITY_STATUS_UNSPECIFIED)
            return (not kinds or kind in kinds) and (not statuses or status in statuses)

        section = self.activity.section(
            web.SECTION_ACTIVITY, query, accept, request.page_size, request.page_token
        )
        results = await self.aggregation.run([section])
        response = web.ListActivityResponse()
        if (found := results.get(web.SECTION_ACTIVITY)) is not None:
            pairs, response.next_page_token = found
            response.items.extend(activity_item(account, item) for account, item in pairs)
        response.sections.extend(results.statuses(web.SectionStatus))
        return response

    async def GetPortfolio(self, request: web.GetPortfolioRequest, context: Any) -> web.GetPortfolioResponse:
        """Every balance of the caller per asset, summed over their accounts of that asset."""
        require_end_user()
        results = await self.aggregation.run(
            [Section(web.SECTION_BALANCES, ("account",), self.reads.accounts)]
        )
        self._positions(results)
        results.add(SectionOutcome(web.SECTION_VALUATIONS, SectionState.DISABLED, NO_PRICE_FEED))
        response = web.GetPortfolioResponse()
        if (accounts := results.get(web.SECTION_BALANCES)) is not None:
            response.balances.extend(
                balance_view(balance)
                for balance in views.balances(accounts, include_zero=request.include_zero_balances)
            )
        response.sections.extend(results.statuses(web.SectionStatus))
        return response

    async def GetWithdrawalContext(
        self, request: web.GetWithdrawalContextRequest, context: Any
    ) -> web.GetWithdrawalContextResponse:
        """Balance, fee, minimum, KYC allowance and whitelist of one asset, and the 2FA the
        withdrawal will ask for."""
        require_end_user()
        asset = request.asset
        chain, _, symbol = asset.partition(":")
        results = await self.aggregation.run(
            [
                Section(
                    web.SECTION_BALANCES,
                    ("account",),
                    lambda deadline_s: self.reads.accounts(deadline_s, asset=asset),
                ),
                Section(
                    web.SECTION_WITHDRAWALS,
                    ("withdraw",),
                    lambda deadline_s: self.reads.withdrawal_terms(deadline_s, chain),
                ),
                Section(web.SECTION_KYC, ("kyc",), self.reads.kyc_status),
                Section(web.SECTION_SECURITY, ("auth",), self.reads.two_factor),
            ]
        )
        response = web.GetWithdrawalContextResponse(
            asset=money_pb2.Asset(id=asset, symbol=symbol, chain=chain)
        )
        if (accounts := results.get(web.SECTION_BALANCES)) is not None:
            found = views.balances(accounts, include_zero=True) or [views.AssetBalance(asset, 0)]
            response.asset.decimals = found[0].decimals
            response.balance.CopyFrom(balance_view(found[0]))
        status = results.get(web.SECTION_KYC)
        if (terms := results.get(web.SECTION_WITHDRAWALS)) is not None:
            withdrawal_terms(response, terms, asset, status.next_level if status is not None else 0)
        if (two_factor := results.get(web.SECTION_SECURITY)) is not None:
            response.step_up_required = two_factor.totp_enabled
            response.two_factor_setup_required = not two_factor.totp_enabled
        response.sections.extend(results.statuses(web.SectionStatus))
        return response
