"""The admin console views through the gRPC contract, in front of the real user, auth, kyc, account
and ledger services: staff only (real tokens of the auth service), every section of the user
overview, and each failing, stalled or not-yet-existing downstream (deposit, withdraw) leaving its
own section missing, named in `sections`, while the rest is served."""

from __future__ import annotations

import uuid

import grpc
from finmesh.admin_bff.v1 import admin_bff_service_pb2 as admin
from finmesh.common.v1 import enums_pb2

from svc.kit import catalog
from svc.kit.aggregate import SectionState
from tests.harness.bff_mesh import BffStarter, Downstream, register_caller
from tests.harness.calls import refused
from tests.harness.identity import bearer, free_port

OK, UNAVAILABLE, DISABLED = SectionState.OK, SectionState.UNAVAILABLE, SectionState.DISABLED
HEALTHY, DEGRADED, UNHEALTHY = (
    admin.HEALTH_STATE_HEALTHY,
    admin.HEALTH_STATE_DEGRADED,
    admin.HEALTH_STATE_UNHEALTHY,
)
L0 = 1


def states(sections: object) -> dict[str, tuple[int, str]]:
    return {
        admin.Section.Name(status.section).removeprefix("SECTION_"): (status.state, status.message)
        for status in sections  # type: ignore[attr-defined]
    }


async def staff(downstream: Downstream) -> tuple[tuple[str, str], ...]:
    """A real access token of the bootstrap admin (role admin)."""
    return bearer(await downstream.identity.admin_token())


async def test_user_overview(downstream: Downstream, admin_bff: BffStarter) -> None:
    subject = await register_caller(downstream, "Max")
    await downstream.deposit(subject.user_id, "ethereum:ETH", 42)
    stub = await admin_bff()

    response = await stub.GetUserOverview(
        admin.GetUserOverviewRequest(user_id=subject.user_id), metadata=await staff(downstream)
    )

    sections = states(response.sections)
    for name in ("USERS", "COMPLIANCE", "BALANCES", "AUTH"):
        assert sections[name][0] == OK, (name, sections[name])
    # deposit and withdraw do not exist yet: served as placeholders, they answer UNIMPLEMENTED.
    assert sections["ACTIVITY"] == (DISABLED, "deposit/withdraw does not serve this yet")
    assert sections["NOTIFICATIONS"][0] == DISABLED and sections["APPROVALS"][0] == DISABLED
    assert not response.recent_activity
    assert response.user.user_id == subject.user_id
    assert response.user.email == subject.email
    assert response.user.display_name == "Max"
    assert response.user.status == admin.USER_STATUS_ACTIVE
    assert response.user.kyc_level == L0
    assert response.compliance.kyc_level == L0
    assert [(row.asset.id, row.available, row.held, row.frozen) for row in response.balances] == [
        ("ethereum:ETH", "42", "0", "0")
    ]
    assert len(response.sessions) == 1 and response.sessions[0].login_ip
    assert [login.outcome for login in response.recent_logins] == ["SUCCEEDED"]
    assert not response.api_keys


async def test_deposit_and_withdraw_not_deployed(downstream: Downstream, admin_bff: BffStarter) -> None:
    subject = await register_caller(downstream)
    closed = {"deposit": f"127.0.0.1:{free_port()}", "withdraw": f"127.0.0.1:{free_port()}"}
    stub = await admin_bff(endpoints=closed)
    response = await stub.GetUserOverview(
        admin.GetUserOverviewRequest(user_id=subject.user_id), metadata=await staff(downstream)
    )
    sections = states(response.sections)
    assert sections["ACTIVITY"] == (UNAVAILABLE, "deposit/withdraw is unavailable")
    assert sections["USERS"][0] == OK and sections["BALANCES"][0] == OK


async def test_outside_the_profile_activity_is_disabled(
    downstream: Downstream, admin_bff: BffStarter
) -> None:
    subject = await register_caller(downstream)
    stub = await admin_bff(product_profile="lending")
    response = await stub.GetUserOverview(
        admin.GetUserOverviewRequest(user_id=subject.user_id), metadata=await staff(downstream)
    )
    assert states(response.sections)["ACTIVITY"] == (
        DISABLED,
        "deposit, withdraw not part of this deployment",
    )


async def test_stalled_kyc_leaves_compliance_missing(downstream: Downstream, admin_bff: BffStarter) -> None:
    subject = await register_caller(downstream)
    stub = await admin_bff(endpoints={"kyc": downstream.stall.address}, downstream_deadline_s=1.0)
    response = await stub.GetUserOverview(
        admin.GetUserOverviewRequest(user_id=subject.user_id), metadata=await staff(downstream)
    )
    sections = states(response.sections)
    assert sections["COMPLIANCE"] == (UNAVAILABLE, "kyc did not answer within 1000 ms")
    assert not response.HasField("compliance") and response.user.kyc_level == 0
    assert response.user.user_id == subject.user_id and sections["AUTH"][0] == OK


async def test_unknown_user_is_not_found(downstream: Downstream, admin_bff: BffStarter) -> None:
    stub = await admin_bff()
    await refused(
        stub.GetUserOverview(
            admin.GetUserOverviewRequest(user_id=str(uuid.uuid4())), metadata=await staff(downstream)
        ),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )


