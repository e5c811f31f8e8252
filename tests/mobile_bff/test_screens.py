"""The mobile home and asset screens through the gRPC contract, in front of the real user, kyc,
account, ledger and notification services: every section filled, and a failing, stalled or
not-yet-existing downstream (wallet, deposit) leaving only its own section missing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from finmesh.mobile_bff.v1 import mobile_bff_service_pb2 as mobile

from svc.kit.aggregate import SectionState
from svc.mobile_bff.config import AppRelease, NoticeSettings
from tests.harness.bff_mesh import BffStarter, Downstream, register_caller
from tests.harness.calls import refused
from tests.harness.identity import free_port

OK, UNAVAILABLE, DISABLED = SectionState.OK, SectionState.UNAVAILABLE, SectionState.DISABLED
L0 = 1


def states(sections: object) -> dict[str, tuple[int, str]]:
    return {
        mobile.Section.Name(status.section).removeprefix("SECTION_"): (status.state, status.message)
        for status in sections  # type: ignore[attr-defined]
    }


@pytest.mark.embedded
async def test_home(downstream: Downstream, mobile_bff: BffStarter) -> None:
    caller = await register_caller(downstream, "Jo")
    await downstream.deposit(caller.user_id, "ethereum:USDC", 1_500_000)
    await downstream.notify(caller.user_id, "1")
    await downstream.inbox_holds(caller.metadata, 1)
    stub = await mobile_bff()

    response = await stub.GetHome(mobile.GetHomeRequest(), metadata=caller.metadata)

    sections = states(response.sections)
    for name in ("PROFILE", "KYC", "BALANCES", "ACTIVITY", "NOTIFICATIONS"):
        assert sections[name][0] == OK, (name, sections[name])
    assert sections["VALUATIONS"][0] == DISABLED and sections["POSITIONS"][0] == DISABLED
    assert response.display_name == "Jo"
    assert [(b.asset_id, b.symbol, b.chain, b.decimals, b.total, b.available) for b in response.balances] == [
        ("ethereum:USDC", "USDC", "ethereum", 6, "1500000", "1500000")
    ]
    assert response.kyc.level == L0 and not response.kyc.in_review and not response.kyc.action_required
    assert response.kyc.text
    assert not response.alerts
    assert response.unread_notification_count == 1
    assert [(row.kind, row.status, row.amount.amount) for row in response.recent_activity] == [
        (mobile.ACTIVITY_KIND_DEPOSIT, mobile.ACTIVITY_STATUS_COMPLETED, "1500000")
    ]


async def test_home_with_notification_down(downstream: Downstream, mobile_bff: BffStarter) -> None:
    caller = await register_caller(downstream)
    await downstream.deposit(caller.user_id, "ethereum:ETH", 3)
    stub = await mobile_bff(endpoints={"notification": f"127.0.0.1:{free_port()}"})
    response = await stub.GetHome(mobile.GetHomeRequest(), metadata=caller.metadata)
    sections = states(response.sections)
    assert sections["NOTIFICATIONS"] == (UNAVAILABLE, "notification is unavailable")
    assert response.unread_notification_count == 0
    assert [b.total for b in response.balances] == ["3"] and sections["KYC"][0] == OK


async def test_home_with_account_stalled(downstream: Downstream, mobile_bff: BffStarter) -> None:
    caller = await register_caller(downstream)
    stub = await mobile_bff(endpoints={"account": downstream.stall.address})
    started = time.monotonic()
    response = await stub.GetHome(mobile.GetHomeRequest(), metadata=caller.metadata)
    assert time.monotonic() - started < 3.5
    sections = states(response.sections)
    assert sections["BALANCES"] == (UNAVAILABLE, "account did not answer within 1500 ms")
    assert sections["ACTIVITY"] == (UNAVAILABLE, "account did not answer within 1500 ms")
    assert not response.balances and not response.recent_activity
    assert sections["PROFILE"][0] == OK and sections["NOTIFICATIONS"][0] == OK


async def test_asset_detail_without_wallet_and_deposit(
    downstream: Downstream, mobile_bff: BffStarter
) -> None:
    caller = await register_caller(downstream)
    await downstream.deposit(caller.user_id, "ethereum:ETH", 11)
    await downstream.deposit(caller.user_id, "ethereum:USDC", 5)
    stub = await mobile_bff()

    response = await stub.GetAssetDetail(
        mobile.GetAssetDetailRequest(asset_id="ethereum:ETH"), metadata=caller.metadata
    )

    sections = states(response.sections)
    assert sections["BALANCES"][0] == OK and sections["ACTIVITY"][0] == OK, sections
    # wallet and deposit do not exist yet: their placeholders answer UNIMPLEMENTED.
    assert sections["DEPOSIT_ADDRESS"] == (DISABLED, "wallet/deposit does not serve this yet")
    assert not response.HasField("deposit")
    assert response.asset.id == "ethereum:ETH" and response.asset.decimals == 18
    assert (response.balance.total, response.held, response.pending) == ("11", "0", "0")
    assert [row.amount.amount for row in response.recent_activity] == ["11"]

    undeployed = await mobile_bff(endpoints={"wallet": f"127.0.0.1:{free_port()}"})
    response = await undeployed.GetAssetDetail(
        mobile.GetAssetDetailRequest(asset_id="ethereum:USDC"), metadata=caller.metadata
    )
    sections = states(response.sections)
    assert sections["DEPOSIT_ADDRESS"][0] == UNAVAILABLE
    assert response.balance.total == "5"


async def test_refusals(downstream: Downstream, mobile_bff: BffStarter) -> None:
    caller = await register_caller(downstream)
    stub = await mobile_bff()
    await refused(stub.GetHome(mobile.GetHomeRequest()), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    await refused(
        stub.GetAssetDetail(mobile.GetAssetDetailRequest(asset_id="not an asset"), metadata=caller.metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        stub.ListActivity(mobile.ListActivityRequest()), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"
    )
    await refused(
        stub.GetBootstrap(mobile.GetBootstrapRequest(platform=mobile.PLATFORM_IOS, app_version="1.0")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_bootstrap_before_login(mobile_bff: BffStarter) -> None:
    stub = await mobile_bff()
    current = await stub.GetBootstrap(
        mobile.GetBootstrapRequest(platform=mobile.PLATFORM_IOS, app_version="1.0.0")
    )
    assert (current.minimum_app_version, current.latest_app_version, current.update_required) == (
        "1.0.0",
        "1.0.0",
        False,
    )
    assert list(current.enabled_features) == [
        mobile.FEATURE_WALLET,
        mobile.FEATURE_KYC,
        mobile.FEATURE_LENDING,
        mobile.FEATURE_STAKING,
        mobile.FEATURE_RWA,
        mobile.FEATURE_NOTIFICATIONS,
    ]
    assert [(a.id, a.symbol, a.chain, a.decimals) for a in current.supported_assets] == [
        ("ethereum:ETH", "ETH", "ethereum", 18),
        ("ethereum:USDC", "USDC", "ethereum", 6),
        ("ethereum:USDT", "USDT", "ethereum", 6),
    ]
    assert not current.HasField("valuation_asset") and not current.notices
    assert current.terms_version and current.support_contact

    now = datetime.now(UTC)
    configured = await mobile_bff(
        product_profile="custodial-wallet",
        app_releases={"android": AppRelease(minimum_version="2.1.0", latest_version="2.10.0")},
        supported_assets={"ethereum:ETH": 18, "polygon:POL": 18},
        valuation_asset="ethereum:ETH",
        notices=[
            NoticeSettings(
                severity="warning", title="Maintenance", start_time=now, end_time=now + timedelta(hours=1)
            ),
            NoticeSettings(
                title="Past incident", start_time=now - timedelta(days=2), end_time=now - timedelta(days=1)
            ),
        ],
    )
    old = await configured.GetBootstrap(
        mobile.GetBootstrapRequest(platform=mobile.PLATFORM_ANDROID, app_version="2.0.12")
    )
    assert (old.minimum_app_version, old.latest_app_version, old.update_required) == ("2.1.0", "2.10.0", True)
    newer = await configured.GetBootstrap(
        mobile.GetBootstrapRequest(platform=mobile.PLATFORM_ANDROID, app_version="2.9.0")
    )
    assert not newer.update_required
    assert list(old.enabled_features) == [
        mobile.FEATURE_WALLET,
        mobile.FEATURE_KYC,
        mobile.FEATURE_NOTIFICATIONS,
    ]
    assert [a.id for a in old.supported_assets] == ["ethereum:ETH", "polygon:POL"]
    assert old.valuation_asset.id == "ethereum:ETH" and old.valuation_asset.decimals == 18
    assert [(n.severity, n.title) for n in old.notices] == [(mobile.NOTICE_SEVERITY_WARNING, "Maintenance")]
    assert old.notices[0].end_time.seconds == int((now + timedelta(hours=1)).timestamp())
    await refused(
        configured.GetBootstrap(
            mobile.GetBootstrapRequest(platform=mobile.PLATFORM_IOS, app_version="2.9.0")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_activity_list(downstream: Downstream, mobile_bff: BffStarter) -> None:
    caller = await register_caller(downstream)
    for asset, amount in (("ethereum:ETH", 1), ("ethereum:USDC", 2), ("ethereum:ETH", 3)):
        await downstream.deposit(caller.user_id, asset, amount)
    stub = await mobile_bff()
    first = await stub.ListActivity(mobile.ListActivityRequest(page_size=2), metadata=caller.metadata)
    assert [(row.amount.asset, row.amount.amount) for row in first.rows] == [
        ("ethereum:ETH", "3"),
        ("ethereum:USDC", "2"),
    ]
    rest = await stub.ListActivity(
        mobile.ListActivityRequest(page_size=2, page_token=first.next_page_token), metadata=caller.metadata
    )
    assert [row.amount.amount for row in rest.rows] == ["1"] and not rest.next_page_token
    eth = await stub.ListActivity(
        mobile.ListActivityRequest(asset_id="ethereum:ETH"), metadata=caller.metadata
    )
    assert [row.amount.amount for row in eth.rows] == ["3", "1"]
    transfers = await stub.ListActivity(
        mobile.ListActivityRequest(kind=mobile.ACTIVITY_KIND_TRANSFER), metadata=caller.metadata
    )
    assert not transfers.rows and [s.state for s in transfers.sections] == [OK]
