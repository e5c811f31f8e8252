"""The user service's one call to the auth service: storing a new user's first password.

The password passes through and is never stored here. The call's request_id derives from the
registration's, so a retried registration replays the auth service's result.
"""

from __future__ import annotations

import grpc
from finmesh.auth.v1 import auth_service_pb2 as auth_service
from finmesh.auth.v1 import auth_service_pb2_grpc as auth_grpc

from svc.kit import remote
from svc.kit.client import as_service

CALL_TIMEOUT_S = 10.0
REQUEST_ID_PREFIX = "user.register:"


class PasswordCredentials:
    """Creates password credentials at the auth service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = auth_grpc.AuthServiceStub(channel)

    async def create(self, registration_request_id: str, user_id: str, password: str) -> None:
        """Stores the password of `user_id` (argon2id, at the auth service); its refusals pass on."""
        request_id = (REQUEST_ID_PREFIX + registration_request_id)[:128]
        try:
            with as_service():
                await self._stub.CreatePasswordCredential(
                    auth_service.CreatePasswordCredentialRequest(
                        request_id=request_id, user_id=user_id, password=password
                    ),
                    timeout=CALL_TIMEOUT_S,
                )
        except grpc.aio.AioRpcError as error:
            raise remote.translate(error, "auth") from None
