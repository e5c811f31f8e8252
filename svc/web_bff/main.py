"""Wiring: the web BFF servicer over the caller's reads at user, kyc, account, notification and auth."""

from __future__ import annotations

from finmesh.web_bff.v1 import web_bff_service_pb2_grpc

from svc.bff.activity import ActivityList
from svc.bff.reads import CallerReads
from svc.bff.wiring import aggregation, settings_of
from svc.kit.server import ServiceApp
from svc.web_bff.config import WebBffSettings
from svc.web_bff.server import WebBffServicer

SERVICE_NAME = "finmesh.web_bff.v1.WebBffService"


def build(app: ServiceApp) -> None:
    """Registers the web BFF servicer; it keeps no state of its own (no database)."""
    settings = settings_of(app, WebBffSettings)
    reads = CallerReads(app.channel_to)
    servicer = WebBffServicer(reads, ActivityList(reads, app.channel_to), aggregation(app, settings))
    app.add_servicer(web_bff_service_pb2_grpc.add_WebBffServiceServicer_to_server, servicer, SERVICE_NAME)
