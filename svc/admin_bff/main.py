"""Wiring: the admin BFF servicer over staff reads at user, kyc, account, auth, deposit and withdraw,
and the health checks of the services it may call."""

from __future__ import annotations

from finmesh.admin_bff.v1 import admin_bff_service_pb2_grpc

from svc.admin_bff.config import AdminBffSettings
from svc.admin_bff.health import HealthReads
from svc.admin_bff.reads import StaffReads
from svc.admin_bff.server import AdminBffServicer
from svc.bff.wiring import aggregation, settings_of
from svc.kit import catalog
from svc.kit.server import ServiceApp

SERVICE_NAME = "finmesh.admin_bff.v1.AdminBffService"


def build(app: ServiceApp) -> None:
    """Registers the admin BFF servicer; a section a staff role may not see is FORBIDDEN."""
    settings = settings_of(app, AdminBffSettings)
    health = HealthReads(app.channel_to, app.catalog or catalog.default(), settings.product_profile)
    servicer = AdminBffServicer(
        StaffReads(app.channel_to), health, aggregation(app, settings, forbidden_state=True)
    )
    app.add_servicer(admin_bff_service_pb2_grpc.add_AdminBffServiceServicer_to_server, servicer, SERVICE_NAME)
