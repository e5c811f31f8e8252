"""The withdrawal form's context through the gRPC contract, in front of a real withdraw service
(limits at the caller's KYC level, fee, whitelist) and the real account, kyc and auth services: a
withdrawal in flight shows in the balance held and in what is left of the daily limit; an asset
that cannot be withdrawn is refused in the allowance; withdraw down leaves only its section
missing."""

from __future__ import annotations

from finmesh.web_bff.v1 import web_bff_service_pb2 as web

from svc.kit.aggregate import SectionState
from tests.harness.bff_mesh import (
    ETH,
    ETHER,
    WITHDRAW_POLICY,
    WITHDRAWAL_FEE,
    BffStarter,
    Downstream,
    register_caller,
)
from tests.harness.calls import eventually
from tests.harness.identity import free_port
from tests.web_bff.test_dashboard import states

OK, UNAVAILABLE = SectionState.OK, SectionState.UNAVAILABLE
DESTINATION = "0x00000000000000000000000000000000000000c2"
L0_LIMITS = WITHDRAW_POLICY.limits[1]


async def test_withdrawal_context(downstream: Downstream, web_bff: BffStarter) -> None:
    person = await downstream.person()
    await downstream.deposit(person.user_id, ETH, 5 * ETHER)
    entry = await downstream.whitelist(person, DESTINATION, "hardware wallet")
    await downstream.withdraw(person, entry.address_id, 2 * ETHER)
    stub = await web_bff(endpoints={"withdraw": await downstream.withdraw_endpoint()})
    request = web.GetWithdrawalContextRequest(asset=ETH)

    async def hold_shown() -> bool:
        context = await stub.GetWithdrawalContext(request, metadata=person.metadata)
        return context.balance.held == str(2 * ETHER + WITHDRAWAL_FEE)

    # The account service's balances follow the ledger's events a moment after the hold.
    await eventually(hold_shown)
    response = await stub.GetWithdrawalContext(request, metadata=person.metadata)
    sections = states(response)  # type: ignore[arg-type]
    for name in ("BALANCES", "WITHDRAWALS", "KYC", "SECURITY"):
        assert sections[name][0] == OK, (name, sections[name])
    assert (response.asset.id, response.asset.symbol, response.asset.chain, response.asset.decimals) == (
        ETH,
        "ETH",
        "ethereum",
        18,
    )
    assert response.balance.available == str(3 * ETHER - WITHDRAWAL_FEE)
    assert response.balance.total == str(5 * ETHER)
    assert (response.fee.asset, response.fee.amount) == (ETH, str(WITHDRAWAL_FEE))
    assert response.minimum_amount.amount == str(WITHDRAW_POLICY.min_amount)
    allowance = response.allowance
    assert allowance.allowed and not allowance.denial_message
    assert allowance.per_transaction_max.amount == str(L0_LIMITS.max_amount)
    remaining = int(allowance.daily_remaining.amount)
    assert (
        L0_LIMITS.daily_limit - 2 * ETHER - WITHDRAWAL_FEE <= remaining <= L0_LIMITS.daily_limit - 2 * ETHER
    )
    assert not allowance.HasField("monthly_remaining")
    assert [(a.address_id, a.label, a.address.address, a.usable) for a in response.addresses] == [
        (entry.address_id, "hardware wallet", DESTINATION, True)
    ]
    assert response.step_up_required and not response.two_factor_setup_required

    usdc = await stub.GetWithdrawalContext(
        web.GetWithdrawalContextRequest(asset="ethereum:USDC"), metadata=person.metadata
    )
    assert (
        not usdc.allowance.allowed and usdc.allowance.denial_message == "USDC on ethereum cannot be withdrawn"
    )
    assert usdc.balance.total == "0" and not usdc.HasField("fee") and not usdc.addresses

    # A user without 2FA is told to set it up; withdraw down leaves only its section missing.
    newcomer = await register_caller(downstream)
    down = await web_bff(endpoints={"withdraw": f"127.0.0.1:{free_port()}"})
    degraded = await down.GetWithdrawalContext(request, metadata=newcomer.metadata)
    sections = states(degraded)  # type: ignore[arg-type]
    assert sections["WITHDRAWALS"] == (UNAVAILABLE, "withdraw is unavailable")
    assert sections["BALANCES"][0] == OK and degraded.balance.total == "0"
    assert not degraded.HasField("allowance") and not degraded.addresses
    assert degraded.two_factor_setup_required and not degraded.step_up_required
