"""The Envoy configuration emitted from the descriptor set exposes exactly the Python gateway's
routes: the same bindings, and for a request to each of them Envoy's first matching route is the
RPC the Python router picks."""

from __future__ import annotations

import json
import re

import pytest
from envoy_data_plane.envoy.extensions.filters.http.grpc_json_transcoder.v3 import GrpcJsonTranscoder
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import HttpConnectionManager

from gateway.config import GatewaySettings, RoutePolicy
from gateway.descriptors import DESCRIPTOR_SET, Contracts
from gateway.envoy import TRANSCODER, connection_manager
from gateway.router import Route, Router
from tests.gateway.augmented import augmented_contracts
from tools.gen.http_rules import Variable


def sample_path(route: Route) -> str:
    """A concrete URL the route's template matches."""
    parts: list[str] = []
    for segment in route.binding.template.segments:
        for part in segment.segments if isinstance(segment, Variable) else (segment,):
            parts.append({"*": "v7", "**": "a/b:c"}.get(part, part))
    verb = route.binding.template.verb
    return "/" + "/".join(parts) + (f":{verb}" if verb else "")


SETTINGS = GatewaySettings(routes={"finmesh.auth.v1.AuthService.Login": RoutePolicy(timeout_s=3)})


@pytest.fixture(scope="module")
def deployed() -> HttpConnectionManager:
    """The configuration of gen/ as Envoy would read it: through its JSON form (made once: slow)."""
    document = json.loads(json.dumps(connection_manager(Contracts.load(), SETTINGS).to_dict()))
    return HttpConnectionManager.from_dict(document)


def check_same_routes(router: Router, manager: HttpConnectionManager) -> None:
    routes = manager.route_config.virtual_hosts[0].routes
    assert sorted(route.name for route in routes) == sorted(" ".join(route.key()) for route in router)
    compiled = [
        (route.match.headers[0].string_match.exact, re.compile(route.match.safe_regex.regex), route.name)
        for route in routes
    ]
    for route in router:
        path = sample_path(route)
        chosen = router.match(route.http_method, path)
        assert chosen is not None, path
        first = next(
            name for method, regex, name in compiled if method == route.http_method and regex.match(path)
        )
        assert first == " ".join(chosen.route.key()), path


def test_envoy_routes_equal_the_gateway_routes(deployed: HttpConnectionManager) -> None:
    check_same_routes(Router(Contracts.load().rpcs()), deployed)


def test_new_annotations_reach_envoy_too() -> None:
    contracts = augmented_contracts()
    manager = connection_manager(contracts, SETTINGS)
    check_same_routes(Router(contracts.rpcs()), manager)
    names = [route.name for route in manager.route_config.virtual_hosts[0].routes]
    assert any("/SealLedgerAccount" in name for name in names)


def test_transcoder_carries_the_descriptor_set_and_the_routed_services(
    deployed: HttpConnectionManager,
) -> None:
    manager = deployed
    contracts = Contracts.load()
    assert [item.name for item in manager.http_filters] == [TRANSCODER, "envoy.filters.http.router"]
    transcoder = manager.http_filters[0].typed_config.unpack()
    assert isinstance(transcoder, GrpcJsonTranscoder)
    assert transcoder.proto_descriptor_bin == DESCRIPTOR_SET.read_bytes()
    assert set(transcoder.services) == {route.rpc.service.full_name for route in Router(contracts.rpcs())}
    assert transcoder.match_incoming_request_route and transcoder.convert_grpc_status
    login = next(route for route in manager.route_config.virtual_hosts[0].routes if "/Login" in route.name)
    assert login.route.cluster == "outbound|50102||auth.finmesh.svc.cluster.local"
    assert login.route.timeout.total_seconds() == 3
