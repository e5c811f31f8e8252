"""Withdrawals through the gRPC contract, with every real peer: paid on a Hardhat node by custody's
SoftHSM2 hot wallet, the ledger agreeing with the chain to the wei."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.common.v1 import enums_pb2, money_pb2
from finmesh.events.v1 import withdraw_events_pb2
from finmesh.withdraw.v1 import withdraw_resources_pb2 as resources
from finmesh.withdraw.v1 import withdraw_service_pb2 as service

from svc.withdraw import store
from svc.withdraw.states import State
from tests.harness.identity import error_info, refused, rid
from tests.withdraw.conftest import (
    AUTO_APPROVAL,
    CUSTODY_CODE,
    ETH,
    ETHER,
    FEE,
    FEE_CODE,
    GAS_CODE,
    Mesh,
    User,
    write_sanctions,
)

CONFIRMED = resources.WITHDRAWAL_STATE_CONFIRMED
BROADCAST = resources.WITHDRAWAL_STATE_BROADCAST
DESTINATION = "0x5555555555555555555555555555555555555555"
STAFF_APPROVAL = auth_resources.STEP_UP_PURPOSE_STAFF_APPROVAL
DENIED = grpc.StatusCode.PERMISSION_DENIED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND
COOL_DOWN_S = 3.0
OTHER_DESTINATION = "0x6666666666666666666666666666666666666666"


def money(amount: int) -> money_pb2.Money:
    return money_pb2.Money(asset=ETH, amount=str(amount))


@pytest.mark.embedded
async def test_an_auto_approved_withdrawal_is_paid_on_chain_and_booked_to_the_wei(mesh: Mesh) -> None:
    person = await mesh.user(deposit=5 * ETHER)
    address = await mesh.whitelist(person, DESTINATION)
    assert address.state == resources.WITHDRAWAL_ADDRESS_STATE_ACTIVE
    hot_before = await mesh.w3.eth.get_balance(mesh.hot_address)  # type: ignore[arg-type]
    destination_before = await mesh.w3.eth.get_balance(DESTINATION)  # type: ignore[arg-type]
    custody_before = await mesh.balance(CUSTODY_CODE)
    amount = ETHER
    withdrawal = await mesh.withdraw(person, address.address_id, amount)
    assert withdrawal.state == resources.WITHDRAWAL_STATE_APPROVED and withdrawal.auto_approved
    assert (withdrawal.fee.amount, withdrawal.total_debit.amount) == (str(FEE), str(amount + FEE))
    assert not withdrawal.hold_id and not withdrawal.HasField("risk"), "staff-only fields"
    # Held at once: the available balance no longer has amount plus fee.
    assert await mesh.available(person) == 5 * ETHER - amount - FEE

    done = await mesh.until_state(withdrawal.withdrawal_id, CONFIRMED)
    receipt = await mesh.w3.eth.get_transaction_receipt(done.tx_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1 and receipt["from"] == mesh.hot_address
    gas = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert (done.network_fee.amount, len(done.transactions)) == (str(gas), 1)
    hot_after = await mesh.w3.eth.get_balance(mesh.hot_address)  # type: ignore[arg-type]
    assert hot_before - hot_after == amount + gas
    assert await mesh.w3.eth.get_balance(DESTINATION) - destination_before == amount  # type: ignore[arg-type]
    # The books: the user paid amount plus fee, custody's asset fell as the hot wallet's coins did,
    # the fee is revenue and the gas an expense.
    assert await mesh.balance(person.ledger_account_id) == 5 * ETHER - amount - FEE
    assert await mesh.available(person) == 5 * ETHER - amount - FEE
    assert custody_before - await mesh.balance(CUSTODY_CODE) == hot_before - hot_after
    assert await mesh.balance(FEE_CODE) == FEE
    assert await mesh.balance(GAS_CODE) == gas
    states = [(t.from_state, t.to_state) for t in done.history]
    assert [to for _, to in states] == [2, 3, 5, 6, 7, 8]
    assert len(await mesh.events(withdraw_events_pb2.WithdrawalConfirmed)) == 1
    assert len(await mesh.signatures()) == 1


async def approve(mesh: Mesh, approver: User, withdrawal_id: str) -> service.ApproveWithdrawalResponse:
    return await mesh.stub.ApproveWithdrawal(
        service.ApproveWithdrawalRequest(
            request_id=rid("approve"),
            withdrawal_id=withdrawal_id,
            step_up_token=await mesh.step_up(approver, STAFF_APPROVAL),
        ),
        metadata=approver.metadata,
    )


async def test_above_the_threshold_two_distinct_approvers_release_it(mesh: Mesh) -> None:
    requester = await mesh.approver()  # an approver too: still never for their own withdrawal
    await mesh.credit(requester, 5 * ETHER)
    first, second, plain = await mesh.approver(), await mesh.approver(), await mesh.user()
    address = await mesh.whitelist(requester, DESTINATION)
    amount = AUTO_APPROVAL + 1
    withdrawal = await mesh.withdraw(requester, address.address_id, amount)
    assert withdrawal.state == resources.WITHDRAWAL_STATE_AWAITING_APPROVAL
    assert withdrawal.required_approvals == 2 and not withdrawal.auto_approved
    await refused(approve(mesh, requester, withdrawal.withdrawal_id), DENIED, "PERMISSION_DENIED")
    await refused(approve(mesh, plain, withdrawal.withdrawal_id), DENIED, "PERMISSION_DENIED")
    once = await approve(mesh, first, withdrawal.withdrawal_id)
    assert once.withdrawal.state == resources.WITHDRAWAL_STATE_AWAITING_APPROVAL
    assert [a.approver_id for a in once.withdrawal.approvals] == [first.user_id]
    await refused(approve(mesh, first, withdrawal.withdrawal_id), PRECONDITION, "ALREADY_EXISTS")
    # Waiting for the second approver's decision: listed for them, not for the first.
    waiting = await mesh.stub.AdminListWithdrawals(
        service.AdminListWithdrawalsRequest(awaiting_my_approval=True), metadata=second.metadata
    )
    assert [w.withdrawal_id for w in waiting.withdrawals] == [withdrawal.withdrawal_id]
    done_by_first = await mesh.stub.AdminListWithdrawals(
        service.AdminListWithdrawalsRequest(awaiting_my_approval=True), metadata=first.metadata
    )
    assert not done_by_first.withdrawals
    twice = await approve(mesh, second, withdrawal.withdrawal_id)
    assert twice.withdrawal.state in (
        resources.WITHDRAWAL_STATE_APPROVED,
        resources.WITHDRAWAL_STATE_SIGNING,
        resources.WITHDRAWAL_STATE_BROADCAST,
    )
    done = await mesh.until_state(withdrawal.withdrawal_id, CONFIRMED)
    assert {a.approver_id for a in done.approvals} == {first.user_id, second.user_id}
    receipt = await mesh.w3.eth.get_transaction_receipt(done.tx_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1
    assert await mesh.balance(requester.ledger_account_id) == 5 * ETHER - amount - FEE
    assert len(await mesh.events(withdraw_events_pb2.WithdrawalDecisionRecorded)) == 2


async def test_cancelling_or_rejecting_before_signing_voids_the_hold(mesh: Mesh) -> None:
    person = await mesh.user(deposit=10 * ETHER)
    approver = await mesh.approver()
    address = await mesh.whitelist(person, DESTINATION)
    waiting = await mesh.withdraw(person, address.address_id, AUTO_APPROVAL)
    assert waiting.state == resources.WITHDRAWAL_STATE_AWAITING_APPROVAL
    assert await mesh.available(person) == 10 * ETHER - AUTO_APPROVAL - FEE
    cancel = service.CancelWithdrawalRequest(request_id=rid("cancel"), withdrawal_id=waiting.withdrawal_id)
    cancelled = (await mesh.stub.CancelWithdrawal(cancel, metadata=person.metadata)).withdrawal
    assert cancelled.state == resources.WITHDRAWAL_STATE_CANCELLED
    assert cancelled.outcome_reason == resources.WITHDRAWAL_OUTCOME_REASON_USER_CANCELLED
    assert (await mesh.stub.CancelWithdrawal(cancel, metadata=person.metadata)).withdrawal == cancelled
    assert await mesh.available(person) == 10 * ETHER
    assert await mesh.balance(person.ledger_account_id) == 10 * ETHER
    # Another user's withdrawal is not theirs to see or cancel.
    stranger = await mesh.user()
    other = service.CancelWithdrawalRequest(request_id=rid("cancel"), withdrawal_id=waiting.withdrawal_id)
    await refused(mesh.stub.CancelWithdrawal(other, metadata=stranger.metadata), NOT_FOUND, "NOT_FOUND")

    second = await mesh.withdraw(person, address.address_id, AUTO_APPROVAL + 5)
    rejected = await mesh.stub.RejectWithdrawal(
        service.RejectWithdrawalRequest(
            request_id=rid("reject"), withdrawal_id=second.withdrawal_id, comment="destination unknown"
        ),
        metadata=approver.metadata,
    )
    assert rejected.withdrawal.state == resources.WITHDRAWAL_STATE_REJECTED
    assert rejected.withdrawal.outcome_reason == resources.WITHDRAWAL_OUTCOME_REASON_APPROVER_REJECTED
    assert await mesh.available(person) == 10 * ETHER

    # Once paid, there is nothing left to cancel.
    paid = await mesh.withdraw(person, address.address_id, ETHER)
    await mesh.until_state(paid.withdrawal_id, CONFIRMED)
    late = service.CancelWithdrawalRequest(request_id=rid("cancel"), withdrawal_id=paid.withdrawal_id)
    await refused(mesh.stub.CancelWithdrawal(late, metadata=person.metadata), PRECONDITION, "INVALID_STATE")
    assert await mesh.balance(person.ledger_account_id) == 9 * ETHER - FEE
    assert len(await mesh.signatures()) == 1
    assert len(await mesh.events(withdraw_events_pb2.WithdrawalCancelled)) == 1
    assert len(await mesh.events(withdraw_events_pb2.WithdrawalRejected)) == 1


async def test_a_new_address_is_usable_only_after_its_cool_down(mesh: Mesh) -> None:
    await mesh.stop_withdraw()
    await mesh.start_withdraw(address_cool_down_s=3600.0)
    person = await mesh.user(deposit=2 * ETHER)
    cooling = await mesh.whitelist(person, OTHER_DESTINATION)
    assert cooling.state == resources.WITHDRAWAL_ADDRESS_STATE_COOLING_DOWN
    request = await mesh.request(person, cooling.address_id, ETHER // 10)
    await refused(
        mesh.stub.CreateWithdrawal(request, metadata=person.metadata), PRECONDITION, "INVALID_STATE"
    )
    assert await mesh.available(person) == 2 * ETHER
    duplicate = mesh.whitelist(person, OTHER_DESTINATION.lower())
    await refused(duplicate, grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS")
    limits = await mesh.stub.GetWithdrawalLimits(
        service.GetWithdrawalLimitsRequest(), metadata=person.metadata
    )
    assert limits.address_cool_down_hours == 1

    # A short cool-down: the address becomes usable (and ACTIVE) once its usable time has passed.
    await mesh.stop_withdraw()
    await mesh.start_withdraw(address_cool_down_s=COOL_DOWN_S)
    address = await mesh.whitelist(person, DESTINATION)
    assert address.state == resources.WITHDRAWAL_ADDRESS_STATE_COOLING_DOWN
    await asyncio.sleep(max(address.usable_time.ToMicroseconds() / 1e6 - time.time(), 0) + 0.3)
    got = await mesh.stub.GetWithdrawalAddress(
        service.GetWithdrawalAddressRequest(address_id=address.address_id), metadata=person.metadata
    )
    assert got.address.state == resources.WITHDRAWAL_ADDRESS_STATE_ACTIVE
    withdrawal = await mesh.withdraw(person, address.address_id, ETHER // 10)
    assert withdrawal.state == resources.WITHDRAWAL_STATE_APPROVED
    removed = await mesh.stub.DeleteWithdrawalAddress(
        service.DeleteWithdrawalAddressRequest(request_id=rid("delete"), address_id=address.address_id),
        metadata=person.metadata,
    )
    assert removed.address.state == resources.WITHDRAWAL_ADDRESS_STATE_REMOVED
    again = await mesh.request(person, address.address_id, ETHER // 10)
    await refused(mesh.stub.CreateWithdrawal(again, metadata=person.metadata), NOT_FOUND, "NOT_FOUND")
    async with asyncio.timeout(10):
        while True:
            if await mesh.events(withdraw_events_pb2.WithdrawalAddressActivated):
                break
            await asyncio.sleep(0.2)
    counts = [
        len(await mesh.events(kind))
        for kind in (
            withdraw_events_pb2.WithdrawalAddressAdded,
            withdraw_events_pb2.WithdrawalAddressActivated,
            withdraw_events_pb2.WithdrawalAddressRemoved,
        )
    ]
    # Both instances share the database: two entries added, the one with the short cool-down
    # activated, then removed.
    assert counts == [2, 1, 1]


async def test_limits_fees_funds_and_step_up_are_checked_before_anything_is_held(mesh: Mesh) -> None:
    person = await mesh.user(deposit=30 * ETHER)
    address = await mesh.whitelist(person, DESTINATION)
    quote = await mesh.stub.QuoteWithdrawalFee(
        service.QuoteWithdrawalFeeRequest(asset=ETH, amount=str(ETHER)), metadata=person.metadata
    )
    assert (quote.quote.fee.amount, quote.quote.total_debit.amount) == (str(FEE), str(ETHER + FEE))
    too_much = await mesh.request(person, address.address_id, 10 * ETHER + 1)
    info = await refused(
        mesh.stub.CreateWithdrawal(too_much, metadata=person.metadata), PRECONDITION, "LIMIT_EXCEEDED"
    )
    assert error_info(info).metadata["limit"] == "max_amount"
    big = await mesh.withdraw(person, address.address_id, 9 * ETHER)
    assert big.state == resources.WITHDRAWAL_STATE_AWAITING_APPROVAL
    over_day = await mesh.request(person, address.address_id, 3 * ETHER + 1)
    info = await refused(
        mesh.stub.CreateWithdrawal(over_day, metadata=person.metadata), PRECONDITION, "LIMIT_EXCEEDED"
    )
    assert error_info(info).metadata["limit"] == "daily_limit"
    limits = await mesh.stub.GetWithdrawalLimits(
        service.GetWithdrawalLimitsRequest(asset=ETH), metadata=person.metadata
    )
    [eth] = limits.limits
    assert (eth.used_amount, eth.remaining_amount, eth.fee) == (str(9 * ETHER), str(3 * ETHER), str(FEE))
    assert limits.kyc_level == 1  # no kyc in the custodial-wallet profile: L0 limits
    capped = await mesh.request(person, address.address_id, ETHER)
    capped.max_fee.CopyFrom(money(FEE - 1))
    await refused(mesh.stub.CreateWithdrawal(capped, metadata=person.metadata), PRECONDITION, "CONFLICT")
    forged = await mesh.request(person, address.address_id, ETHER, token="su_forged")
    await refused(mesh.stub.CreateWithdrawal(forged, metadata=person.metadata), DENIED, "STEP_UP_REQUIRED")

    poor = await mesh.user(deposit=ETHER)
    poor_address = await mesh.whitelist(poor, DESTINATION)
    broke = await mesh.request(poor, poor_address.address_id, ETHER)
    await refused(
        mesh.stub.CreateWithdrawal(broke, metadata=poor.metadata), PRECONDITION, "INSUFFICIENT_FUNDS"
    )
    await refused(
        mesh.stub.CreateWithdrawal(broke, metadata=poor.metadata), PRECONDITION, "INSUFFICIENT_FUNDS"
    )
    assert await mesh.available(poor) == ETHER and await mesh.balance(poor.ledger_account_id) == ETHER
    assert await mesh.available(person) == 30 * ETHER - 9 * ETHER - FEE


async def test_the_same_request_ten_times_at_once_is_one_withdrawal_and_one_transaction(mesh: Mesh) -> None:
    person = await mesh.user(deposit=3 * ETHER)
    address = await mesh.whitelist(person, DESTINATION)
    request = await mesh.request(person, address.address_id, ETHER)
    stub = mesh.stub
    answers = await asyncio.gather(
        *(stub.CreateWithdrawal(request, metadata=person.metadata) for _ in range(10))
    )
    assert len({answer.withdrawal.withdrawal_id for answer in answers}) == 1
    withdrawal_id = answers[0].withdrawal.withdrawal_id
    listed = await stub.ListWithdrawals(service.ListWithdrawalsRequest(), metadata=person.metadata)
    assert [w.withdrawal_id for w in listed.withdrawals] == [withdrawal_id]
    assert await mesh.available(person) == 2 * ETHER - FEE
    done = await mesh.until_state(withdrawal_id, CONFIRMED)
    # Once more after the fact: the same withdrawal, nothing new.
    again = await stub.CreateWithdrawal(request, metadata=person.metadata)
    assert again.withdrawal.withdrawal_id == withdrawal_id
    assert await mesh.w3.eth.get_transaction_count(mesh.hot_address) == 1  # type: ignore[arg-type]
    assert len(await mesh.signatures()) == 1 and len(done.transactions) == 1
    assert await mesh.balance(person.ledger_account_id) == 2 * ETHER - FEE
    assert len(await mesh.events(withdraw_events_pb2.WithdrawalRequested)) == 1


async def test_a_restart_between_signing_and_broadcast_sends_exactly_one_transaction(mesh: Mesh) -> None:
    # The first instance runs no execution rounds of its own: the test takes its steps.
    await mesh.stop_withdraw()
    first = await mesh.start_withdraw(execution_interval_s=3600.0)
    person = await mesh.user(deposit=3 * ETHER)
    address = await mesh.whitelist(person, DESTINATION)
    withdrawal = await mesh.withdraw(person, address.address_id, ETHER)
    assert withdrawal.state == resources.WITHDRAWAL_STATE_APPROVED
    async with first.database.transaction() as session:
        approved = await store.withdrawal_by_id(session, withdrawal.withdrawal_id)
    assert approved is not None
    signing = await first.executor.step(approved)
    assert signing is not None and signing.state is State.SIGNING
    assert await first.executor.step(signing) is not None  # signed by custody and stored
    async with first.database.transaction() as session:
        [stored] = await store.transactions_of(session, withdrawal.withdrawal_id)
    assert stored.signed_transaction and stored.tx_hash and stored.broadcast_time_us is None
    assert await mesh.w3.eth.get_transaction_count(mesh.hot_address, "pending") == 0  # type: ignore[arg-type]
    # The process goes away here, before the broadcast; a new one takes over.
    await mesh.stop_withdraw()
    await mesh.start_withdraw()
    done = await mesh.until_state(withdrawal.withdrawal_id, CONFIRMED)
    assert done.tx_hash == stored.tx_hash and len(done.transactions) == 1
    assert await mesh.w3.eth.get_transaction_count(mesh.hot_address) == 1  # type: ignore[arg-type]
    assert len(await mesh.signatures()) == 1
    assert await mesh.balance(person.ledger_account_id) == 2 * ETHER - FEE


async def automine(mesh: Mesh, on: bool) -> None:
    await mesh.w3.provider.make_request("evm_setAutomine", [on])  # type: ignore[arg-type]


async def test_a_stuck_transaction_is_replaced_at_the_same_nonce_and_paid_once(mesh: Mesh) -> None:
    operator = await mesh.approver(enums_pb2.ROLE_OPERATOR)
    person = await mesh.user(deposit=3 * ETHER)
    address = await mesh.whitelist(person, DESTINATION)
    await automine(mesh, False)
    try:
        withdrawal = await mesh.withdraw(person, address.address_id, ETHER)
        stuck = await mesh.until_state(withdrawal.withdrawal_id, BROADCAST, mine=False)
        replace = service.ReplaceWithdrawalTransactionRequest(
            request_id=rid("replace"), withdrawal_id=withdrawal.withdrawal_id, reason="stuck in the mempool"
        )
        await refused(
            mesh.stub.ReplaceWithdrawalTransaction(replace, metadata=person.metadata),
            DENIED,
            "PERMISSION_DENIED",
        )
        replaced = (
            await mesh.stub.ReplaceWithdrawalTransaction(replace, metadata=operator.metadata)
        ).withdrawal
        original, replacement = replaced.transactions
        assert original.tx_hash == stuck.tx_hash and replaced.tx_hash == replacement.tx_hash
        assert original.nonce == replacement.nonce and int(replacement.fee_per_gas) > int(
            original.fee_per_gas
        )
        once_more = service.ReplaceWithdrawalTransactionRequest(
            request_id=rid("replace"), withdrawal_id=withdrawal.withdrawal_id, reason="again"
        )
        await refused(
            mesh.stub.ReplaceWithdrawalTransaction(once_more, metadata=operator.metadata),
            PRECONDITION,
            "LIMIT_EXCEEDED",
        )
    finally:
        await automine(mesh, True)
    done = await mesh.until_state(withdrawal.withdrawal_id, CONFIRMED)
    assert done.tx_hash == replacement.tx_hash
    receipt = await mesh.w3.eth.get_transaction_receipt(done.tx_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1
    assert await mesh.w3.eth.get_transaction_count(mesh.hot_address) == 1  # type: ignore[arg-type]
    assert await mesh.balance(person.ledger_account_id) == 2 * ETHER - FEE
    assert await mesh.balance(GAS_CODE) == receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert len(await mesh.events(withdraw_events_pb2.WithdrawalTransactionReplaced)) == 1

    # On its own, after the stuck timeout, the service replaces a transaction once (the policy).
    await mesh.stop_withdraw()
    await mesh.start_withdraw(stuck_timeout_s=1.0, replacements_max=1)
    await automine(mesh, False)
    try:
        second = await mesh.withdraw(person, address.address_id, ETHER // 2)
        async with asyncio.timeout(30):
            while True:
                current = await mesh.staff_view(second.withdrawal_id)
                if len(current.transactions) == 2:
                    break
                await asyncio.sleep(0.2)
        await asyncio.sleep(2.5)
        assert len((await mesh.staff_view(second.withdrawal_id)).transactions) == 2
    finally:
        await automine(mesh, True)
    paid = await mesh.until_state(second.withdrawal_id, CONFIRMED)
    assert paid.tx_hash == current.transactions[1].tx_hash
    assert await mesh.w3.eth.get_transaction_count(mesh.hot_address) == 2  # type: ignore[arg-type]
    assert await mesh.balance(person.ledger_account_id) == 2 * ETHER - FEE - ETHER // 2 - FEE


async def test_with_kyc_deployed_sanctioned_destinations_are_refused_and_denied(mesh: Mesh) -> None:
    listed = "0x8589427373D6D84E98730D7795D8f6f8731FDA16"
    sanctions = await mesh.start_kyc([listed])
    person = await mesh.user(deposit=3 * ETHER)
    await refused(mesh.whitelist(person, listed), PRECONDITION, "RISK_REJECTED")
    address = await mesh.whitelist(person, DESTINATION)
    limits = await mesh.stub.GetWithdrawalLimits(
        service.GetWithdrawalLimitsRequest(), metadata=person.metadata
    )
    assert limits.kyc_level == 1  # the user's KYC level from the kyc service: L0
    # The list grows to name the whitelisted destination: the next withdrawal to it is denied.
    write_sanctions(sanctions, [listed, DESTINATION])
    await asyncio.sleep(0.5)
    denied = await mesh.withdraw(person, address.address_id, ETHER)
    assert denied.state == resources.WITHDRAWAL_STATE_REJECTED
    assert denied.outcome_reason == resources.WITHDRAWAL_OUTCOME_REASON_RISK_DENIED
    staff = await mesh.staff_view(denied.withdrawal_id)
    assert [reason.code for reason in staff.risk.reasons] == ["SANCTIONED_ADDRESS"]
    assert await mesh.available(person) == 3 * ETHER
    assert not await mesh.signatures()


async def test_an_approval_window_that_passes_rejects_and_voids_the_hold(mesh: Mesh) -> None:
    await mesh.stop_withdraw()
    await mesh.start_withdraw(approval_window_s=1)
    person = await mesh.user(deposit=5 * ETHER)
    address = await mesh.whitelist(person, DESTINATION)
    waiting = await mesh.withdraw(person, address.address_id, AUTO_APPROVAL)
    assert waiting.state == resources.WITHDRAWAL_STATE_AWAITING_APPROVAL
    assert waiting.approval_expire_time.ToMicroseconds() > 0
    expired = await mesh.until_state(waiting.withdrawal_id, resources.WITHDRAWAL_STATE_REJECTED, mine=False)
    assert expired.outcome_reason == resources.WITHDRAWAL_OUTCOME_REASON_APPROVAL_EXPIRED
    # The hold is voided right after the transition (by the same worker step).
    async with asyncio.timeout(10):
        while True:
            if await mesh.available(person) == 5 * ETHER:
                break
            await asyncio.sleep(0.1)
    assert await mesh.balance(person.ledger_account_id) == 5 * ETHER
