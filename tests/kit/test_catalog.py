"""The service catalog: it loads, it is consistent, and its profiles are the architecture's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from svc.kit import catalog as catalog_module
from svc.kit.catalog import EDGE_CALLER, Catalog, CatalogError
from svc.kit.cli import main

# SPEC section 2: every service of the platform, plus the three backends-for-frontends.
PLATFORM_SERVICES = {
    "user", "auth", "kyc", "notification",
    "chain-gateway", "custody", "wallet", "deposit", "withdraw",
    "interest-engine", "lending", "staking", "rwa", "settlement",
    "admin", "audit", "report", "risk-control",
    "ledger", "account", "reconciliation",
    "web-bff", "mobile-bff", "admin-bff",
}  # fmt: skip
BFFS = {"web-bff", "mobile-bff", "admin-bff"}
CUSTODIAL_WALLET_REQUIRED = {
    "user", "auth", "wallet", "custody", "chain-gateway", "deposit", "withdraw", "ledger", "account", *BFFS,
}  # fmt: skip
CUSTODIAL_WALLET_OPTIONAL = {"kyc", "notification", "admin"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return catalog_module.default()


def names(entries: list[catalog_module.ServiceEntry]) -> set[str]:
    return {entry.name for entry in entries}


def test_catalog_names_every_service_of_the_platform(catalog: Catalog) -> None:
    assert set(catalog.services) == PLATFORM_SERVICES
    assert set(catalog.profiles) == {"custodial-wallet", "lending", "staking", "rwa", "full"}
    assert set(catalog.edge) == {EDGE_CALLER, *BFFS}


def test_ports_are_unique_across_grpc_and_metrics(catalog: Catalog) -> None:
    ports = [port for entry in catalog.services.values() for port in (entry.port, entry.metrics_port)]
    assert len(ports) == len(set(ports))
    assert all(entry.metrics_port == entry.port + 1000 for entry in catalog.services.values())


def test_every_call_names_another_existing_service(catalog: Catalog) -> None:
    for entry in catalog.services.values():
        assert entry.name not in entry.calls, entry.name
        assert set(entry.calls) <= set(catalog.services), entry.name


def test_grpc_service_names_follow_the_package_layout(catalog: Catalog) -> None:
    for entry in catalog.services.values():
        package = entry.name.replace("-", "_")
        assert entry.grpc_service.startswith(f"finmesh.{package}.v1."), entry.name
        assert entry.package == f"svc.{package}"


def test_custodial_wallet_profile_matches_the_architecture(catalog: Catalog) -> None:
    required = names(catalog.profile("custodial-wallet", with_optional=False))
    everything = names(catalog.profile("custodial-wallet"))
    assert required == CUSTODIAL_WALLET_REQUIRED
    assert everything == CUSTODIAL_WALLET_REQUIRED | CUSTODIAL_WALLET_OPTIONAL


@pytest.mark.parametrize(
    ("profile", "core"),
    [
        ("lending", {"lending", "interest-engine", "ledger", "account", "wallet"}),
        ("staking", {"staking", "interest-engine", "ledger", "account", "wallet"}),
        ("rwa", {"rwa", "kyc", "settlement", "audit", "ledger", "account"}),
    ],
)
def test_business_profiles_start_their_business_services(
    catalog: Catalog, profile: str, core: set[str]
) -> None:
    services = names(catalog.profile(profile))
    assert core <= services
    assert {"user", "auth", *BFFS} <= services
    # A profile starts only its services: nothing of the custodial wallet's chain side.
    assert not {"custody", "chain-gateway", "deposit", "withdraw"} & services


def test_full_profile_is_every_service_in_catalog_order(catalog: Catalog) -> None:
    assert [entry.name for entry in catalog.profile("full")] == list(catalog.services)


def test_allowed_callers_are_the_reverse_of_calls_plus_the_edge(catalog: Catalog) -> None:
    for callee in catalog.services:
        expected = {entry.name for entry in catalog.services.values() if callee in entry.calls}
        assert catalog.allowed_callers(callee) == frozenset(expected | {EDGE_CALLER})
    assert catalog.allowed_callers("custody") == {
        "wallet",
        "deposit",
        "withdraw",
        "reconciliation",
        EDGE_CALLER,
    }
    assert "staking" not in catalog.allowed_callers("custody")


def test_unknown_names_are_refused(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match="unknown service 'nope'"):
        catalog.service("nope")
    with pytest.raises(CatalogError, match="unknown service"):
        catalog.allowed_callers("nope")
    with pytest.raises(CatalogError, match="unknown profile 'nope'"):
        catalog.profile("nope")


VALID_SERVICE = "a: {domain: d, port: 50000, grpc_service: finmesh.a.v1.AService, calls: [], profiles: [p]}"


@pytest.mark.parametrize(
    ("services", "message"),
    [
        (VALID_SERVICE + "\n  b: {domain: d, port: 50000, grpc_service: finmesh.b.v1.B}", "port 50000"),
        (VALID_SERVICE + "\n  b: {domain: d, port: 49000, grpc_service: finmesh.b.v1.B}", "port 50000"),
        (
            "a: {domain: d, port: 50000, grpc_service: finmesh.a.v1.A, calls: [ghost]}",
            "unknown service 'ghost'",
        ),
        ("a: {domain: d, port: 50000, grpc_service: finmesh.a.v1.A, profiles: [ghost]}", "unknown profile"),
        ("a: {domain: d, grpc_service: finmesh.a.v1.A}", "missing field 'port'"),
    ],
)
def test_an_inconsistent_catalog_does_not_load(tmp_path: Path, services: str, message: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(f"version: 1\nprofiles: {{p: profile}}\nservices:\n  {services}\n")
    with pytest.raises(CatalogError, match=message):
        catalog_module.load(path)


def test_cli_prints_the_catalog_as_json(capsys: pytest.CaptureFixture[str], catalog: Catalog) -> None:
    assert main(["catalog", "--json", "--profile", "custodial-wallet"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["profile"] == "custodial-wallet"
    assert {service["name"] for service in document["services"]} == (
        CUSTODIAL_WALLET_REQUIRED | CUSTODIAL_WALLET_OPTIONAL
    )
    custody = next(service for service in document["services"] if service["name"] == "custody")
    assert custody["port"] == 50202 and custody["metrics_port"] == 51202
    assert custody["callers"] == sorted(catalog.allowed_callers("custody"))


def test_cli_prints_the_catalog_as_a_table(capsys: pytest.CaptureFixture[str], catalog: Catalog) -> None:
    assert main(["catalog"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SERVICE", "DOMAIN", "PORT", "METRICS", "CALLERS", "PROFILES"]
    rows = {line.split()[0]: line for line in lines[1 : 1 + len(catalog.services)]}
    assert set(rows) == set(catalog.services)
    assert "custodial-wallet(optional)" in rows["kyc"]
    assert any(line.startswith("custodial-wallet") for line in lines)


def test_cli_refuses_an_unknown_profile_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "--profile", "nope"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "unknown profile 'nope'" in captured.err
