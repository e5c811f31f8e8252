"""The mobile BFF's servicer: compact, screen-shaped answers whose sections are read in parallel
from the services that own them (svc.kit.aggregate), each under the 1.5 s downstream cap.

Implemented: GetHome, GetAssetDetail, ListActivity (the balance movements of every account, from
the account service), GetBootstrap (public: the app releases, supported assets and notices of the
settings, the features of the deployed product profile).
"""

from __future__ import annotations

import time
from typing import Any

from finmesh.account.v1 import account_resources_pb2 as account_resources
from finmesh.common.v1 import money_pb2
from finmesh.mobile_bff.v1 import mobile_bff_service_pb2 as mobile
from finmesh.mobile_bff.v1 import mobile_bff_service_pb2_grpc as mobile_grpc
from finmesh.user.v1 import user_service_pb2 as user_service
from google.protobuf import timestamp_pb2

from svc.bff import views
from svc.bff.activity import ActivityList, Query, fingerprint
from svc.bff.reads import CallerReads
from svc.kit import errors
from svc.kit.aggregate import Aggregation, Results, Section, SectionOutcome, SectionState
from svc.kit.principals import require_end_user
from svc.mobile_bff.config import MobileBffSettings, version_key
from svc.mobile_bff.reads import DepositReads

HOME_ACTIVITY = 5
ASSET_ACTIVITY = 10
NO_PRICE_FEED = "no price feed in this deployment: balances are shown without valuations"
NOT_AGGREGATED = "product positions are not aggregated by this version of mobile-bff"
# Each feature of the contract and the service that brings it.
_FEATURES = (
    (mobile.FEATURE_WALLET, "wallet"),
    (mobile.FEATURE_KYC, "kyc"),
    (mobile.FEATURE_LENDING, "lending"),
    (mobile.FEATURE_STAKING, "staking"),
    (mobile.FEATURE_RWA, "rwa"),
    (mobile.FEATURE_NOTIFICATIONS, "notification"),
)
_SEVERITY = {
    "info": mobile.NOTICE_SEVERITY_INFO,
    "warning": mobile.NOTICE_SEVERITY_WARNING,
    "critical": mobile.NOTICE_SEVERITY_CRITICAL,
}


def _asset(asset: str, decimals: int) -> money_pb2.Asset:
    chain, _, symbol = asset.partition(":")
    return money_pb2.Asset(id=asset, symbol=symbol, chain=chain, decimals=decimals)


def _stamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(round(seconds * 1_000_000))
    return stamp


KYC_TEXT = {
    views.KycProgress.NONE: "Verify your identity to raise your limits",
    views.KycProgress.DRAFT: "Finish your verification",
    views.KycProgress.IN_REVIEW: "Your verification is being reviewed",
    views.KycProgress.ACTION_REQUIRED: "Your verification needs more information",
    views.KycProgress.REJECTED: "Your verification was not accepted: apply again",
}
_KIND = {
    views.Movement.DEPOSIT: mobile.ACTIVITY_KIND_DEPOSIT,
    views.Movement.WITHDRAWAL: mobile.ACTIVITY_KIND_WITHDRAWAL,
    views.Movement.TRANSFER_IN: mobile.ACTIVITY_KIND_TRANSFER,
    views.Movement.TRANSFER_OUT: mobile.ACTIVITY_KIND_TRANSFER,
    views.Movement.INTEREST: mobile.ACTIVITY_KIND_LENDING,
    views.Movement.FEE: mobile.ACTIVITY_KIND_OTHER,
    views.Movement.ADJUSTMENT: mobile.ACTIVITY_KIND_OTHER,
}
_STATUS = {
    account_resources.ACTIVITY_STATUS_PENDING: mobile.ACTIVITY_STATUS_PENDING,
    account_resources.ACTIVITY_STATUS_COMPLETED: mobile.ACTIVITY_STATUS_COMPLETED,
    account_resources.ACTIVITY_STATUS_CANCELLED: mobile.ACTIVITY_STATUS_FAILED,
}


def balance_item(balance: views.AssetBalance) -> mobile.BalanceItem:
    return mobile.BalanceItem(
        asset_id=balance.asset,
        symbol=balance.symbol,
        chain=balance.chain,
        decimals=balance.decimals,
        total=str(balance.total),
        available=str(balance.available),
    )


