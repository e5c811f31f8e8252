"""Amount and whole-account freezes through the contract: holds in the ledger, debit blocks,
partial release, capture, events, idempotent replay and refusals that apply nothing."""

from __future__ import annotations

import time
from typing import Any

import grpc
from finmesh.account.v1 import account_service_pb2 as service
from finmesh.events.v1 import account_events_pb2
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from google.protobuf import timestamp_pb2

from tests.account.conftest import Mesh, eventually, refused

AUTHORITY = "liabilities:authorities:case-7:ethereum:ETH"


def freeze_request(account_id: str, request_id: str, **fields: Any) -> service.CreateFreezeRequest:
    """A CreateFreeze request; AMOUNT scope unless `scope` says otherwise."""
    values: dict[str, Any] = {
        "request_id": request_id,
        "account_id": account_id,
        "scope": 1,
        "reason": 2,
        "reason_detail": "court order 7",
        "case_reference": "case-7",
        "placed_by": "operator-1",
    }
    values.update(fields)
    return service.CreateFreezeRequest(**values)


def figures(account: Any) -> tuple[str, str, str, str]:
    """(total, available, held, frozen) of an Account message."""
    balance = account.balance
    return balance.total, balance.available, balance.held, balance.frozen


async def test_amount_freeze_partial_release_and_capture(mesh: Mesh) -> None:
    account = (await mesh.open()).account
    await mesh.deposit(account.ledger_account_id, 1_000)
    placed = await mesh.accounts.CreateFreeze(freeze_request(account.account_id, "freeze-0001", amount="300"))
    freeze = placed.freeze
    assert freeze.state == 1 and freeze.amount == "300" and freeze.ledger_pending_entry_id
    assert figures(placed.account) == ("1000", "700", "0", "300") and placed.account.active_freeze_count == 1
    assert (
        await mesh.accounts.CreateFreeze(freeze_request(account.account_id, "freeze-0001", amount="300"))
        == placed
    )
    await refused(
        mesh.accounts.CreateFreeze(freeze_request(account.account_id, "freeze-0001", amount="301")),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    info = await refused(
        mesh.accounts.CreateFreeze(freeze_request(account.account_id, "freeze-0002", amount="701")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_FUNDS",
    )
    assert info.metadata["entry_result_code"] == "ENTRY_RESULT_CODE_EXCEEDS_CREDITS"
    hold = await mesh.ledger.GetJournalEntry(
        ledger_service.GetJournalEntryRequest(entry_id=freeze.ledger_pending_entry_id)
    )
    assert hold.entry.kind == ledger_resources.ENTRY_KIND_PENDING and not hold.entry.HasField("timeout")
    release = service.ReleaseFreezeRequest(
        request_id="release-0001",
        account_id=account.account_id,
        freeze_id=freeze.freeze_id,
        amount="100",
        note="partly lifted",
        released_by="operator-2",
    )
    released = await mesh.accounts.ReleaseFreeze(release)
    assert (
        released.freeze.state == 1
        and released.freeze.amount == "200"
        and released.freeze.original_amount == "300"
    )
    assert figures(released.account) == ("1000", "800", "0", "200")
    too_much = service.ReleaseFreezeRequest(
        request_id="release-0002",
        account_id=account.account_id,
        freeze_id=freeze.freeze_id,
        amount="201",
        note="too much",
        released_by="operator-2",
    )
    await refused(mesh.accounts.ReleaseFreeze(too_much), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    capture = service.CaptureFreezeRequest(
        request_id="capture-0001",
        account_id=account.account_id,
        freeze_id=freeze.freeze_id,
        destination_ledger_account_code=AUTHORITY,
        note="seized",
        captured_by="operator-3",
        action_request_id="action-9",
    )
    await refused(mesh.accounts.CaptureFreeze(capture), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    await mesh.ledger.CreateLedgerAccount(
        ledger_service.CreateLedgerAccountRequest(
            request_id="authority-account",
            account=ledger_resources.LedgerAccount(
                code=AUTHORITY, type=2, asset="ethereum:ETH", constraint=1
            ),
        )
    )
    captured = await mesh.accounts.CaptureFreeze(capture)
    assert captured.freeze.state == 3 and captured.freeze.capture_entry_id
    assert figures(captured.account) == ("800", "800", "0", "0") and captured.account.active_freeze_count == 0
    authority = await mesh.ledger.LookupLedgerAccount(
        ledger_service.LookupLedgerAccountRequest(code=AUTHORITY)
    )
    balance = await mesh.ledger.GetLedgerBalance(
        ledger_service.GetLedgerBalanceRequest(account_id=authority.account.account_id)
    )
    assert balance.balance.balance == "200"
    await refused(mesh.accounts.ReleaseFreeze(too_much), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE")
    [placed_event] = await mesh.events(account_events_pb2.FreezePlaced)
    assert (
        placed_event.freeze.freeze_id == freeze.freeze_id
        and placed_event.meta.aggregate_id == freeze.freeze_id
    )
    [released_event] = await mesh.events(account_events_pb2.FreezeReleased)
    assert released_event.released_amount == "100" and not released_event.expired
    [captured_event] = await mesh.events(account_events_pb2.FreezeCaptured)
    assert captured_event.destination_ledger_account_code == AUTHORITY
    trial = await mesh.ledger.GetTrialBalance(ledger_service.GetTrialBalanceRequest())
    assert trial.balanced


async def test_account_freeze_blocks_debits_not_credits(mesh: Mesh) -> None:
    account = (await mesh.open()).account
    await mesh.deposit(account.ledger_account_id, 1_000)
    first = await mesh.accounts.CreateFreeze(freeze_request(account.account_id, "freeze-acct-1", scope=2))
    assert first.account.status == 2 and figures(first.account) == ("1000", "0", "0", "1000")
    second = await mesh.accounts.CreateFreeze(
        freeze_request(account.account_id, "freeze-acct-2", scope=2, reason=1)
    )
    assert second.account.active_freeze_count == 2
    deposit = await mesh.deposit(account.ledger_account_id, 50)
    with_credit = await mesh.balance(account.account_id, deposit.sequence)
    assert (
        with_credit.status == 2
        and with_credit.balance.total == "1050"
        and with_credit.balance.available == "0"
    )
    info = await refused(
        mesh.post(account.ledger_account_id, mesh.custody_id, 10),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FROZEN",
    )
    assert info.metadata["entry_result_code"] == "ENTRY_RESULT_CODE_DEBITS_BLOCKED"
    close = service.CloseAccountRequest(
        request_id="close-frozen-1", account_id=account.account_id, reason="x"
    )
    await refused(mesh.accounts.CloseAccount(close), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE")
    for freeze in (first.freeze, second.freeze):
        with_amount = service.ReleaseFreezeRequest(
            request_id=f"release-{freeze.freeze_id}",
            account_id=account.account_id,
            freeze_id=freeze.freeze_id,
            amount="5",
            note="lifted",
            released_by="compliance",
        )
        await refused(
            mesh.accounts.ReleaseFreeze(with_amount), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
        )
    released = []
    for freeze in (first.freeze, second.freeze):
        released.append(
            await mesh.accounts.ReleaseFreeze(
                service.ReleaseFreezeRequest(
                    request_id=f"unfreeze-{freeze.freeze_id}",
                    account_id=account.account_id,
                    freeze_id=freeze.freeze_id,
                    note="lifted",
                    released_by="compliance",
                )
            )
        )
    assert released[0].account.status == 2 and released[1].account.status == 1
    assert figures(released[1].account) == ("1050", "1050", "0", "0")
    await mesh.post(account.ledger_account_id, mesh.custody_id, 10)
    changes = await mesh.events(account_events_pb2.AccountStatusChanged)
    assert [(c.previous_status, c.account.status, c.freeze_id) for c in changes] == [
        (1, 2, first.freeze.freeze_id),
        (2, 1, second.freeze.freeze_id),
    ]
    listed = await mesh.accounts.ListFreezes(service.ListFreezesRequest(account_id="-", state=2, page_size=1))
    assert len(listed.freezes) == 1 and listed.next_page_token
    got = await mesh.accounts.GetFreeze(
        service.GetFreezeRequest(account_id=account.account_id, freeze_id=first.freeze.freeze_id)
    )
    assert got.freeze.state == 2 and got.freeze.ended_by == "compliance"


async def test_freeze_refusals_apply_nothing(mesh: Mesh) -> None:
    account = (await mesh.open()).account
    await mesh.deposit(account.ledger_account_id, 100)
    await refused(
        mesh.accounts.CreateFreeze(freeze_request(account.account_id, "freeze-bad-1", scope=2, amount="5")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        mesh.accounts.CreateFreeze(freeze_request(account.account_id, "freeze-bad-2")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await refused(
        mesh.accounts.CreateFreeze(freeze_request(account.account_id, "freeze-bad-3", amount="2" + "0" * 77)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    unknown = "00000000-0000-4000-8000-000000000000"
    await refused(
        mesh.accounts.CreateFreeze(freeze_request(unknown, "freeze-bad-4", amount="5")),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )
    placed = await mesh.accounts.CreateFreeze(freeze_request(account.account_id, "freeze-ok-1", scope=2))
    capture = service.CaptureFreezeRequest(
        request_id="capture-bad-1",
        account_id=account.account_id,
        freeze_id=placed.freeze.freeze_id,
        destination_ledger_account_code=AUTHORITY,
        note="seized",
        captured_by="op",
        action_request_id="a-1",
    )
    await refused(mesh.accounts.CaptureFreeze(capture), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE")
    listed = await mesh.accounts.ListFreezes(service.ListFreezesRequest(account_id=account.account_id))
    assert [f.freeze_id for f in listed.freezes] == [placed.freeze.freeze_id]
    assert len(await mesh.events(account_events_pb2.FreezePlaced)) == 1
    balance = (await mesh.balance(account.account_id, 1)).balance
    assert (balance.total, balance.held) == ("100", "0")


async def test_freeze_is_released_at_its_expire_time(mesh: Mesh) -> None:
    account = (await mesh.open()).account
    await mesh.deposit(account.ledger_account_id, 100)
    expire = timestamp_pb2.Timestamp()
    expire.FromMicroseconds(time.time_ns() // 1000 + 300_000)
    placed = await mesh.accounts.CreateFreeze(
        freeze_request(account.account_id, "freeze-expiring", amount="40", expire_time=expire)
    )
    assert placed.freeze.expire_time == expire

    async def released() -> bool:
        return bool(await mesh.events(account_events_pb2.FreezeReleased))

    await eventually(released)
    [event] = await mesh.events(account_events_pb2.FreezeReleased)
    assert event.expired and event.freeze.state == 2 and event.released_amount == "40"
    balance = (await mesh.balance(account.account_id, 1)).balance
    assert (balance.available, balance.frozen) == ("100", "0")
