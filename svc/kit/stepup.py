"""Step-up tokens spent at the auth service (`RedeemStepUpToken`) by the service that performs the
sensitive action, once per operation: a retried operation redeems the same token again under the
same request id."""

from __future__ import annotations

import grpc
from finmesh.auth.v1 import auth_service_pb2 as auth_service
from finmesh.auth.v1 import auth_service_pb2_grpc as auth_grpc

from svc.kit import remote
from svc.kit.client import as_service
from svc.kit.context import EndUser

REDEEM_TIMEOUT_S = 5.0


class AuthStepUp:
    """Redeems the end user's step-up tokens at the auth service, as the calling service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._auth = auth_grpc.AuthServiceStub(channel)

    async def redeem(
        self, token: str, user: EndUser, purpose: int, request_id: str, operation_digest: str = ""
    ) -> None:
        """Spends `token` for `purpose`; the auth service's refusal passes on (translated)."""
        request = auth_service.RedeemStepUpTokenRequest(
            request_id=request_id,
            step_up_token=token,
            user_id=user.subject,
            session_id=user.session_id,
            purpose=purpose,  # type: ignore[arg-type]
            operation_digest=operation_digest,
        )
        try:
            # As the service itself: redeeming is internal to the auth service.
            with as_service():
                await self._auth.RedeemStepUpToken(request, timeout=REDEEM_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "auth") from None