def activity_row(
    account: account_resources.Account, activity: account_resources.AccountActivity
) -> mobile.ActivityRow:
    row = mobile.ActivityRow(
        activity_id=views.activity_id(activity),
        kind=_KIND[views.movement(activity)],
        status=_STATUS.get(activity.status, mobile.ACTIVITY_STATUS_UNSPECIFIED),
        title=activity.description or activity.category,
        amount=money_pb2.SignedMoney(asset=account.asset, amount=views.signed_amount(activity)),
    )
    row.occur_time.CopyFrom(activity.create_time)
    return row


def kyc_banner(status: Any) -> mobile.KycBanner:
    progress = views.kyc_progress(status)
    return mobile.KycBanner(
        level=status.level,
        in_review=progress is views.KycProgress.IN_REVIEW,
        action_required=progress
        in {views.KycProgress.DRAFT, views.KycProgress.ACTION_REQUIRED, views.KycProgress.REJECTED},
        text=KYC_TEXT[progress],
    )


def alerts(profile: user_service.User, banner: mobile.KycBanner | None) -> list[mobile.Alert]:
    """Alerts from the profile and the KYC state, most severe first."""
    found = []
    if profile.status == user_service.USER_STATUS_FROZEN:
        found.append(
            mobile.Alert(
                kind=mobile.ALERT_KIND_ACCOUNT_FROZEN,
                severity=mobile.NOTICE_SEVERITY_CRITICAL,
                text="Your account is frozen: contact support",
            )
        )
    if banner is not None and banner.action_required:
        found.append(
            mobile.Alert(
                kind=mobile.ALERT_KIND_KYC_ACTION_REQUIRED,
                severity=mobile.NOTICE_SEVERITY_WARNING,
                text=banner.text,
            )
        )
    return found


