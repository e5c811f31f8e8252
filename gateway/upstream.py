"""Channels to the services behind the edge, as the `gateway` identity of the mesh.

The upstream of a route is the catalog service whose `grpc_service` is the RPC's service. Its
address is the one in FINMESH_ENDPOINTS (set by the launcher), else its catalog port; the
channel is mutual TLS with the gateway's certificate when FINMESH_TLS is on, so services accept
the forwarded end-user token only from the edge's mTLS identity.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.message import Message

from gateway.descriptors import Rpc
from svc.kit import client
from svc.kit.catalog import EDGE_CALLER, Catalog, CatalogError
from svc.kit.config import KitSettings
from svc.kit.mtls import LocalCA

# A restarted upstream must be reachable again within a couple of seconds, not after grpc's
# default reconnect backoff of up to two minutes: the breaker's half-open probes would fail
# meanwhile. grpc also takes the minimum backoff as the connection attempt's timeout, hence 2 s.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 2000),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class Upstreams:
    """One channel per upstream service, opened on first use and closed together."""

    def __init__(self, settings: KitSettings, catalog: Catalog) -> None:
        self._settings = settings
        self._catalog = catalog
        self._names = {entry.grpc_service: entry.name for entry in catalog.services.values()}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._callables: dict[str, grpc.aio.UnaryUnaryMultiCallable[Message, Message]] = {}

    def service_of(self, rpc: Rpc) -> str:
        """The catalog name of the service that serves `rpc`."""
        name = self._names.get(rpc.service.full_name)
        if name is None:
            raise CatalogError(f"no service in the catalog serves {rpc.service.full_name}")
        return name

    def channel(self, service: str) -> grpc.aio.Channel:
        existing = self._channels.get(service)
        if existing is not None:
            return existing
        target = self._settings.endpoints.get(service)
        if target is None:
            target = f"{self._settings.host}:{self._catalog.service(service).port}"
        ca = LocalCA(self._settings.pki_dir) if self._settings.tls else None
        # No client interceptors: the edge sets every call's metadata itself (gateway/app.py, the
        # trace context included), and grpc.aio's interceptor chain costs CPU on every request.
        created = client.channel(
            target, identity=EDGE_CALLER, ca=ca, options=CHANNEL_OPTIONS, intercepted=False
        )
        self._channels[service] = created
        return created

    def method(self, rpc: Rpc) -> grpc.aio.UnaryUnaryMultiCallable[Message, Message]:
        """The callable of one RPC on its upstream's channel, created once."""
        callable_ = self._callables.get(rpc.grpc_path)
        if callable_ is None:
            callable_ = self.channel(self.service_of(rpc)).unary_unary(
                rpc.grpc_path,
                request_serializer=rpc.request_type.SerializeToString,
                response_deserializer=rpc.response_type.FromString,
            )
            self._callables[rpc.grpc_path] = callable_
        return callable_

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._callables.clear()
