"""The AuthorizationPolicies allow exactly the catalog's edges, and follow the catalog when it changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from svc.kit.catalog import EDGE_CALLER, Catalog, load
from tests.deploy.conftest import NAMESPACE, Manifest, Render, objects, regenerate
from tools.deploy import paths


def allowed(manifest: Manifest) -> dict[str, set[str]]:
    """Service -> the service accounts its ALLOW policy names."""
    found: dict[str, set[str]] = {}
    for name, policy in objects(manifest, "AuthorizationPolicy").items():
        if not name.endswith("-callers") or policy["metadata"]["namespace"] != NAMESPACE:
            continue
        assert policy["spec"]["action"] == "ALLOW"
        principals = {
            principal
            for rule in policy["spec"]["rules"]
            for source in rule["from"]
            for principal in source["source"]["principals"]
        }
        prefix = f"cluster.local/ns/{NAMESPACE}/sa/"
        found[name.removesuffix("-callers")] = {
            p.removeprefix(prefix) for p in principals if p.startswith(prefix)
        }
    return found


def expected_edges(catalog: Catalog, profile: str) -> dict[str, set[str]]:
    deployed = {entry.name for entry in catalog.profile(profile)}
    return {
        name: {c for c in catalog.allowed_callers(name) if c in deployed or c == EDGE_CALLER}
        for name in deployed
    }


@pytest.mark.parametrize("profile", ["custodial-wallet", "lending", "staking", "rwa", "full"])
def test_policies_allow_exactly_the_catalog_edges(profile: str, render: Render, catalog: Catalog) -> None:
    policies = allowed(render(profile))
    expected = expected_edges(catalog, profile)
    assert set(policies) == set(expected) | {"gateway"}
    for name, callers in expected.items():
        assert policies[name] == callers, name


def test_default_deny_and_strict_mtls(render: Render) -> None:
    manifest = render("full")
    deny = objects(manifest, "AuthorizationPolicy")["allow-nothing"]
    assert deny["spec"] == {}
    assert objects(manifest, "PeerAuthentication")["default"]["spec"] == {"mtls": {"mode": "STRICT"}}


def test_policy_paths_name_the_service(render: Render, catalog: Catalog) -> None:
    policies = objects(render("full"), "AuthorizationPolicy")
    for entry in catalog.services.values():
        operation: dict[str, Any] = policies[f"{entry.name}-callers"]["spec"]["rules"][0]["to"][0][
            "operation"
        ]
        assert operation == {"ports": [str(entry.port)], "paths": [f"/{entry.grpc_service}/*"]}


def test_a_new_edge_in_the_catalog_changes_the_policy(
    tmp_path: Path, chart_copy: Path, render: Render
) -> None:
    raw = yaml.safe_load(paths.CATALOG.read_text())
    assert "audit" not in raw["services"]["ledger"]["calls"]
    raw["services"]["ledger"]["calls"].append("audit")
    changed_file = tmp_path / "catalog.yaml"
    changed_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    changed = load(changed_file)
    regenerate(changed, chart_copy)

    before = allowed(render("full"))
    after = allowed(render("full", chart=chart_copy))
    assert "ledger" not in before["audit"]
    assert after["audit"] == before["audit"] | {"ledger"}
    assert {name: callers for name, callers in after.items() if name != "audit"} == {
        name: callers for name, callers in before.items() if name != "audit"
    }
    assert after == expected_edges(changed, "full") | {"gateway": set()}


def test_retries_only_for_read_only_methods(render: Render, catalog: Catalog) -> None:
    from tools.deploy.rpcs import read_only_methods

    read_only = read_only_methods(paths.DESCRIPTOR_SET)
    services = objects(render("full"), "VirtualService")
    for entry in catalog.services.values():
        routes = {route["name"]: route for route in services[entry.name]["spec"]["http"]}
        assert routes["default"]["retries"] == {"attempts": 0}
        retried = {match["uri"]["exact"] for match in routes.get("read-only", {}).get("match", [])}
        assert retried == {f"/{entry.grpc_service}/{method}" for method in read_only[entry.grpc_service]}
        assert all(route["timeout"] == "5s" for route in routes.values())


def test_circuit_breaking_matches_the_architecture(render: Render) -> None:
    rule = objects(render("full"), "DestinationRule")["ledger"]["spec"]["trafficPolicy"]
    assert rule["outlierDetection"]["baseEjectionTime"] == "30s"
    assert rule["tls"] == {"mode": "ISTIO_MUTUAL"}
    breaker = objects(render("full"), "EnvoyFilter")["finmesh-failure-percentage"]["spec"]["configPatches"][0]
    assert breaker["patch"]["value"]["outlier_detection"]["failure_percentage_threshold"] == 50
