"""Wiring: one adapter per configured chain (its provider pool with the health checker), and for
every chain that is not DISABLED a block follower and a transaction tracker in the background."""

from __future__ import annotations

from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc

import svc.kit.common_rules  # noqa: F401  (registers the contract's CEL rules)
from svc.chain_gateway import convert, events
from svc.chain_gateway.chain import ChainAdapter
from svc.chain_gateway.config import ChainGatewaySettings, ChainStatus
from svc.chain_gateway.follower import Follower
from svc.chain_gateway.rpc import Health, ProviderHandle
from svc.chain_gateway.server import ChainGatewayServicer
from svc.chain_gateway.tracker import Tracker
from svc.kit.config import load_settings
from svc.kit.server import ServiceApp

SERVICE_NAME = "finmesh.chain_gateway.v1.ChainGatewayService"


def build(app: ServiceApp) -> None:
    """Registers the servicer; pools, followers and trackers run while the service serves."""
    settings = (
        app.settings
        if isinstance(app.settings, ChainGatewaySettings)
        else load_settings(ChainGatewaySettings)
    )
    adapters = {key: ChainAdapter(key, config) for key, config in settings.chains.items()}
    active = [adapter for adapter in adapters.values() if adapter.config.status is not ChainStatus.DISABLED]
    followers = {key: Follower(app.database, adapter) for key, adapter in adapters.items()}
    servicer = ChainGatewayServicer(app.database, adapters, followers)
    trackers = [Tracker(app.database, adapter, servicer.nonce_state) for adapter in active]
    app.add_servicer(
        chain_gateway_service_pb2_grpc.add_ChainGatewayServiceServicer_to_server, servicer, SERVICE_NAME
    )
    for adapter in active:
        adapter.pool.listeners.append(_health_publisher(app, adapter))
        app.on_start(adapter.pool.start)
        app.on_start(followers[adapter.key].start)
        app.on_stop(adapter.pool.stop)
        app.on_stop(followers[adapter.key].stop)
    for tracker in trackers:
        app.on_start(tracker.start)
        app.on_stop(tracker.stop)


def _health_publisher(app: ServiceApp, adapter: ChainAdapter):  # type: ignore[no-untyped-def]
    async def publish(handle: ProviderHandle, previous: Health) -> None:
        import time

        message = convert.provider_message(adapter.key, handle, time.monotonic() * 1000)
        async with app.database.transaction() as session:
            await events.provider_health_changed(session, message, int(previous))  # type: ignore[arg-type]

    return publish
