"""Downstream reads of the admin BFF: one user's records at the services that own them, read as
the staff member calling (the kit forwards the staff token; each service applies its own role
rules, so a section the caller's role may not see comes back PERMISSION_DENIED)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from finmesh.account.v1 import account_resources_pb2 as account_resources
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.account.v1 import account_service_pb2_grpc as account_grpc
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.auth.v1 import auth_service_pb2 as auth_service
from finmesh.auth.v1 import auth_service_pb2_grpc as auth_grpc
from finmesh.deposit.v1 import deposit_resources_pb2 as deposit_resources
from finmesh.deposit.v1 import deposit_service_pb2 as deposit_service
from finmesh.deposit.v1 import deposit_service_pb2_grpc as deposit_grpc
from finmesh.kyc.v1 import kyc_resources_pb2 as kyc_resources
from finmesh.kyc.v1 import kyc_service_pb2 as kyc_service
from finmesh.kyc.v1 import kyc_service_pb2_grpc as kyc_grpc
from finmesh.user.v1 import user_service_pb2 as user_service
from finmesh.user.v1 import user_service_pb2_grpc as user_grpc
from finmesh.withdraw.v1 import withdraw_resources_pb2 as withdraw_resources
from finmesh.withdraw.v1 import withdraw_service_pb2 as withdraw_service
from finmesh.withdraw.v1 import withdraw_service_pb2_grpc as withdraw_grpc

# The overview shows the 20 latest of each list (contract); accounts fit one page.
LATEST = 20
ACCOUNTS_PAGE = 1000
# A queue is read whole (it is merged and paged here), at most this many pages of 1000 a source.
QUEUE_PAGES = 10


@dataclass
class UserRecord:
    user: user_service.User
    status_changes: list[user_service.StatusChange]


@dataclass
class AuthRecord:
    sessions: list[auth_resources.Session]
    logins: list[auth_resources.LoginAttempt]
    api_keys: list[auth_resources.ApiKey]


@dataclass
class Movements:
    deposits: list[deposit_resources.Deposit]
    withdrawals: list[withdraw_resources.Withdrawal]


class StaffReads:
    """Reads of one user's records for the console."""

    def __init__(self, channel_to: Callable[[str], grpc.aio.Channel]) -> None:
        self._channel_to = channel_to

    async def user(self, deadline_s: float, user_id: str) -> UserRecord:
        stub = user_grpc.UserServiceStub(self._channel_to("user"))
        found, changes = await asyncio.gather(
            stub.GetUser(user_service.GetUserRequest(user_id=user_id), timeout=deadline_s),
            stub.ListUserStatusChanges(
                user_service.ListUserStatusChangesRequest(user_id=user_id, page_size=LATEST),
                timeout=deadline_s,
            ),
        )
        return UserRecord(found.user, list(changes.status_changes))

    async def search(
        self, deadline_s: float, request: user_service.SearchUsersRequest
    ) -> user_service.SearchUsersResponse:
        stub = user_grpc.UserServiceStub(self._channel_to("user"))
        response: user_service.SearchUsersResponse = await stub.SearchUsers(request, timeout=deadline_s)
        return response

    async def kyc_profile(self, deadline_s: float, user_id: str) -> kyc_resources.KycProfile:
        stub = kyc_grpc.KycServiceStub(self._channel_to("kyc"))
        response = await stub.GetKycProfile(
            kyc_service.GetKycProfileRequest(user_id=user_id), timeout=deadline_s
        )
        return response.profile

    async def kyc_profiles(
        self, deadline_s: float, user_ids: list[str]
    ) -> dict[str, kyc_resources.KycProfile]:
        if not user_ids:
            return {}
        stub = kyc_grpc.KycServiceStub(self._channel_to("kyc"))
        response = await stub.BatchGetKycProfiles(
            kyc_service.BatchGetKycProfilesRequest(user_ids=user_ids), timeout=deadline_s
        )
        return {profile.user_id: profile for profile in response.profiles}

    async def accounts(self, deadline_s: float, user_id: str) -> list[account_resources.Account]:
        stub = account_grpc.AccountServiceStub(self._channel_to("account"))
        response = await stub.ListAccounts(
            account_service.ListAccountsRequest(user_id=user_id, page_size=ACCOUNTS_PAGE), timeout=deadline_s
        )
        return list(response.accounts)

    async def movements(self, deadline_s: float, user_id: str) -> Movements:
        """The user's latest deposits and withdrawals, from the services that own them."""
        deposits = deposit_grpc.DepositServiceStub(self._channel_to("deposit"))
        withdrawals = withdraw_grpc.WithdrawServiceStub(self._channel_to("withdraw"))
        found_deposits, found_withdrawals = await asyncio.gather(
            deposits.AdminListDeposits(
                deposit_service.AdminListDepositsRequest(user_id=user_id, page_size=LATEST),
                timeout=deadline_s,
            ),
            withdrawals.AdminListWithdrawals(
                withdraw_service.AdminListWithdrawalsRequest(user_id=user_id, page_size=LATEST),
                timeout=deadline_s,
            ),
        )
        return Movements(list(found_deposits.deposits), list(found_withdrawals.withdrawals))

    async def auth(self, deadline_s: float, user_id: str) -> AuthRecord:
        stub = auth_grpc.AuthServiceStub(self._channel_to("auth"))
        sessions, logins, keys = await asyncio.gather(
            stub.ListUserSessions(
                auth_service.ListUserSessionsRequest(user_id=user_id, page_size=ACCOUNTS_PAGE),
                timeout=deadline_s,
            ),
            stub.ListUserLoginAttempts(
                auth_service.ListUserLoginAttemptsRequest(user_id=user_id, page_size=LATEST),
                timeout=deadline_s,
            ),
            stub.ListUserApiKeys(
                auth_service.ListUserApiKeysRequest(user_id=user_id, page_size=ACCOUNTS_PAGE),
                timeout=deadline_s,
            ),
        )
        return AuthRecord(list(sessions.sessions), list(logins.login_attempts), list(keys.api_keys))

    async def pending_withdrawals(
        self, deadline_s: float, user_id: str
    ) -> list[withdraw_resources.Withdrawal]:
        """Every withdrawal waiting for its approvers, with their decisions so far."""
        stub = withdraw_grpc.WithdrawServiceStub(self._channel_to("withdraw"))

        async def one(token: str) -> tuple[list[Any], str]:
            response = await stub.AdminListWithdrawals(
                withdraw_service.AdminListWithdrawalsRequest(
                    user_id=user_id,
                    states=[withdraw_resources.WITHDRAWAL_STATE_AWAITING_APPROVAL],
                    page_size=ACCOUNTS_PAGE,
                    page_token=token,
                ),
                timeout=deadline_s,
            )
            return list(response.withdrawals), response.next_page_token

        return await _every_page(one)

    async def pending_submissions(self, deadline_s: float, user_id: str) -> list[kyc_resources.Submission]:
        """Submissions waiting for their maker (PENDING_REVIEW) or their checker (AWAITING_CHECK)."""
        stub = kyc_grpc.KycServiceStub(self._channel_to("kyc"))

        async def one(token: str) -> tuple[list[Any], str]:
            response = await stub.SearchSubmissions(
                kyc_service.SearchSubmissionsRequest(
                    user_id=user_id,
                    states=[
                        kyc_resources.SUBMISSION_STATE_PENDING_REVIEW,
                        kyc_resources.SUBMISSION_STATE_AWAITING_CHECK,
                    ],
                    page_size=ACCOUNTS_PAGE,
                    page_token=token,
                ),
                timeout=deadline_s,
            )
            return list(response.submissions), response.next_page_token

        return await _every_page(one)

    async def open_screenings(self, deadline_s: float, user_id: str) -> list[kyc_resources.Screening]:
        """Sanctions cases not resolved yet (OPEN, RESOLUTION_PROPOSED)."""
        stub = kyc_grpc.KycServiceStub(self._channel_to("kyc"))

        async def one(token: str) -> tuple[list[Any], str]:
            response = await stub.ListScreenings(
                kyc_service.ListScreeningsRequest(
                    user_id=user_id,
                    states=[
                        kyc_resources.SCREENING_STATE_OPEN,
                        kyc_resources.SCREENING_STATE_RESOLUTION_PROPOSED,
                    ],
                    page_size=ACCOUNTS_PAGE,
                    page_token=token,
                ),
                timeout=deadline_s,
            )
            return list(response.screenings), response.next_page_token

        return await _every_page(one)

    async def pending_role_assignments(
        self, deadline_s: float, user_id: str
    ) -> list[auth_resources.RoleAssignment]:
        """Staff role grants waiting for their second admin."""
        stub = auth_grpc.AuthServiceStub(self._channel_to("auth"))

        async def one(token: str) -> tuple[list[Any], str]:
            response = await stub.ListRoleAssignments(
                auth_service.ListRoleAssignmentsRequest(
                    user_id=user_id,
                    states=[auth_resources.ROLE_ASSIGNMENT_STATE_PENDING_APPROVAL],
                    page_size=ACCOUNTS_PAGE,
                    page_token=token,
                ),
                timeout=deadline_s,
            )
            return list(response.role_assignments), response.next_page_token

        return await _every_page(one)


async def _every_page(read: Callable[[str], Awaitable[tuple[list[Any], str]]]) -> list[Any]:
    found, token = await read("")
    for _ in range(QUEUE_PAGES - 1):
        if not token:
            break
        more, token = await read(token)
        found.extend(more)
    return found
