"""Wiring: the mobile BFF servicer over the caller's reads and the wallet and deposit reads."""

from __future__ import annotations

from finmesh.mobile_bff.v1 import mobile_bff_service_pb2_grpc

from svc.bff.activity import ActivityList
from svc.bff.reads import CallerReads
from svc.bff.wiring import aggregation, settings_of
from svc.kit.server import ServiceApp
from svc.mobile_bff.config import MobileBffSettings
from svc.mobile_bff.reads import DepositReads
from svc.mobile_bff.server import MobileBffServicer

SERVICE_NAME = "finmesh.mobile_bff.v1.MobileBffService"


def build(app: ServiceApp) -> None:
    """Registers the mobile BFF servicer; it keeps no state of its own (no database)."""
    settings = settings_of(app, MobileBffSettings)
    reads = CallerReads(app.channel_to)
    servicer = MobileBffServicer(
        reads,
        ActivityList(reads, app.channel_to),
        DepositReads(app.channel_to),
        aggregation(app, settings),
        settings,
    )
    app.add_servicer(
        mobile_bff_service_pb2_grpc.add_MobileBffServiceServicer_to_server, servicer, SERVICE_NAME
    )
