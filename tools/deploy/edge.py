"""REST transcoding at the Istio ingress: the Envoy routes and transcoder gateway/envoy.py emits.

gateway.envoy builds the HttpConnectionManager the Python gateway's contracts imply (one route per
HTTP binding, a grpc_json_transcoder). The chart does not copy it: this module reads that
connection manager and turns it into values (the routes of a profile's services, the
transcoder's options) and into one chart file, the descriptor set the transcoder needs, pruned to
the files the routed services import and without source_code_info so that it fits one object.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from gateway import envoy
from gateway.config import GatewaySettings
from gateway.descriptors import Contracts
from svc.kit.catalog import Catalog

DESCRIPTOR_FILE = Path("files") / "transcoder.pb.b64"
# Above this the EnvoyFilter and the Helm release Secret (1 MiB, gzipped) get too close to the limits.
MAX_DESCRIPTOR_BYTES = 700_000


class ChartGatewaySettings(GatewaySettings):
    """The gateway settings the chart deploys: the defaults (its Deployment sets no route policy),
    never what the shell running the generator exports, so that generation is reproducible."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class Edge:
    """The gateway's Envoy configuration, read once for every profile."""

    def __init__(self, catalog: Catalog, descriptor_set: Path) -> None:
        self.contracts = Contracts.load(descriptor_set)
        manager = envoy.connection_manager(self.contracts, ChartGatewaySettings(), catalog, envoy.NAMESPACE)
        clusters = {envoy.cluster(name, catalog, envoy.NAMESPACE): name for name in catalog.services}
        self.grpc_services = {name: entry.grpc_service for name, entry in catalog.services.items()}
        self.routes = [
            _route(route, clusters[route["route"]["cluster"]])
            for route in manager.to_dict()["routeConfig"]["virtualHosts"][0]["routes"]
        ]
        (transcoder,) = [f for f in manager.to_dict()["httpFilters"] if f["name"] == envoy.TRANSCODER]
        self.filter_name = transcoder["name"]
        self.transcoder = transcoder["typedConfig"]

    def profile_edge(self, services: Iterable[str]) -> dict[str, Any]:
        """The `edge` values of a profile: its services' routes, in Envoy's order, and the options.

        The chart lists in the transcoder exactly the gRPC services of the routes it renders.
        """
        deployed = set(services)
        options = {k: v for k, v in self.transcoder.items() if k not in ("protoDescriptorBin", "services")}
        return {
            "filterName": self.filter_name,
            "transcoder": options,
            "routes": [route for route in self.routes if route["service"] in deployed],
        }

    def descriptor_file(self) -> str:
        """The pruned descriptor set, base64 in 76-character lines (the template joins them)."""
        encoded = base64.encodebytes(pruned_descriptor_set(self.contracts, self.transcoder["services"]))
        if len(encoded) > MAX_DESCRIPTOR_BYTES:
            raise ValueError(
                f"the transcoder's descriptor set is {len(encoded)} bytes in base64, "
                f"over the {MAX_DESCRIPTOR_BYTES} the ingress EnvoyFilter may carry"
            )
        return encoded.decode("ascii")


def _route(route: dict[str, Any], service: str) -> dict[str, Any]:
    (method,) = [h["stringMatch"]["exact"] for h in route["match"]["headers"] if h["name"] == ":method"]
    grpc_path = route["name"].rsplit(" ", 1)[1]
    return {
        "name": route["name"],
        "service": service,
        "rpc": grpc_path.rsplit("/", 1)[1],
        "method": method,
        "regex": route["match"]["safeRegex"]["regex"],
        "timeout": route["route"]["timeout"],
    }


def pruned_descriptor_set(contracts: Contracts, services: Iterable[str]) -> bytes:
    """The files defining the services and everything they import, in dependency order."""
    by_name = {file.name: file for file in contracts.descriptor_set.file}
    wanted = set(services)
    needed: set[str] = set()

    def include(name: str) -> None:
        if name not in needed:
            needed.add(name)
            for dependency in by_name[name].dependency:
                include(dependency)

    for file in contracts.descriptor_set.file:
        if any(f"{file.package}.{service.name}" in wanted for service in file.service):
            include(file.name)
    pruned = descriptor_pb2.FileDescriptorSet()
    for file in contracts.descriptor_set.file:  # protoc writes imports before their importers
        if file.name in needed:
            copy = pruned.file.add()
            copy.CopyFrom(file)
            copy.ClearField("source_code_info")
    return pruned.SerializeToString(deterministic=True)
