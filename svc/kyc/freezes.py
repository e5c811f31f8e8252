"""A confirmed sanctions match freezes the user platform-wide, through the user service
(`FreezeUser`, reason SANCTIONS, actor: this service).

The freeze follows the KYC service's own `SanctionsStatusChanged` event (new status
CONFIRMED_MATCH) through the kit's consumer, so that it survives a user service that is down when
the checker confirms: the consumer retries with backoff and parks the event in the dead-letter
topic after its attempts, where operators see it. The request id derives from the screening, so a
redelivered event freezes once.
"""

from __future__ import annotations

import logging

import grpc
from finmesh.events.v1 import kyc_events_pb2
from finmesh.kyc.v1 import kyc_resources_pb2 as resources
from finmesh.user.v1 import user_service_pb2 as user_service
from finmesh.user.v1 import user_service_pb2_grpc as user_grpc
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import remote
from svc.kit.bus import ReceivedMessage
from svc.kit.client import as_service

log = logging.getLogger(__name__)

CONSUMER = "kyc-sanctions-freeze"
PROFILES_TOPIC = "finmesh.kyc.v1.profiles"
CALL_TIMEOUT_S = 10.0
NOTE = "confirmed sanctions match (KYC screening {screening_id})"


class UserFreezes:
    """Freezes users at the user service, as the KYC service."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._users = user_grpc.UserServiceStub(channel)

    async def on_profile_event(self, session: AsyncSession, event: Message, message: ReceivedMessage) -> None:
        if not isinstance(event, kyc_events_pb2.SanctionsStatusChanged):
            return
        if event.new_status != resources.SANCTIONS_STATUS_CONFIRMED_MATCH:
            return
        await self.freeze(event.user_id, event.screening_id)

    async def freeze(self, user_id: str, screening_id: str) -> None:
        request = user_service.FreezeUserRequest(
            request_id=f"kyc.sanctions-freeze.{screening_id}"[:128],
            user_id=user_id,
            reason=user_service.STATUS_REASON_SANCTIONS,
            note=NOTE.format(screening_id=screening_id),
            revoke_sessions=True,
        )
        try:
            with as_service():
                await self._users.FreezeUser(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                # A screening about an id that is no user (a prospect screened by hand): nothing to freeze.
                log.warning("confirmed sanctions match for %s, who is no user: not frozen", user_id)
                return
            if error.code() is grpc.StatusCode.FAILED_PRECONDITION:
                # CLOSED already: nobody can log in or move funds.
                log.warning("confirmed sanctions match for %s: %s", user_id, error.details())
                return
            raise remote.translate(error, "user") from None
