"""What a user still holds, asked before closing: a closed user can no longer log in to move it.

The account service knows every balance of the user (available, held by a pending withdrawal or
an order, pending incoming), so one listing of the user's ACTIVE and FROZEN accounts without zero
balances answers "does the user hold anything". Loans, stakes and RWA holdings are accounts of
their own kinds there once those services exist.
"""

from __future__ import annotations

from typing import Protocol

import grpc
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.account.v1 import account_service_pb2_grpc as account_grpc

from svc.kit import remote
from svc.kit.client import as_service

CALL_TIMEOUT_S = 5.0
PAGE_SIZE = 200


class Holdings(Protocol):
    async def held_assets(self, user_id: str) -> list[str]:
        """The assets of the user's accounts that do not stand at zero (empty: nothing held)."""
        ...


class AccountHoldings:
    """Holdings from the account service's `ListAccounts`, asked as the user service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = account_grpc.AccountServiceStub(channel)

    async def held_assets(self, user_id: str) -> list[str]:
        held: set[str] = set()
        token = ""
        while True:
            # Zero balances are left out of each page, so a page may be empty and still have a next.
            request = account_service.ListAccountsRequest(
                user_id=user_id, page_size=PAGE_SIZE, page_token=token, hide_zero_balances=True
            )
            try:
                with as_service():
                    listed = await self._stub.ListAccounts(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                raise remote.translate(error, "account") from None
            held.update(account.asset for account in listed.accounts)
            token = listed.next_page_token
            if not token:
                return sorted(held)
