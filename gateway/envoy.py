"""Envoy configuration from the same descriptor set: routes and a grpc_json_transcoder filter.

Production can transcode in the Istio ingress gateway instead of this process: the emitted
HttpConnectionManager carries Envoy's grpc_json_transcoder (the whole descriptor set, every
service that has a route, statuses converted to JSON, fields at their default value printed as
the Python gateway prints them) and one route per HTTP binding, matched on the incoming request
(`match_incoming_request_route`) by method and a regex of the path template, in the same
precedence as gateway.router, to the upstream's Istio cluster
(`outbound|<port>||<service>.<namespace>.svc.cluster.local`). Each route's name says which
binding it is, so a test can check that Envoy and the Python gateway expose the same routes.

`python -m gateway.envoy [--namespace finmesh]` prints it as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from collections.abc import Iterable

from envoy_data_plane.envoy.config.route.v3 import (
    HeaderMatcher,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.filters.http.grpc_json_transcoder.v3 import (
    GrpcJsonTranscoder,
    GrpcJsonTranscoderPrintOptions,
)
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router as RouterFilter
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpFilter,
)
from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher
from envoy_data_plane.google.protobuf import Any

from gateway.config import GatewaySettings
from gateway.descriptors import Contracts
from gateway.router import Route as GatewayRoute
from gateway.router import Router
from svc.kit import catalog as catalog_module
from svc.kit.catalog import Catalog
from tools.gen.http_rules import Variable

TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
ROUTER = "envoy.filters.http.router"
NAMESPACE = "finmesh"


def path_regex(route: GatewayRoute) -> str:
    """An RE2 regex matching exactly the paths the route's template matches."""
    parts: list[str] = []
    for segment in route.binding.template.segments:
        for part in segment.segments if isinstance(segment, Variable) else (segment,):
            parts.append({"*": "/[^/]+", "**": "(/.*)?"}.get(part) or "/" + re.escape(part))
    verb = route.binding.template.verb
    return "^" + "".join(parts) + (re.escape(":" + verb) if verb else "") + "$"


def precedence(route: GatewayRoute) -> tuple[bool, bool, tuple[int, ...]]:
    """Envoy takes the first matching route: the order gateway.router tries candidates in."""
    return (route.pattern.has_rest, not route.pattern.verb, route.pattern.specificity)


def route_name(route: GatewayRoute) -> str:
    return " ".join(route.key())


def cluster(service: str, catalog: Catalog, namespace: str) -> str:
    port = catalog.service(service).port
    return f"outbound|{port}||{service}.{namespace}.svc.cluster.local"


def envoy_routes(
    routes: Iterable[GatewayRoute],
    services: dict[str, str],
    settings: GatewaySettings,
    catalog: Catalog,
    namespace: str,
) -> list[Route]:
    emitted = []
    for route in sorted(routes, key=precedence):
        policy = settings.policy(route.rpc.full_name)
        timeout_s = min(policy.timeout_s or settings.default_timeout_s, settings.max_timeout_s)
        emitted.append(
            Route(
                name=route_name(route),
                match=RouteMatch(
                    safe_regex=RegexMatcher(regex=path_regex(route)),
                    headers=[
                        HeaderMatcher(name=":method", string_match=StringMatcher(exact=route.http_method))
                    ],
                ),
                route=RouteAction(
                    cluster=cluster(services[route.rpc.grpc_path], catalog, namespace),
                    timeout=datetime.timedelta(seconds=timeout_s),
                ),
            )
        )
    return emitted


def connection_manager(
    contracts: Contracts,
    settings: GatewaySettings,
    catalog: Catalog | None = None,
    namespace: str = NAMESPACE,
) -> HttpConnectionManager:
    """The ingress's HTTP connection manager: transcoder, router, and the routes."""
    catalog = catalog or catalog_module.default()
    router = Router(contracts.rpcs())
    names = {entry.grpc_service: entry.name for entry in catalog.services.values()}
    services = {route.rpc.grpc_path: names[route.rpc.service.full_name] for route in router}
    transcoder = GrpcJsonTranscoder(
        proto_descriptor_bin=contracts.descriptor_set.SerializeToString(),
        services=sorted({route.rpc.service.full_name for route in router}),
        match_incoming_request_route=True,
        convert_grpc_status=True,
        print_options=GrpcJsonTranscoderPrintOptions(always_print_primitive_fields=True),
    )
    return HttpConnectionManager(
        stat_prefix="finmesh_edge",
        route_config=RouteConfiguration(
            name="finmesh-edge",
            virtual_hosts=[
                VirtualHost(
                    name="finmesh-edge",
                    domains=["*"],
                    routes=envoy_routes(router, services, settings, catalog, namespace),
                )
            ],
        ),
        http_filters=[
            HttpFilter(name=TRANSCODER, typed_config=Any.pack(transcoder)),
            HttpFilter(name=ROUTER, typed_config=Any.pack(RouterFilter())),
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.envoy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", default=NAMESPACE, help="Kubernetes namespace of the services")
    arguments = parser.parse_args(argv)
    settings = GatewaySettings()
    manager = connection_manager(
        Contracts.load(settings.descriptor_set), settings, namespace=arguments.namespace
    )
    json.dump(manager.to_dict(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
