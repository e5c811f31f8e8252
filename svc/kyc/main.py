"""Wiring: the KYC servicer over its database, the sealing keys, the document store, the
sanctions list file (whose watcher runs while the service serves) and the auth service, which
redeems checkers' step-up tokens; a consumer of its own profile events freezes users with a
confirmed sanctions match at the user service, and one of its sanctions list events re-screens
users and addresses after an activation."""

from __future__ import annotations

from finmesh.kyc.v1 import kyc_service_pb2_grpc

from svc.kit.config import load_settings
from svc.kit.consumer import EventConsumer
from svc.kit.sealing import Sealer, configured_provider
from svc.kit.server import ServiceApp
from svc.kyc.config import KycSettings
from svc.kyc.freezes import CONSUMER, PROFILES_TOPIC, UserFreezes
from svc.kyc.registry import SanctionsRegistry
from svc.kyc.rescreening import CONSUMER as RESCREENING_CONSUMER
from svc.kyc.rescreening import LISTS_TOPIC, ListUpdateRescreening
from svc.kyc.sanctions import SanctionsListFile
from svc.kyc.server import KycServicer
from svc.kyc.stepup import AuthStepUp
from svc.kyc.storage import document_store

SERVICE_NAME = "finmesh.kyc.v1.KycService"


def build(app: ServiceApp) -> None:
    """Registers the KYC servicer; the sanctions list watcher runs while the service serves."""
    settings = app.settings if isinstance(app.settings, KycSettings) else load_settings(KycSettings)
    registry = SanctionsRegistry(
        app.database,
        SanctionsListFile(settings.sanctions_list_file, source=settings.sanctions_list_source),
        reload_interval_s=settings.sanctions_reload_interval_s,
    )
    servicer = KycServicer(
        app.database,
        Sealer(configured_provider(settings.data_keys, settings.data_key_path)),
        document_store(settings),
        registry,
        AuthStepUp(app.channel_to("auth")),
        name_threshold=settings.name_match_threshold,
        deny_threshold=settings.name_deny_threshold,
        high_risk_countries=frozenset(settings.high_risk_countries),
    )
    app.add_servicer(kyc_service_pb2_grpc.add_KycServiceServicer_to_server, servicer, SERVICE_NAME)
    app.on_start(registry.start)
    app.on_stop(registry.stop)
    # A confirmed sanctions match freezes the user at the user service (svc/kyc/freezes.py).
    freezes = EventConsumer(
        app.database,
        app.bus,
        name=CONSUMER,
        topics=[PROFILES_TOPIC],
        handler=UserFreezes(app.channel_to("user")).on_profile_event,
    )
    app.on_start(freezes.start)
    app.on_stop(freezes.stop)
    # An activation by a staff member re-screens users and addresses (svc/kyc/rescreening.py).
    rescreening = EventConsumer(
        app.database,
        app.bus,
        name=RESCREENING_CONSUMER,
        topics=[LISTS_TOPIC],
        handler=ListUpdateRescreening(servicer).on_list_event,
    )
    app.on_start(rescreening.start)
    app.on_stop(rescreening.stop)
