"""Every pod: gRPC health probes on the service port, non-root, read-only, no capabilities, resources."""

from __future__ import annotations

from typing import Any

from svc.kit.catalog import Catalog
from tests.deploy.conftest import Render, objects


def pod_specs(manifest: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{doc['kind']}/{doc['metadata']['name']}": doc["spec"]["template"]["spec"]
        for doc in manifest
        if doc["kind"] in ("Deployment", "Job")
    }


def test_probes_use_grpc_health_on_the_service_port(render: Render, catalog: Catalog) -> None:
    deployments = objects(render("full"), "Deployment")
    for entry in catalog.services.values():
        container = deployments[entry.name]["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": entry.port}, (entry.name, probe)
        assert container["args"] == ["serve", entry.name]


def test_no_container_runs_as_root(render: Render) -> None:
    for name, spec in pod_specs(render("full")).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert set(container["resources"]) == {"requests", "limits"}, name


def test_migrations_run_before_the_release(render: Render, catalog: Catalog) -> None:
    jobs = objects(render("full"), "Job")
    for entry in catalog.services.values():
        job = jobs[f"{entry.name}-migrate"]
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate", entry.name]


def test_secrets_by_reference_only(render: Render) -> None:
    manifest = render("full")
    assert not objects(manifest, "Secret")
    container = objects(manifest, "Deployment")["ledger"]["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert env["FINMESH_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "finmesh-db-ledger",
        "key": "url",
    }
    assert env["FINMESH_TLS"]["value"] == "false"


def test_spread_across_zones(render: Render) -> None:
    for name, deployment in objects(render("full"), "Deployment").items():
        keys = [c["topologyKey"] for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]]
        assert "topology.kubernetes.io/zone" in keys, name
