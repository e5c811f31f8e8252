"""Downstream reads the end-user BFFs (web, mobile) share: each reads one part of the caller's
picture from the service that owns it, acting for the caller (the kit forwards the caller's
token). Each takes the downstream deadline `deadline_s` the aggregation hands to its sections."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from finmesh.account.v1 import account_resources_pb2 as account_resources
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.account.v1 import account_service_pb2_grpc as account_grpc
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.auth.v1 import auth_service_pb2 as auth_service
from finmesh.auth.v1 import auth_service_pb2_grpc as auth_grpc
from finmesh.kyc.v1 import kyc_resources_pb2 as kyc_resources
from finmesh.kyc.v1 import kyc_service_pb2 as kyc_service
from finmesh.kyc.v1 import kyc_service_pb2_grpc as kyc_grpc
from finmesh.notification.v1 import notification_resources_pb2 as notification_resources
from finmesh.notification.v1 import notification_service_pb2 as notification_service
from finmesh.notification.v1 import notification_service_pb2_grpc as notification_grpc
from finmesh.user.v1 import user_service_pb2 as user_service
from finmesh.user.v1 import user_service_pb2_grpc as user_grpc
from finmesh.withdraw.v1 import withdraw_resources_pb2 as withdraw_resources
from finmesh.withdraw.v1 import withdraw_service_pb2 as withdraw_service
from finmesh.withdraw.v1 import withdraw_service_pb2_grpc as withdraw_grpc

ME = "me"
# Sessions, keys and logins counted on the security card: one page is enough for a count shown
# as "50+" beyond it.
COUNT_PAGE = 1000
LOGIN_PAGE = 20
# A user lists at most 200 whitelist addresses (withdraw contract): one page holds them all.
WHITELIST_PAGE = 200
LATEST_UNREAD = 3
SUCCEEDED = auth_resources.LOGIN_OUTCOME_SUCCEEDED
ACTIVE_KEY = auth_resources.API_KEY_STATE_ACTIVE


@dataclass
class Security:
    """The caller's security state from the auth service."""

    two_factor: auth_resources.TwoFactorStatus
    sessions: list[auth_resources.Session]
    api_keys: list[auth_resources.ApiKey]
    logins: list[auth_resources.LoginAttempt]

    def previous_login(self) -> auth_resources.LoginAttempt | None:
        """The successful login before the one of the current session."""
        current = {session.session_id for session in self.sessions if session.current}
        for attempt in self.logins:
            if attempt.outcome == SUCCEEDED and attempt.session_id not in current:
                return attempt
        return None


@dataclass
class Inbox:
    """Unread count and the latest unread messages."""

    unread: int
    latest: list[notification_resources.InboxMessage] = field(default_factory=list)


@dataclass
class WithdrawalTerms:
    """What the withdraw service allows the caller: limits per asset at their KYC level, and the
    whitelist entries (not removed) of one chain."""

    limits: withdraw_service.GetWithdrawalLimitsResponse
    addresses: list[withdraw_resources.WithdrawalAddress]

    def limit(self, asset: str) -> withdraw_resources.AssetWithdrawalLimit | None:
        """The limits of `asset`, None when it is not withdrawable at all."""
        return next((limit for limit in self.limits.limits if limit.asset == asset), None)


