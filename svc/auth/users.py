"""The auth service's calls to the user service: resolving a login identifier and reading a
user's status (a FROZEN or CLOSED user gets no tokens). They are made as the auth service, never
with the end user's token: an end user may not look other users up, and need not for this."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from finmesh.user.v1 import user_service_pb2 as user_service
from finmesh.user.v1 import user_service_pb2_grpc as user_grpc

from svc.auth.domain import UserNotActive
from svc.kit import remote
from svc.kit.client import as_service

CALL_TIMEOUT_S = 5.0
ACTIVE = user_service.USER_STATUS_ACTIVE


@dataclass(frozen=True)
class UserRecord:
    """What auth needs of a user."""

    user_id: str
    active: bool
    account: str  # email or phone, for the authenticator app's label


def _record(user: user_service.User) -> UserRecord:
    return UserRecord(user_id=user.user_id, active=user.status == ACTIVE, account=user.email or user.phone)


class Users:
    """The user service, as the auth service sees it."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = user_grpc.UserServiceStub(channel)

    async def lookup(self, *, email: str = "", phone: str = "") -> UserRecord | None:
        """The user holding an identifier; None when there is none."""
        request = (
            user_service.LookupUserRequest(email=email)
            if email
            else user_service.LookupUserRequest(phone=phone)
        )
        try:
            with as_service():
                response = await self._stub.LookupUser(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise remote.translate(error, "user") from None
        return _record(response.user)

    async def get(self, user_id: str) -> UserRecord:
        """A user by id; NOT_FOUND passes on."""
        try:
            with as_service():
                response = await self._stub.GetUser(
                    user_service.GetUserRequest(user_id=user_id), timeout=CALL_TIMEOUT_S
                )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "user") from None
        return _record(response.user)

    async def require_active(self, user_id: str) -> UserRecord:
        """A user who is ACTIVE; PERMISSION_DENIED (reason FROZEN) otherwise."""
        user = await self.get(user_id)
        if not user.active:
            raise UserNotActive("the user is frozen or closed", metadata={"user_id": user_id})
        return user
