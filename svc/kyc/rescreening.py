"""An activation through the contract starts a re-screening (context LIST_UPDATE) of every
user's names and of every address screened in the last 365 days.

It follows the KYC service's own `SanctionsListVersionActivated` event through the kit's
consumer, so that it runs once per activation even across a restart: the re-screening is one
transaction with the consumer's inbox row, retried whole on failure. Versions the deployment's
list file brings (activated by the file, not by a staff member) are not re-screened: the file is
the deployment's own low-ceremony list, and a change to it must not move users' sanctions status
behind the operators' backs.
"""

from __future__ import annotations

import logging
from typing import Protocol

from finmesh.events.v1 import kyc_events_pb2
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit.bus import ReceivedMessage
from svc.kyc.registry import FILE_IMPORTER

log = logging.getLogger(__name__)

CONSUMER = "kyc-list-rescreening"
LISTS_TOPIC = "finmesh.kyc.v1.sanctions_lists"


class Rescreener(Protocol):
    async def rescreen(self, session: AsyncSession, version_id: str) -> None: ...


class ListUpdateRescreening:
    """Re-screens after each activation by a staff member."""

    def __init__(self, servicer: Rescreener) -> None:
        self._servicer = servicer

    async def on_list_event(self, session: AsyncSession, event: Message, message: ReceivedMessage) -> None:
        if not isinstance(event, kyc_events_pb2.SanctionsListVersionActivated):
            return
        if event.activated_by == FILE_IMPORTER:
            return
        await self._servicer.rescreen(session, event.version_id)
        log.info(
            "re-screened after a sanctions list activation",
            extra={"fields": {"version_id": event.version_id}},
        )
