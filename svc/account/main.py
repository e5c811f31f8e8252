"""Wiring: the account servicer over the ledger and the balance cache, the consumer of the
ledger's entry events that keeps the cache fresh, the freeze expiry sweeper and the orphan hold
sweeper."""

from __future__ import annotations

from finmesh.account.v1 import account_service_pb2_grpc

from svc.account import events
from svc.account.cache import make_cache
from svc.account.config import AccountSettings
from svc.account.expiry import Sweeper, freeze_expiry_sweeper
from svc.account.ledger import LedgerGateway
from svc.account.reconcile import OrphanHoldReconciler
from svc.account.server import AccountServicer
from svc.kit.config import load_settings
from svc.kit.consumer import EventConsumer
from svc.kit.server import ServiceApp

SERVICE_NAME = "finmesh.account.v1.AccountService"


def build(app: ServiceApp) -> None:
    """Registers the account servicer; the consumer and the sweeper run while the service serves."""
    settings = app.settings if isinstance(app.settings, AccountSettings) else load_settings(AccountSettings)
    gateway = LedgerGateway(app.channel_to("ledger"))
    cache = make_cache(settings.redis_url)
    servicer = AccountServicer(app.database, gateway, cache, settings.assets)
    app.add_servicer(account_service_pb2_grpc.add_AccountServiceServicer_to_server, servicer, SERVICE_NAME)
    consumer = EventConsumer(
        app.database,
        app.bus,
        name=events.CONSUMER,
        topics=[events.LEDGER_ENTRIES_TOPIC],
        handler=events.LedgerEntryHandler(gateway, cache, settings.assets),
    )
    sweeper = freeze_expiry_sweeper(servicer)
    reconciler = OrphanHoldReconciler(app.database, gateway, age_us=int(settings.orphan_hold_age_s * 1e6))
    orphans = Sweeper(
        "account-orphan-holds", reconciler.sweep, interval_ms=int(settings.orphan_sweep_interval_s * 1000)
    )
    app.on_start(consumer.start)
    app.on_start(sweeper.start)
    app.on_start(orphans.start)
    app.on_stop(cache.close)
    app.on_stop(consumer.stop)
    app.on_stop(sweeper.stop)
    app.on_stop(orphans.stop)
