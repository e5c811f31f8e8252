"""The checker's second factor: a step-up token (purpose STAFF_APPROVAL) that the auth service
issued after a fresh TOTP or recovery code, spent here once per checking request."""

from __future__ import annotations

from typing import Protocol

import grpc
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources

from svc.kit import stepup
from svc.kit.context import EndUser


class StepUp(Protocol):
    async def redeem(self, token: str, staff: EndUser, request_id: str) -> None:
        """Spends the staff member's step-up token for the request; raises the refusal otherwise."""
        ...


class AuthStepUp:
    """Step-up tokens redeemed at the auth service (`RedeemStepUpToken`), as the KYC service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._auth = stepup.AuthStepUp(channel)

    async def redeem(self, token: str, staff: EndUser, request_id: str) -> None:
        await self._auth.redeem(token, staff, auth_resources.STEP_UP_PURPOSE_STAFF_APPROVAL, request_id)
