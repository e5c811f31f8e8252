"""REST at the ingress: the rendered routes and transcoder are the Python gateway's, per profile."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from gateway import envoy
from gateway.config import GatewaySettings
from gateway.descriptors import Contracts
from gateway.router import Route, Router
from svc.kit.catalog import Catalog
from tests.deploy.conftest import NAMESPACE, Manifest, Render, helm_template, objects
from tools.deploy import paths
from tools.deploy.edge import DESCRIPTOR_FILE, MAX_DESCRIPTOR_BYTES, ChartGatewaySettings, Edge
from tools.deploy.generate import render_all, stale, write

PROFILES = ("custodial-wallet", "lending", "staking", "rwa", "full")


@pytest.fixture(scope="module")
def gateway_routes(catalog: Catalog) -> list[tuple[Route, str]]:
    """Every route of the Python gateway with the catalog service it calls, in Envoy's order."""
    names = {entry.grpc_service: entry.name for entry in catalog.services.values()}
    routes = sorted(Router(Contracts.load(paths.DESCRIPTOR_SET).rpcs()), key=envoy.precedence)
    return [(route, names[route.rpc.service.full_name]) for route in routes]


def expected_routes(
    gateway_routes: list[tuple[Route, str]], catalog: Catalog, services: set[str]
) -> list[dict[str, Any]]:
    return [
        {
            "name": envoy.route_name(route),
            "match": [{"uri": {"regex": envoy.path_regex(route)}, "method": {"exact": route.http_method}}],
            "destination": {
                "host": f"{service}.{NAMESPACE}.svc.cluster.local",
                "port": {"number": catalog.service(service).port},
            },
        }
        for route, service in gateway_routes
        if service in services
    ]


def edge_routes(manifest: Manifest) -> list[dict[str, Any]]:
    http = objects(manifest, "VirtualService")["finmesh-edge"]["spec"]["http"]
    assert http[-1]["name"] == "gateway", "the Python gateway must take what the ingress does not transcode"
    assert http[-1]["route"][0]["destination"]["host"] == f"gateway.{NAMESPACE}.svc.cluster.local"
    return [
        {"name": r["name"], "match": r["match"], "destination": r["route"][0]["destination"]}
        for r in http[:-1]
    ]


def transcoder(manifest: Manifest) -> dict[str, Any]:
    spec = objects(manifest, "EnvoyFilter")["finmesh-transcoder"]["spec"]
    (patch,) = spec["configPatches"]
    assert patch["match"]["context"] == "GATEWAY"
    assert patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == envoy.ROUTER
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
    assert patch["patch"]["value"]["name"] == envoy.TRANSCODER
    config: dict[str, Any] = patch["patch"]["value"]["typed_config"]
    return config


@pytest.mark.parametrize("profile", PROFILES)
def test_ingress_routes_are_the_gateway_routes(
    profile: str, render: Render, catalog: Catalog, gateway_routes: list[tuple[Route, str]]
) -> None:
    services = {entry.name for entry in catalog.profile(profile)}
    expected = expected_routes(gateway_routes, catalog, services)
    assert expected, f"profile {profile} exposes no REST route"
    assert edge_routes(render(profile)) == expected


@pytest.mark.parametrize("profile", PROFILES[:-1])
def test_left_out_services_have_no_ingress_route(
    profile: str, render: Render, catalog: Catalog, gateway_routes: list[tuple[Route, str]]
) -> None:
    manifest = render(profile, settings=("deployOptional=false",))
    required = {entry.name for entry in catalog.profile(profile, with_optional=False)}
    assert edge_routes(manifest) == expected_routes(gateway_routes, catalog, required)
    routed = {catalog.service(s).grpc_service for r, s in gateway_routes if s in required}
    assert transcoder(manifest)["services"] == sorted(routed)


def test_only_read_only_rpcs_are_retried_at_the_ingress(render: Render, catalog: Catalog) -> None:
    http = objects(render("full"), "VirtualService")["finmesh-edge"]["spec"]["http"][:-1]
    read_only = {rpc.grpc_path for rpc in Contracts.load(paths.DESCRIPTOR_SET).rpcs() if rpc.read_only}
    assert read_only
    for route in http:
        grpc_path = route["name"].rsplit(" ", 1)[1]
        assert (route["retries"]["attempts"] > 0) == (grpc_path in read_only), route["name"]


@pytest.mark.parametrize("profile", PROFILES)
def test_transcoder_lists_exactly_the_routed_services(
    profile: str, render: Render, catalog: Catalog, gateway_routes: list[tuple[Route, str]]
) -> None:
    services = {entry.name for entry in catalog.profile(profile)}
    config = transcoder(render(profile))
    routed = {catalog.service(service).grpc_service for _, service in gateway_routes if service in services}
    assert config["services"] == sorted(routed)
    emitted = envoy.connection_manager(Contracts.load(paths.DESCRIPTOR_SET), ChartGatewaySettings(), catalog)
    (options,) = [f["typedConfig"] for f in emitted.to_dict()["httpFilters"] if f["name"] == envoy.TRANSCODER]
    for key in ("@type", "printOptions", "matchIncomingRequestRoute", "convertGrpcStatus"):
        assert config[key] == options[key], key
    assert config["matchIncomingRequestRoute"] is True


