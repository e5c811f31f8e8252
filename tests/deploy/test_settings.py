"""serviceSettings: each service's own configuration reaches that service only, secrets only by
reference, and what the chart renders is what the service's settings class reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewaySettings
from svc.kit.catalog import Catalog
from svc.kit.config import ENV_PREFIX
from tests.deploy.conftest import Manifest, Render, helm_template, objects
from tools.deploy import paths
from tools.deploy.settings import GATEWAY, catalog_settings, describe, settings_class


def containers(manifest: Manifest) -> dict[str, dict[str, Any]]:
    """The first container of every Deployment and Job, by object name."""
    return {
        f"{doc['kind']}/{doc['metadata']['name']}": doc["spec"]["template"]["spec"]["containers"][0]
        for doc in manifest
        if doc["kind"] in ("Deployment", "Job")
    }


def environment(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


def pod(manifest: Manifest, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = objects(manifest, "Deployment")[name]["spec"]["template"]["spec"]
    return spec


def test_no_secret_is_ever_a_literal(render: Render, catalog: Catalog) -> None:
    described = catalog_settings(catalog)
    for name, container in containers(render("full")).items():
        service = name.split("/", 1)[1].removesuffix("-migrate")
        secret = {ENV_PREFIX + setting for setting in described[service].secret} | {
            "FINMESH_DATABASE_URL",
            "FINMESH_REDIS_URL",
        }
        for variable, item in environment(container).items():
            if variable in secret:
                assert "value" not in item, (name, variable)
                assert set(item["valueFrom"]) == {"secretKeyRef"}, (name, variable)


@pytest.mark.parametrize(
    ("service", "secret"),
    [("withdraw", "finmesh-withdraw-approval-key"), ("deposit", "finmesh-deposit-approval-key")],
)
def test_approval_keys_are_secret_files(render: Render, service: str, secret: str) -> None:
    manifest = render("custodial-wallet")
    spec = pod(manifest, service)
    container = spec["containers"][0]
    env = environment(container)
    assert "FINMESH_APPROVAL_PRIVATE_KEY" not in env
    path = env["FINMESH_APPROVAL_PRIVATE_KEY_FILE"]["value"]
    (mount,) = [m for m in container["volumeMounts"] if str(path).startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret
    assert [item["path"] for item in volume["secret"]["items"]] == [str(path).rsplit("/", 1)[1]]
    assert env["FINMESH_APPROVAL_KEY_ID"]["value"] == service
    # The migration Job runs with the kit's settings only: it never sees the signing key.
    job = containers(manifest)[f"Job/{service}-migrate"]
    assert not [v for v in environment(job) if v.startswith("FINMESH_APPROVAL")]
    assert not [m for m in job["volumeMounts"] if m["mountPath"].startswith("/etc/finmesh/secrets")]


def test_an_approval_key_may_be_a_secret_value_instead(render: Render) -> None:
    manifest = render(
        "custodial-wallet",
        settings=(
            "serviceSettings.withdraw.secretFiles=null",
            "serviceSettings.withdraw.secretSettings.APPROVAL_PRIVATE_KEY.secret=withdraw-key",
            "serviceSettings.withdraw.secretSettings.APPROVAL_PRIVATE_KEY.key=base64",
        ),
    )
    env = environment(pod(manifest, "withdraw")["containers"][0])
    assert env["FINMESH_APPROVAL_PRIVATE_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "withdraw-key", "key": "base64"}
    }
    assert "FINMESH_APPROVAL_PRIVATE_KEY_FILE" not in env


def test_custody_uses_the_cloud_hsm_with_a_secret_pin(render: Render) -> None:
    env = environment(pod(render("custodial-wallet"), "custody")["containers"][0])
    assert env["FINMESH_HSM_MODULE"]["value"] == "/opt/cloudhsm/lib/libcloudhsm_pkcs11.so"
    assert env["FINMESH_HSM_PIN"]["valueFrom"] == {
        "secretKeyRef": {"name": "finmesh-custody-hsm", "key": "pin"}
    }


def test_chain_gateway_chains_come_from_a_secret(render: Render) -> None:
    env = environment(pod(render("custodial-wallet"), "chain-gateway")["containers"][0])
    assert env["FINMESH_CHAINS"]["valueFrom"] == {
        "secretKeyRef": {"name": "finmesh-chain-gateway-chains", "key": "chains.json"}
    }


def test_redis_url_reaches_the_services_that_read_it(render: Render, catalog: Catalog) -> None:
    readers = {name for name, described in catalog_settings(catalog).items() if described.redis}
    assert {"account", "auth", GATEWAY} <= readers
    for name in [*objects(render("full"), "Deployment")]:
        env = environment(pod(render("full"), name)["containers"][0])
        if name in readers:
            assert env["FINMESH_REDIS_URL"]["valueFrom"] == {
                "secretKeyRef": {"name": "finmesh-redis", "key": "url"}
            }
        else:
            assert "FINMESH_REDIS_URL" not in env, name


def test_a_setting_reaches_exactly_its_service(render: Render) -> None:
    manifest = render(
        "full",
        settings=(
            "serviceSettings.withdraw.settings.REQUIRED_APPROVALS=3",
            "serviceSettings.deposit.settings.SCHEDULED_SWEEPS_ENABLED=true",
            "serviceSettings.gateway.settings.USER_BURST=7",
        ),
    )
    expected = {
        "Deployment/withdraw": ("FINMESH_REQUIRED_APPROVALS", "3"),
        "Deployment/deposit": ("FINMESH_SCHEDULED_SWEEPS_ENABLED", "true"),
        "Deployment/gateway": ("FINMESH_USER_BURST", "7"),
    }
    for name, container in containers(manifest).items():
        env = environment(container)
        for owner, (variable, value) in expected.items():
            if name == owner:
                assert env[variable]["value"] == value
            else:
                assert variable not in env, (name, variable)


def test_every_service_reads_the_settings_it_is_given(
    render: Render, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The literal environment of each pod, read by the service's own settings class: the names,
    the JSON and the shapes of values.yaml are what the services accept."""
    manifest = render(
        "custodial-wallet",
        settings=(
            "serviceSettings.withdraw.settings.HOT_WALLETS.ethereum=w-1",
            # Beyond 2^53 and int64: a string, which the service reads as the exact integer.
            "serviceSettings.withdraw.settings.FEE_CAP_PER_GAS=10000000000000000001",
        ),
    )
    classes = {name: settings_class(entry) for name, entry in catalog.services.items()}
    classes[GATEWAY] = GatewaySettings
    read: dict[str, Any] = {}
    for name in objects(manifest, "Deployment"):
        with monkeypatch.context() as patch:
            for variable in [v for v in os.environ if v.startswith(ENV_PREFIX)]:
                patch.delenv(variable)
            for variable, item in environment(pod(manifest, name)["containers"][0]).items():
                if "value" in item:
                    patch.setenv(variable, str(item["value"]))
            read[name] = classes[name]()
    assert read["withdraw"].hot_wallets == {"ethereum": "w-1"}
    assert read["withdraw"].fee_cap_per_gas == 10**19 + 1
    assert read["withdraw"].chain_ids["ethereum"] == 1
    assert str(read["withdraw"].approval_private_key_file).startswith("/etc/finmesh/secrets/")
    assert read["custody"].hsm_configured
    assert set(read["custody"].approval_issuers) == {"withdraw", "deposit"}


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        (
            (
                "serviceSettings.withdraw.secretSettings.APPROVAL_PRIVATE_KEY.secret=k",
                "serviceSettings.withdraw.secretSettings.APPROVAL_PRIVATE_KEY.key=k",
            ),
            "APPROVAL_PRIVATE_KEY and APPROVAL_PRIVATE_KEY_FILE are both given",
        ),
        (
            (
                "serviceSettings.deposit.secretSettings.HOT_WALLETS.secret=k",
                "serviceSettings.deposit.secretSettings.HOT_WALLETS.key=k",
            ),
            "HOT_WALLETS is in both settings and secretSettings",
        ),
    ],
)
def test_a_setting_given_twice_is_refused(
    tools: dict[str, Path], settings: tuple[str, ...], complaint: str
) -> None:
    result = helm_template(tools["helm"], "custodial-wallet", paths.CHART_DIR, settings)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_secret_names_are_never_plain(catalog: Catalog) -> None:
    withdraw = describe("withdraw", settings_class(catalog.service("withdraw")))
    assert "APPROVAL_PRIVATE_KEY" in withdraw.secret and "APPROVAL_PRIVATE_KEY" not in withdraw.plain
    assert "APPROVAL_PRIVATE_KEY_FILE" in withdraw.files
    chain_gateway = describe("chain-gateway", settings_class(catalog.service("chain-gateway")))
    assert chain_gateway.secret == ("CHAINS",)
    for described in catalog_settings(catalog).values():
        assert not {"DATABASE_URL", "REDIS_URL", "PORT"} & {*described.plain, *described.referable}
