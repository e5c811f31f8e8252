"""Where a user is reached: contact details come from the user service at send time (events carry
no personal data), never stored here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc
from finmesh.user.v1 import user_service_pb2 as user_service
from finmesh.user.v1 import user_service_pb2_grpc as user_grpc

from svc.notification.channels import DeliveryFailure

USER_STATUS_CLOSED = 3
LOOKUP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Contact:
    """A user's contact details and language, as the user service has them now."""

    email: str = ""
    email_verified: bool = False
    phone: str = ""
    phone_verified: bool = False
    language: str = ""
    closed: bool = False


class ContactDirectory(Protocol):
    async def contact(self, user_id: str) -> Contact:
        """The user's contact; DeliveryFailure (permanent for an unknown user) when not known."""
        ...


class UserServiceDirectory:
    """Contacts from `UserService.GetUser`, called as the notification service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._users = user_grpc.UserServiceStub(channel)

    async def contact(self, user_id: str) -> Contact:
        try:
            answer = await self._users.GetUser(
                user_service.GetUserRequest(user_id=user_id), timeout=LOOKUP_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            permanent = error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
            raise DeliveryFailure(
                f"user service: {error.code().name} {error.details()}", permanent=permanent
            ) from None
        user = answer.user
        return Contact(
            email=user.email,
            email_verified=user.email_verified,
            phone=user.phone,
            phone_verified=user.phone_verified,
            language=user.profile.language,
            closed=user.status == USER_STATUS_CLOSED,
        )