async def test_end_users_are_refused_every_view(downstream: Downstream, admin_bff: BffStarter) -> None:
    caller = await register_caller(downstream)
    stub = await admin_bff()
    calls = (
        lambda metadata: stub.GetUserOverview(
            admin.GetUserOverviewRequest(user_id=caller.user_id), metadata=metadata
        ),
        lambda metadata: stub.SearchUsers(admin.SearchUsersRequest(query=caller.email), metadata=metadata),
        lambda metadata: stub.GetConsoleHome(admin.GetConsoleHomeRequest(), metadata=metadata),
        lambda metadata: stub.ListPendingApprovals(admin.ListPendingApprovalsRequest(), metadata=metadata),
        lambda metadata: stub.GetSystemHealth(admin.GetSystemHealthRequest(), metadata=metadata),
    )
    for make in calls:
        info = await refused(make(caller.metadata), grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
        assert info.metadata["required_roles"] == "admin,approver,auditor,operator,support"
        await refused(make(()), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_search_users_with_compliance(downstream: Downstream, admin_bff: BffStarter) -> None:
    subject = await register_caller(downstream, "Searchable")
    stub = await admin_bff()
    metadata = await staff(downstream)
    response = await stub.SearchUsers(admin.SearchUsersRequest(query=subject.email), metadata=metadata)
    assert [(row.user_id, row.kyc_level, row.display_name) for row in response.users] == [
        (subject.user_id, L0, "Searchable")
    ]
    assert [(s.section, s.state) for s in response.sections] == [
        (admin.SECTION_USERS, OK),
        (admin.SECTION_COMPLIANCE, OK),
    ]
    filtered = await stub.SearchUsers(
        admin.SearchUsersRequest(query=subject.email, kyc_level=2), metadata=metadata
    )
    assert not filtered.users

    down = await admin_bff(endpoints={"kyc": f"127.0.0.1:{free_port()}"})
    degraded = await down.SearchUsers(admin.SearchUsersRequest(query=subject.email), metadata=metadata)
    assert [(row.user_id, row.kyc_level) for row in degraded.users] == [(subject.user_id, 0)]
    assert states(degraded.sections)["COMPLIANCE"] == (UNAVAILABLE, "kyc is unavailable")
    # A filter on the KYC level cannot be applied without the kyc service.
    await refused(
        down.SearchUsers(admin.SearchUsersRequest(query=subject.email, kyc_level=L0), metadata=metadata),
        grpc.StatusCode.UNAVAILABLE,
        "DEPENDENCY_UNAVAILABLE",
    )


async def test_system_health(downstream: Downstream, admin_bff: BffStarter) -> None:
    # admin (optional in the profiles) does not exist yet; the chain gateway stalls.
    endpoints = {"admin": f"127.0.0.1:{free_port()}", "chain-gateway": downstream.stall.address}
    stub = await admin_bff(product_profile="custodial-wallet", endpoints=endpoints, downstream_deadline_s=1.0)
    metadata = await staff(downstream)

    response = await stub.GetSystemHealth(admin.GetSystemHealthRequest(), metadata=metadata)

    services = {service.service: service for service in response.services}
    assert list(services) == list(catalog.default().services)
    for name in ("user", "auth", "kyc", "ledger", "account", "deposit", "withdraw", "admin-bff"):
        assert (services[name].state, services[name].ready_instances) == (HEALTHY, 1), services[name]
    for name in ("lending", "staking", "rwa", "audit", "report"):
        assert services[name].state == admin.HEALTH_STATE_DISABLED, name
    # custody and wallet are no edges of admin-bff: not checked from here.
    assert services["custody"].state == admin.HEALTH_STATE_UNSPECIFIED
    assert (services["admin"].state, services["admin"].ready_instances) == (UNHEALTHY, 0)
    assert services["chain-gateway"].state == UNHEALTHY
    sections = states(response.sections)
    assert sections["SERVICES"][0] == OK
    assert sections["CHAINS"] == (UNAVAILABLE, "chain-gateway did not answer within 1000 ms")
    for name in ("EVENT_CONSUMERS", "WALLETS", "RECONCILIATION", "NOTIFICATIONS"):
        assert sections[name][0] == DISABLED and sections[name][1], name
    # The chain gateway is core to the custodial wallet (deposits and withdrawals).
    assert response.overall == UNHEALTHY and response.product_profile == "custodial-wallet"
    assert not response.chains

    # Staking deploys no chain gateway; only the optional admin service is down.
    staking = await admin_bff(product_profile="staking", endpoints=endpoints)
    degraded = await staking.GetSystemHealth(admin.GetSystemHealthRequest(), metadata=metadata)
    assert degraded.overall == DEGRADED
    assert states(degraded.sections)["CHAINS"] == (DISABLED, "chain-gateway not part of this deployment")

    # The ledger is core to every profile: down, the platform is unhealthy; the home says why.
    down = await admin_bff(
        product_profile="staking", endpoints={**endpoints, "ledger": f"127.0.0.1:{free_port()}"}
    )
    home = await down.GetConsoleHome(admin.GetConsoleHomeRequest(), metadata=metadata)
    assert home.health == UNHEALTHY
    assert set(home.health_reasons) == {
        "ledger health check failed: UNAVAILABLE",
        "admin health check failed: UNAVAILABLE",
    }
    assert home.product_profile == "staking" and list(home.my_roles) == [enums_pb2.ROLE_ADMIN]
