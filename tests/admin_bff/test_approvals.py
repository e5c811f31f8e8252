"""The approval queue through the gRPC contract, in front of a real withdraw service (M-of-N
withdrawals held at the real ledger) and the real kyc and auth services: an approver sees the
withdrawals waiting for approvers, never their own as actionable, their approvals counted; the
queue pages with one cursor per source; a source that is down or forbidden to the caller leaves
only its own items out."""

from __future__ import annotations

import grpc
import pytest
from finmesh.admin_bff.v1 import admin_bff_service_pb2 as admin
from finmesh.auth.v1 import auth_resources_pb2 as auth_resources
from finmesh.common.v1 import enums_pb2
from finmesh.withdraw.v1 import withdraw_resources_pb2 as withdraw_resources
from finmesh.withdraw.v1 import withdraw_service_pb2 as withdraw_service

from svc.kit.aggregate import SectionState
from tests.admin_bff.test_console import staff
from tests.harness.bff_mesh import ETH, ETHER, REQUIRED_APPROVALS, BffStarter, Downstream
from tests.harness.calls import refused
from tests.harness.identity import free_port, rid

WITHDRAWAL = admin.APPROVAL_KIND_WITHDRAWAL
AWAITING = withdraw_resources.WITHDRAWAL_STATE_AWAITING_APPROVAL
DESTINATION = "0x00000000000000000000000000000000000000b1"


def by_id(response: admin.ListPendingApprovalsResponse) -> dict[str, admin.ApprovalItem]:
    return {item.source_id: item for item in response.items}


def problems(response: admin.ListPendingApprovalsResponse) -> list[tuple[int, int, str]]:
    return [(status.section, status.state, status.message) for status in response.sections]