def test_descriptor_decodes_and_has_every_routed_method(
    render: Render, gateway_routes: list[tuple[Route, str]]
) -> None:
    encoded = transcoder(render("full"))["protoDescriptorBin"]
    assert len(encoded) < MAX_DESCRIPTOR_BYTES
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(base64.b64decode(encoded, validate=True))
    assert not any(file.HasField("source_code_info") for file in files.file)
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.AddSerializedFile(file.SerializeToString())
    for route, _ in gateway_routes:
        pool.FindMethodByName(route.rpc.full_name)  # resolves its messages and their imports
    # The HTTP bindings survive the pruning: the gateway's router reads the same routes from it.
    pruned = sorted(route.key() for route in Router(Contracts(files).rpcs()))
    assert pruned == sorted(route.key() for route, _ in gateway_routes)
    full = Contracts.load(paths.DESCRIPTOR_SET).descriptor_set
    assert len(files.file) < len(full.file), "the descriptor set was not pruned"


def test_transcoding_can_be_left_to_the_gateway(render: Render) -> None:
    manifest = render("full", settings=("ingress.transcode=false",))
    assert "finmesh-transcoder" not in objects(manifest, "EnvoyFilter")
    assert "finmesh-rate-limit" in objects(manifest, "EnvoyFilter")
    assert [r["name"] for r in objects(manifest, "VirtualService")["finmesh-edge"]["spec"]["http"]] == [
        "gateway"
    ]


def test_a_stale_descriptor_file_is_reported(catalog: Catalog, chart_copy: Path) -> None:
    files = render_all(catalog, paths.DESCRIPTOR_SET, chart_copy)
    write(files)
    assert stale(files) == []
    (chart_copy / DESCRIPTOR_FILE).write_text("")
    assert stale(files) == [chart_copy / DESCRIPTOR_FILE]


@pytest.mark.parametrize("profile", ("staking", "full"))
def test_ingress_may_call_exactly_the_transcoded_rpcs(
    profile: str, render: Render, catalog: Catalog, gateway_routes: list[tuple[Route, str]]
) -> None:
    ingress = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    services = {entry.name for entry in catalog.profile(profile)}
    allowed: dict[str, set[str]] = {}
    for name, policy in objects(render(profile), "AuthorizationPolicy").items():
        for rule in policy["spec"].get("rules", []):
            if any(ingress in source["source"].get("principals", []) for source in rule.get("from", [])):
                rpcs = {path for op in rule["to"] for path in op["operation"].get("paths", [])}
                allowed[name.removesuffix("-callers")] = rpcs
    expected: dict[str, set[str]] = {}
    for route, service in gateway_routes:
        if service in services:
            expected.setdefault(service, set()).add(route.rpc.grpc_path)
    gateway = allowed.pop("gateway")  # the Python gateway's own policy names no RPC path
    assert gateway == set()
    assert allowed == expected


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("matchIncomingRequestRoute: true", "matchIncomingRequestRoutes: true"),
        ('protoDescriptorBin: "', 'protoDescriptorBin: "*'),
        ('regex: "^/v1/auth/login:complete$"', 'regex: "^(/v1/auth/login:complete$"'),
    ],
)
def test_validator_refuses_a_broken_ingress(
    tools: dict[str, Path], tmp_path: Path, old: str, new: str
) -> None:
    result = helm_template(tools["helm"], "staking", paths.CHART_DIR, ("ingress.transcode=true",))
    assert result.returncode == 0, result.stderr
    assert old in result.stdout
    rendered = tmp_path / "staking.yaml"
    rendered.write_text(result.stdout)
    check = subprocess.run([str(tools["validate"]), str(rendered)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    rendered.write_text(result.stdout.replace(old, new, 1))
    check = subprocess.run([str(tools["validate"]), str(rendered)], capture_output=True, text=True)
    assert check.returncode == 1, check.stdout
    assert "finmesh-transcoder" in check.stderr or "finmesh-edge" in check.stderr


def test_ingress_timeouts_are_the_gateway_timeouts(render: Render, catalog: Catalog) -> None:
    emitted = envoy.connection_manager(Contracts.load(paths.DESCRIPTOR_SET), ChartGatewaySettings(), catalog)
    (host,) = emitted.to_dict()["routeConfig"]["virtualHosts"]
    expected = {route["name"]: route["route"]["timeout"] for route in host["routes"]}
    http = objects(render("full"), "VirtualService")["finmesh-edge"]["spec"]["http"][:-1]
    assert {route["name"]: route["timeout"] for route in http} == expected


def test_generation_ignores_the_shells_gateway_settings(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = Edge(catalog, paths.DESCRIPTOR_SET).routes
    monkeypatch.setenv("FINMESH_DEFAULT_TIMEOUT_S", "3")
    assert GatewaySettings().default_timeout_s == 3
    assert Edge(catalog, paths.DESCRIPTOR_SET).routes == routes
    assert {route["timeout"] for route in routes} != {"3s"}