class MobileBffServicer(mobile_grpc.MobileBffServiceServicer):
    """Screens of the mobile apps, each aggregated from the services that own its parts."""

    def __init__(
        self,
        reads: CallerReads,
        activity: ActivityList,
        deposits: DepositReads,
        aggregation: Aggregation,
        settings: MobileBffSettings,
    ) -> None:
        self.reads = reads
        self.activity = activity
        self.deposits = deposits
        self.aggregation = aggregation
        self.settings = settings

    def _valuations(self, results: Results) -> None:
        results.add(SectionOutcome(mobile.SECTION_VALUATIONS, SectionState.DISABLED, NO_PRICE_FEED))

    async def GetHome(self, request: mobile.GetHomeRequest, context: Any) -> mobile.GetHomeResponse:
        """Greeting, balances, KYC banner, alerts, unread count and the latest activity."""
        require_end_user()
        results = await self.aggregation.run(
            [
                Section(mobile.SECTION_PROFILE, ("user",), self.reads.profile, required=True),
                Section(mobile.SECTION_KYC, ("kyc",), self.reads.kyc_status),
                Section(mobile.SECTION_BALANCES, ("account",), self.reads.accounts),
                Section(
                    mobile.SECTION_ACTIVITY,
                    ("account",),
                    lambda deadline_s: self.reads.activity(deadline_s, HOME_ACTIVITY),
                ),
                Section(mobile.SECTION_NOTIFICATIONS, ("notification",), self.reads.inbox),
            ]
        )
        self._valuations(results)
        results.add(SectionOutcome(mobile.SECTION_POSITIONS, SectionState.DISABLED, NOT_AGGREGATED))
        profile: user_service.User = results.get(mobile.SECTION_PROFILE)
        response = mobile.GetHomeResponse(display_name=profile.profile.display_name)
        banner = None
        if (status := results.get(mobile.SECTION_KYC)) is not None:
            banner = kyc_banner(status)
            response.kyc.CopyFrom(banner)
        response.alerts.extend(alerts(profile, banner))
        if (accounts := results.get(mobile.SECTION_BALANCES)) is not None:
            response.balances.extend(balance_item(balance) for balance in views.balances(accounts))
        if (activity := results.get(mobile.SECTION_ACTIVITY)) is not None:
            response.recent_activity.extend(activity_row(account, item) for account, item in activity)
        if (inbox := results.get(mobile.SECTION_NOTIFICATIONS)) is not None:
            response.unread_notification_count = inbox.unread
        response.sections.extend(results.statuses(mobile.SectionStatus))
        return response

    async def GetAssetDetail(
        self, request: mobile.GetAssetDetailRequest, context: Any
    ) -> mobile.GetAssetDetailResponse:
        """One asset: balance, deposit address and rules, and its recent activity."""
        require_end_user()
        asset = request.asset_id
        chain = asset.partition(":")[0]
        results = await self.aggregation.run(
            [
                Section(
                    mobile.SECTION_BALANCES,
                    ("account",),
                    lambda deadline_s: self.reads.accounts(deadline_s, asset=asset),
                ),
                Section(
                    mobile.SECTION_ACTIVITY,
                    ("account",),
                    lambda deadline_s: self.reads.activity(deadline_s, ASSET_ACTIVITY, asset=asset),
                ),
                Section(
                    mobile.SECTION_DEPOSIT_ADDRESS,
                    ("wallet", "deposit"),
                    lambda deadline_s: self.deposits.deposit_info(deadline_s, chain, asset),
                ),
            ]
        )
        self._valuations(results)
        response = mobile.GetAssetDetailResponse()
        if (accounts := results.get(mobile.SECTION_BALANCES)) is not None:
            for balance in views.balances(accounts, include_zero=True):
                response.asset.CopyFrom(
                    money_pb2.Asset(
                        id=balance.asset,
                        symbol=balance.symbol,
                        chain=balance.chain,
                        decimals=balance.decimals,
                    )
                )
                response.balance.CopyFrom(balance_item(balance))
                response.held = str(balance.held)
                response.pending = str(balance.pending)
        if (activity := results.get(mobile.SECTION_ACTIVITY)) is not None:
            response.recent_activity.extend(activity_row(account, item) for account, item in activity)
        if (deposit := results.get(mobile.SECTION_DEPOSIT_ADDRESS)) is not None:  # OK and known
            response.deposit.CopyFrom(deposit)
        response.sections.extend(results.statuses(mobile.SectionStatus))
        return response

    async def GetBootstrap(
        self, request: mobile.GetBootstrapRequest, context: Any
    ) -> mobile.GetBootstrapResponse:
        """Start-up configuration from the settings and the product profile; no caller needed."""
        settings = self.settings
        platform = mobile.Platform.Name(request.platform).removeprefix("PLATFORM_").lower()
        release = settings.app_releases.get(platform)
        if release is None:
            raise errors.InvalidArgument(
                [errors.FieldViolation("platform", f"no app is released for {platform}")]
            )
        response = mobile.GetBootstrapResponse(
            minimum_app_version=release.minimum_version,
            latest_app_version=release.latest_version,
            update_required=version_key(request.app_version) < version_key(release.minimum_version),
            enabled_features=[
                feature
                for feature, service in _FEATURES
                if self.aggregation.undeployed(mobile.SECTION_UNSPECIFIED, (service,)) is None
            ],
            supported_assets=[
                _asset(asset, decimals) for asset, decimals in sorted(settings.supported_assets.items())
            ],
            terms_version=settings.terms_version,
            support_contact=settings.support_contact,
        )
        if settings.valuation_asset:
            response.valuation_asset.CopyFrom(
                _asset(settings.valuation_asset, settings.supported_assets[settings.valuation_asset])
            )
        now = time.time()
        for notice in settings.notices:
            if notice.end_time is not None and notice.end_time.timestamp() <= now:
                continue
            shown = mobile.Notice(
                severity=_SEVERITY[notice.severity],
                title=notice.title,
                text=notice.text,
                start_time=_stamp(notice.start_time.timestamp()),
            )
            if notice.end_time is not None:
                shown.end_time.CopyFrom(_stamp(notice.end_time.timestamp()))
            response.notices.append(shown)
        return response

    async def ListActivity(
        self, request: mobile.ListActivityRequest, context: Any
    ) -> mobile.ListActivityResponse:
        """The caller's balance movements over every account, newest first, compact, paged."""
        require_end_user()
        wanted = request.kind
        query = Query(asset=request.asset_id, fingerprint=fingerprint(wanted, request.asset_id))

        def accept(account: account_resources.Account, activity: account_resources.AccountActivity) -> bool:
            return not wanted or _KIND[views.movement(activity)] == wanted

        section = self.activity.section(
            mobile.SECTION_ACTIVITY, query, accept, request.page_size, request.page_token
        )
        results = await self.aggregation.run([section])
        response = mobile.ListActivityResponse()
        if (found := results.get(mobile.SECTION_ACTIVITY)) is not None:
            pairs, response.next_page_token = found
            response.rows.extend(activity_row(account, item) for account, item in pairs)
        response.sections.extend(results.statuses(mobile.SectionStatus))
        return response