@pytest.mark.embedded
async def test_withdrawal_approval_queue(downstream: Downstream, admin_bff: BffStarter) -> None:
    requester = await downstream.person()
    approver = await downstream.staff_member(enums_pb2.ROLE_APPROVER)
    for person in (requester, approver):
        await downstream.deposit(person.user_id, ETH, 5 * ETHER)
    entry = await downstream.whitelist(requester, DESTINATION, "cold storage")
    theirs = await downstream.withdraw(requester, entry.address_id, 2 * ETHER)
    own_entry = await downstream.whitelist(approver, DESTINATION, "mine")
    own = await downstream.withdraw(approver, own_entry.address_id, 3 * ETHER)
    assert theirs.state == AWAITING and own.state == AWAITING
    stub = await admin_bff(endpoints={"withdraw": await downstream.withdraw_endpoint()})

    listed = await stub.ListPendingApprovals(admin.ListPendingApprovalsRequest(), metadata=approver.metadata)
    items = by_id(listed)
    item = items[theirs.withdrawal_id]
    assert (item.kind, item.source_service, item.subject_user_id, item.maker_id) == (
        WITHDRAWAL,
        "withdraw",
        requester.user_id,
        requester.user_id,
    )
    assert (item.amount.asset, item.amount.amount) == (ETH, str(2 * ETHER))
    assert (item.approvals_required, item.approvals_received) == (REQUIRED_APPROVALS, 0)
    assert item.actionable_by_me and not item.not_actionable_reason
    assert "0x0000…00b1" in item.title and "cold storage" in item.summary
    assert item.action_route == f"POST /v1/admin/withdrawals/{theirs.withdrawal_id}:approve"
    assert item.expire_time.seconds > item.create_time.seconds > 0
    mine = items[own.withdrawal_id]
    assert not mine.actionable_by_me and mine.not_actionable_reason == "you prepared this item"
    # Oldest first; kyc read fine (nothing waits there), auth's role queue is admins' only, and
    # the kinds without a source yet are named.
    assert [i.source_id for i in listed.items] == [theirs.withdrawal_id, own.withdrawal_id]
    states = {(section, state) for section, state, _ in problems(listed)}
    assert states == {
        (admin.SECTION_APPROVALS, SectionState.FORBIDDEN),
        (admin.SECTION_APPROVALS, SectionState.DISABLED),
    }
    assert any("admin_intervention" in message for *_, message in problems(listed))

    actionable = await stub.ListPendingApprovals(
        admin.ListPendingApprovalsRequest(actionable_by_me_only=True, kinds=[WITHDRAWAL]),
        metadata=approver.metadata,
    )
    assert [i.source_id for i in actionable.items] == [theirs.withdrawal_id]

    # The start page counts the queue: the approver may decide one of the two withdrawals.
    home = await stub.GetConsoleHome(admin.GetConsoleHomeRequest(), metadata=approver.metadata)
    queue = {queue.queue: queue for queue in home.queues}["withdrawal_approvals"]
    assert (queue.count, queue.actionable_by_me) == (2, 1) and queue.oldest_age.ToMicroseconds() > 0
    assert list(home.my_roles) == [enums_pb2.ROLE_APPROVER]

    withdrawals = await downstream.withdrawals()
    await withdrawals.ApproveWithdrawal(
        withdraw_service.ApproveWithdrawalRequest(
            request_id=rid("approve"),
            withdrawal_id=theirs.withdrawal_id,
            step_up_token=await downstream.step_up(approver, auth_resources.STEP_UP_PURPOSE_STAFF_APPROVAL),
        ),
        metadata=approver.metadata,
    )
    after = by_id(
        await stub.ListPendingApprovals(
            admin.ListPendingApprovalsRequest(kinds=[WITHDRAWAL], subject_user_id=requester.user_id),
            metadata=approver.metadata,
        )
    )
    assert list(after) == [theirs.withdrawal_id]
    approved = after[theirs.withdrawal_id]
    assert approved.approvals_received == 1 and not approved.actionable_by_me
    assert approved.not_actionable_reason == "you already decided on this item"

    # The bootstrap admin reads every source; newest first, one item a page.
    admin_metadata = await staff(downstream)
    first = await stub.ListPendingApprovals(
        admin.ListPendingApprovalsRequest(
            kinds=[WITHDRAWAL], order=enums_pb2.SORT_ORDER_DESCENDING, page_size=1
        ),
        metadata=admin_metadata,
    )
    assert [i.source_id for i in first.items] == [own.withdrawal_id] and first.next_page_token
    assert not first.items[0].actionable_by_me and "approver" in first.items[0].not_actionable_reason
    second = await stub.ListPendingApprovals(
        admin.ListPendingApprovalsRequest(
            kinds=[WITHDRAWAL],
            order=enums_pb2.SORT_ORDER_DESCENDING,
            page_size=1,
            page_token=first.next_page_token,
        ),
        metadata=admin_metadata,
    )
    assert [i.source_id for i in second.items] == [theirs.withdrawal_id] and not second.next_page_token
    everything = await stub.ListPendingApprovals(admin.ListPendingApprovalsRequest(), metadata=admin_metadata)
    assert {(s, st) for s, st, _ in problems(everything)} == {
        (admin.SECTION_APPROVALS, SectionState.DISABLED)
    }
    await refused(
        stub.ListPendingApprovals(
            admin.ListPendingApprovalsRequest(kinds=[WITHDRAWAL], page_token=first.next_page_token),
            metadata=admin_metadata,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    # Withdraw down: its items are missing, named; kyc still answers.
    down = await admin_bff(endpoints={"withdraw": f"127.0.0.1:{free_port()}"})
    degraded = await down.ListPendingApprovals(
        admin.ListPendingApprovalsRequest(kinds=[WITHDRAWAL, admin.APPROVAL_KIND_KYC_REVIEW]),
        metadata=approver.metadata,
    )
    assert not degraded.items
    assert problems(degraded) == [
        (admin.SECTION_APPROVALS, SectionState.UNAVAILABLE, "withdraw is unavailable")
    ]

    caller = await downstream.person()
    await refused(
        stub.ListPendingApprovals(admin.ListPendingApprovalsRequest(), metadata=caller.metadata),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
