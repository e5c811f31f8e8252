"""Each profile deploys exactly the catalog's services for it, each with all of its objects."""

from __future__ import annotations

import pytest

from svc.kit.catalog import Catalog
from tests.deploy.conftest import Render, objects

PER_SERVICE = ("ServiceAccount", "Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler")
PROFILES = ("custodial-wallet", "lending", "staking", "rwa", "full")


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_deploys_exactly_its_services(profile: str, render: Render, catalog: Catalog) -> None:
    manifest = render(profile)
    expected = {entry.name for entry in catalog.profile(profile)} | {"gateway"}
    for kind in PER_SERVICE:
        found = set(objects(manifest, kind)) - {"finmesh-migrate"}  # the migration Jobs' hook account
        assert found == expected, kind
    jobs = {name.removesuffix("-migrate") for name in objects(manifest, "Job")}
    assert jobs == expected - {"gateway"}
    assert set(objects(manifest, "DestinationRule")) == expected - {"gateway"}


@pytest.mark.parametrize("profile", PROFILES[:-1])
def test_optional_services_can_be_left_out(profile: str, render: Render, catalog: Catalog) -> None:
    manifest = render(profile, settings=("deployOptional=false",))
    required = {entry.name for entry in catalog.profile(profile, with_optional=False)}
    assert set(objects(manifest, "Deployment")) == required | {"gateway"}
    for policy in objects(manifest, "AuthorizationPolicy").values():
        for rule in policy["spec"].get("rules", []):
            for source in rule.get("from", []):
                for principal in source["source"].get("principals", []):
                    caller = principal.rsplit("/", 1)[-1]
                    assert caller in required | {"gateway", "istio-ingressgateway-service-account"}


def test_values_files_are_up_to_date() -> None:
    from tools.deploy.__main__ import main

    assert main(["--check"]) == 0, "run '.venv/bin/python -m tools.deploy' and commit"
