"""The web dashboard through the gRPC contract, in front of the real user, auth, kyc, account,
ledger and notification services: every section filled, and each failing, stalled or undeployed
downstream leaving its own section missing, named in `sections`, while the rest is served."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.web_bff.v1 import web_bff_service_pb2 as web

from svc.kit.aggregate import SectionState
from tests.harness.bff_mesh import BffStarter as WebFactory
from tests.harness.bff_mesh import Downstream, register_caller
from tests.harness.calls import refused
from tests.harness.identity import free_port

OK, UNAVAILABLE, DISABLED = SectionState.OK, SectionState.UNAVAILABLE, SectionState.DISABLED
L0 = 1


def states(response: web.GetDashboardResponse) -> dict[str, tuple[int, str]]:
    return {
        web.Section.Name(status.section).removeprefix("SECTION_"): (status.state, status.message)
        for status in response.sections
    }


@pytest.mark.embedded
async def test_full_dashboard(downstream: Downstream, web_bff: WebFactory) -> None:
    caller = await register_caller(downstream, "Erika")
    await downstream.deposit(caller.user_id, "ethereum:ETH", 5 * 10**17)
    await downstream.deposit(caller.user_id, "ethereum:USDC", 250_000_000)
    await downstream.notify(caller.user_id, "1")
    await downstream.notify(caller.user_id, "2")
    await downstream.inbox_holds(caller.metadata, 2)
    stub = await web_bff()

    response = await stub.GetDashboard(
        web.GetDashboardRequest(recent_activity_count=10), metadata=caller.metadata
    )

    sections = states(response)
    for name in ("PROFILE", "KYC", "BALANCES", "ACTIVITY", "NOTIFICATIONS", "SECURITY"):
        assert sections[name][0] == OK, (name, sections[name])
    # No price service exists; lending, staking and rwa positions are not read by this BFF.
    for name in ("VALUATIONS", "LENDING", "STAKING", "RWA"):
        assert sections[name][0] == DISABLED and sections[name][1], (name, sections[name])
    assert response.profile.user_id == caller.user_id
    assert response.profile.display_name == "Erika"
    assert response.profile.email == caller.email
    assert response.profile.status == web.ACCOUNT_STATUS_ACTIVE
    assert response.kyc.level == L0
    assert response.kyc.progress == web.VERIFICATION_PROGRESS_NONE
    assert [(b.asset.id, b.asset.decimals, b.available, b.held, b.total) for b in response.balances] == [
        ("ethereum:ETH", 18, str(5 * 10**17), "0", str(5 * 10**17)),
        ("ethereum:USDC", 6, "250000000", "0", "250000000"),
    ]
    assert not response.HasField("total_valuation")
    activity = [(item.kind, item.amount.asset, item.amount.amount) for item in response.recent_activity]
    assert activity == [
        (web.ACTIVITY_KIND_DEPOSIT, "ethereum:USDC", "250000000"),
        (web.ACTIVITY_KIND_DEPOSIT, "ethereum:ETH", str(5 * 10**17)),
    ]
    assert all(item.activity_id.startswith("account:") for item in response.recent_activity)
    assert all(item.status == web.ACTIVITY_STATUS_COMPLETED for item in response.recent_activity)
    assert response.unread_notification_count == 2
    assert len(response.latest_notifications) == 2
    assert response.security.two_factor_enabled is False
    assert response.security.active_session_count == 1
    assert response.security.active_api_key_count == 0


async def test_recent_activity_count_limits_the_card(downstream: Downstream, web_bff: WebFactory) -> None:
    caller = await register_caller(downstream)
    for amount in (1, 2, 3):
        await downstream.deposit(caller.user_id, "ethereum:ETH", amount)
    stub = await web_bff()
    response = await stub.GetDashboard(
        web.GetDashboardRequest(recent_activity_count=2), metadata=caller.metadata
    )
    assert [item.amount.amount for item in response.recent_activity] == ["3", "2"]
    assert [b.total for b in response.balances] == ["6"]


async def test_kyc_down_leaves_only_its_section_missing(downstream: Downstream, web_bff: WebFactory) -> None:
    caller = await register_caller(downstream)
    await downstream.deposit(caller.user_id, "ethereum:ETH", 7)
    stub = await web_bff(endpoints={"kyc": f"127.0.0.1:{free_port()}"})

    response = await stub.GetDashboard(web.GetDashboardRequest(), metadata=caller.metadata)

    sections = states(response)
    assert sections["KYC"] == (UNAVAILABLE, "kyc is unavailable")
    assert not response.HasField("kyc")
    for name in ("PROFILE", "BALANCES", "ACTIVITY", "NOTIFICATIONS", "SECURITY"):
        assert sections[name][0] == OK, (name, sections[name])
    assert [b.total for b in response.balances] == ["7"]
    assert response.profile.user_id == caller.user_id


async def test_slow_downstream_is_cut_at_its_deadline(downstream: Downstream, web_bff: WebFactory) -> None:
    caller = await register_caller(downstream)
    await downstream.notify(caller.user_id, "9")
    stub = await web_bff(
        endpoints={"notification": downstream.stall.address, "account": downstream.stall.address},
        downstream_deadline_s=1.0,
    )

    started = time.monotonic()
    response = await stub.GetDashboard(web.GetDashboardRequest(), metadata=caller.metadata)
    elapsed = time.monotonic() - started

    assert elapsed < 3.0, elapsed
    sections = states(response)
    for name, peer in (("NOTIFICATIONS", "notification"), ("BALANCES", "account"), ("ACTIVITY", "account")):
        assert sections[name] == (UNAVAILABLE, f"{peer} did not answer within 1000 ms"), sections[name]
    assert response.unread_notification_count == 0 and not response.balances
    for name in ("PROFILE", "KYC", "SECURITY"):
        assert sections[name][0] == OK, (name, sections[name])


async def test_callers_deadline_bounds_the_downstream_calls(
    downstream: Downstream, web_bff: WebFactory
) -> None:
    caller = await register_caller(downstream)
    stub = await web_bff(endpoints={"auth": downstream.stall.address})
    response = await stub.GetDashboard(web.GetDashboardRequest(), metadata=caller.metadata, timeout=1.8)
    sections = states(response)
    state, message = sections["SECURITY"]
    assert state == UNAVAILABLE and message.startswith("auth did not answer within"), message
    assert int(message.split()[-2]) < 1800  # the caller's 1.8 s, not the 2 s cap
    assert sections["PROFILE"][0] == OK


async def test_user_service_down_fails_the_call(downstream: Downstream, web_bff: WebFactory) -> None:
    caller = await register_caller(downstream)
    stub = await web_bff(endpoints={"user": f"127.0.0.1:{free_port()}"})
    info = await refused(
        stub.GetDashboard(web.GetDashboardRequest(), metadata=caller.metadata),
        grpc.StatusCode.UNAVAILABLE,
        "DEPENDENCY_UNAVAILABLE",
    )
    assert info.metadata["service"] == "user"


async def test_outside_the_profile_sections_are_disabled_without_calls(
    downstream: Downstream, web_bff: WebFactory
) -> None:
    caller = await register_caller(downstream)
    # The custodial-wallet profile has notification only as optional (deployed), kyc optional too;
    # the staking profile deploys neither kyc nor notification.
    stub = await web_bff(product_profile="staking", endpoints={"kyc": downstream.stall.address})
    response = await stub.GetDashboard(web.GetDashboardRequest(), metadata=caller.metadata, timeout=5.0)
    sections = states(response)
    assert sections["LENDING"] == (DISABLED, "lending not part of this deployment")
    assert sections["RWA"] == (DISABLED, "rwa not part of this deployment")
    assert sections["STAKING"][0] == DISABLED and "not aggregated" in sections["STAKING"][1]
    assert sections["PROFILE"][0] == OK


async def test_dashboard_needs_a_signed_in_user(downstream: Downstream, web_bff: WebFactory) -> None:
    stub = await web_bff()
    await refused(
        stub.GetDashboard(web.GetDashboardRequest()), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"
    )
    await refused(
        stub.GetDashboard(web.GetDashboardRequest(), metadata=(("authorization", "Bearer not-a-token"),)),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )


async def test_bad_request_is_refused_with_the_field(downstream: Downstream, web_bff: WebFactory) -> None:
    caller = await register_caller(downstream)
    stub = await web_bff()
    await refused(
        stub.GetDashboard(web.GetDashboardRequest(recent_activity_count=21), metadata=caller.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_portfolio_sums_every_account_per_asset(downstream: Downstream, web_bff: WebFactory) -> None:
    caller = await register_caller(downstream)
    for asset, amount in (("ethereum:ETH", 4), ("ethereum:ETH", 6), ("ethereum:USDC", 3)):
        await downstream.deposit(caller.user_id, asset, amount)
    await downstream.accounts.OpenAccount(
        account_service.OpenAccountRequest(
            request_id=f"open-{uuid.uuid4().hex}", user_id=caller.user_id, asset="ethereum:USDT", kind=1
        )
    )
    stub = await web_bff()
    response = await stub.GetPortfolio(web.GetPortfolioRequest(), metadata=caller.metadata)
    sections = states(response)  # type: ignore[arg-type]
    assert sections["BALANCES"][0] == OK
    for name in ("VALUATIONS", "LENDING", "STAKING", "RWA"):
        assert sections[name][0] == DISABLED and sections[name][1], (name, sections[name])
    assert [(b.asset.id, b.asset.symbol, b.available, b.total) for b in response.balances] == [
        ("ethereum:ETH", "ETH", "10", "10"),
        ("ethereum:USDC", "USDC", "3", "3"),
    ]
    assert not response.HasField("net_valuation") and not response.loans
    with_zero = await stub.GetPortfolio(
        web.GetPortfolioRequest(include_zero_balances=True), metadata=caller.metadata
    )
    assert [(b.asset.id, b.total) for b in with_zero.balances] == [
        ("ethereum:ETH", "10"),
        ("ethereum:USDC", "3"),
        ("ethereum:USDT", "0"),
    ]

    down = await web_bff(endpoints={"account": f"127.0.0.1:{free_port()}"})
    degraded = await down.GetPortfolio(web.GetPortfolioRequest(), metadata=caller.metadata)
    assert states(degraded)["BALANCES"] == (UNAVAILABLE, "account is unavailable")  # type: ignore[arg-type]
    assert not degraded.balances
    await refused(
        stub.GetPortfolio(web.GetPortfolioRequest()), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"
    )


async def test_security_overview(downstream: Downstream, web_bff: WebFactory) -> None:
    caller = await register_caller(downstream)
    await downstream.identity.tokens(caller.email)  # a second session
    stub = await web_bff()
    response = await stub.GetSecurityOverview(web.GetSecurityOverviewRequest(), metadata=caller.metadata)
    assert [(s.section, s.state) for s in response.sections] == [(web.SECTION_SECURITY, OK)]
    assert response.summary.active_session_count == 2
    assert sum(1 for session in response.sessions if session.current) == 1
    assert len(response.recent_logins) == 2 and all(login.succeeded for login in response.recent_logins)
    assert response.summary.previous_login_ip == response.recent_logins[0].ip

    down = await web_bff(endpoints={"auth": f"127.0.0.1:{free_port()}"})
    degraded = await down.GetSecurityOverview(web.GetSecurityOverviewRequest(), metadata=caller.metadata)
    assert [(s.section, s.state) for s in degraded.sections] == [(web.SECTION_SECURITY, UNAVAILABLE)]
    assert not degraded.sessions and not degraded.HasField("summary")