class CallerReads:
    """Reads of the caller's own data at user, kyc, account, notification, auth and withdraw."""

    def __init__(self, channel_to: Callable[[str], grpc.aio.Channel]) -> None:
        self._channel_to = channel_to

    async def profile(self, deadline_s: float) -> user_service.User:
        stub = user_grpc.UserServiceStub(self._channel_to("user"))
        response = await stub.GetMyUser(user_service.GetMyUserRequest(), timeout=deadline_s)
        return response.user

    async def kyc_status(self, deadline_s: float) -> kyc_resources.KycStatus:
        stub = kyc_grpc.KycServiceStub(self._channel_to("kyc"))
        response = await stub.GetKycStatus(kyc_service.GetKycStatusRequest(), timeout=deadline_s)
        return response.status

    async def accounts(self, deadline_s: float, *, asset: str = "") -> list[account_resources.Account]:
        """Every open account of the caller with its balance (one page holds them all)."""
        stub = account_grpc.AccountServiceStub(self._channel_to("account"))
        request = account_service.ListAccountsRequest(user_id=ME, page_size=COUNT_PAGE, asset=asset)
        response = await stub.ListAccounts(request, timeout=deadline_s)
        return list(response.accounts)

    async def activity(
        self, deadline_s: float, count: int, *, asset: str = ""
    ) -> list[tuple[account_resources.Account, account_resources.AccountActivity]]:
        """The `count` latest balance movements over the caller's accounts, newest first."""
        stub = account_grpc.AccountServiceStub(self._channel_to("account"))
        accounts = await self.accounts(deadline_s, asset=asset)
        pages = await asyncio.gather(
            *(
                stub.ListAccountActivities(
                    account_service.ListAccountActivitiesRequest(
                        account_id=account.account_id, page_size=count
                    ),
                    timeout=deadline_s,
                )
                for account in accounts
            )
        )
        merged = [
            (account, item) for account, page in zip(accounts, pages, strict=True) for item in page.activities
        ]
        merged.sort(key=lambda pair: (pair[1].create_time.ToMicroseconds(), pair[1].sequence), reverse=True)
        return merged[:count]

    async def inbox(self, deadline_s: float) -> Inbox:
        stub = notification_grpc.NotificationServiceStub(self._channel_to("notification"))
        summary, latest = await asyncio.gather(
            stub.GetInboxSummary(notification_service.GetInboxSummaryRequest(), timeout=deadline_s),
            stub.ListInboxMessages(
                notification_service.ListInboxMessagesRequest(unread_only=True, page_size=LATEST_UNREAD),
                timeout=deadline_s,
            ),
        )
        return Inbox(summary.unread_count, list(latest.inbox_messages))

    async def security(self, deadline_s: float) -> Security:
        stub = auth_grpc.AuthServiceStub(self._channel_to("auth"))
        two_factor, sessions, keys, logins = await asyncio.gather(
            stub.GetTwoFactorStatus(auth_service.GetTwoFactorStatusRequest(), timeout=deadline_s),
            stub.ListSessions(auth_service.ListSessionsRequest(page_size=COUNT_PAGE), timeout=deadline_s),
            stub.ListApiKeys(
                auth_service.ListApiKeysRequest(states=[ACTIVE_KEY], page_size=COUNT_PAGE), timeout=deadline_s
            ),
            stub.ListLoginAttempts(
                auth_service.ListLoginAttemptsRequest(page_size=LOGIN_PAGE), timeout=deadline_s
            ),
        )
        return Security(
            two_factor.two_factor, list(sessions.sessions), list(keys.api_keys), list(logins.login_attempts)
        )

    async def two_factor(self, deadline_s: float) -> auth_resources.TwoFactorStatus:
        stub = auth_grpc.AuthServiceStub(self._channel_to("auth"))
        response = await stub.GetTwoFactorStatus(auth_service.GetTwoFactorStatusRequest(), timeout=deadline_s)
        return response.two_factor

    async def withdrawal_terms(self, deadline_s: float, chain: str) -> WithdrawalTerms:
        """Every withdrawable asset's limits (an asset outside them is not withdrawable: asking for
        it alone would be refused) and the caller's whitelist on `chain`."""
        stub = withdraw_grpc.WithdrawServiceStub(self._channel_to("withdraw"))
        limits, addresses = await asyncio.gather(
            stub.GetWithdrawalLimits(withdraw_service.GetWithdrawalLimitsRequest(), timeout=deadline_s),
            stub.ListWithdrawalAddresses(
                withdraw_service.ListWithdrawalAddressesRequest(chain=chain, page_size=WHITELIST_PAGE),
                timeout=deadline_s,
            ),
        )
        return WithdrawalTerms(limits, list(addresses.addresses))
