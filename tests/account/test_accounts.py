"""Opening and closing accounts, balances after ledger postings, activities, through the contract."""

from __future__ import annotations

import grpc
from finmesh.account.v1 import account_service_pb2 as service
from finmesh.events.v1 import account_events_pb2
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service

from tests.account.conftest import ASSET, Mesh, eventually, refused


async def test_open_is_idempotent_and_creates_both_ledger_accounts(mesh: Mesh) -> None:
    opened = await mesh.open(request_id="open-u1-main-eth")
    account = opened.account
    assert opened.created and account.status == 1 and account.decimals == 18
    assert account.ledger_account_code == "liabilities:users:u1:ethereum:ETH"
    assert account.balance.total == "0" and account.active_freeze_count == 0
    user = await mesh.ledger.GetLedgerAccount(
        ledger_service.GetLedgerAccountRequest(account_id=account.ledger_account_id)
    )
    assert user.account.constraint == 2 and user.account.owner_user_id == "u1"
    frozen = await mesh.ledger.LookupLedgerAccount(
        ledger_service.LookupLedgerAccountRequest(code="liabilities:frozen:u1:ethereum:ETH")
    )
    assert frozen.account.type == 2
    replay = await mesh.open(request_id="open-u1-main-eth")
    assert replay == opened
    again = await mesh.open()
    assert not again.created and again.account.account_id == account.account_id
    collateral = await mesh.open(kind=2)
    assert collateral.created
    assert collateral.account.ledger_account_code == "liabilities:users:u1:collateral:ethereum:ETH"
    listed = await mesh.accounts.ListAccounts(service.ListAccountsRequest(user_id="u1", page_size=1))
    assert [a.kind for a in listed.accounts] == [1] and listed.next_page_token
    rest = await mesh.accounts.ListAccounts(
        service.ListAccountsRequest(user_id="u1", page_token=listed.next_page_token)
    )
    assert [a.kind for a in rest.accounts] == [2] and not rest.next_page_token
    opened_events = await mesh.events(account_events_pb2.AccountOpened)
    assert [e.account.kind for e in opened_events] == [1, 2]
    assert opened_events[0].meta.aggregate_id == account.account_id


async def test_open_refuses_bad_inputs_and_applies_nothing(mesh: Mesh) -> None:
    info = await refused(
        mesh.open(asset="ethereum:DOGE"), grpc.StatusCode.FAILED_PRECONDITION, "FEATURE_DISABLED"
    )
    assert info.metadata["asset"] == "ethereum:DOGE"
    await refused(mesh.open(user="u:1"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    await refused(mesh.open(kind=0), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    await refused(mesh.open(request_id="short"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    await mesh.open(request_id="open-reused-key")
    await refused(
        mesh.open(request_id="open-reused-key", user="u2"),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    listed = await mesh.ledger.ListLedgerAccounts(
        ledger_service.ListLedgerAccountsRequest(code_prefix="liabilities:")
    )
    assert sorted(a.code for a in listed.accounts) == [
        "liabilities:frozen:u1:ethereum:ETH",
        "liabilities:users:u1:ethereum:ETH",
    ]
    assert len(await mesh.events(account_events_pb2.AccountOpened)) == 1


async def test_balances_follow_ledger_postings(mesh: Mesh) -> None:
    account = (await mesh.open()).account
    other = (await mesh.open(user="u2")).account
    deposit = await mesh.deposit(account.ledger_account_id, 1_000)
    fresh = await mesh.balance(account.account_id, min_sequence=deposit.sequence)
    assert fresh.balance.total == "1000" and fresh.balance.available == "1000"
    assert fresh.balance.as_of_sequence >= deposit.sequence and fresh.asset == ASSET
    hold = await mesh.post(
        account.ledger_account_id, other.ledger_account_id, 300, kind=2, category="withdrawal.hold"
    )
    incoming = await mesh.post(
        mesh.custody_id, account.ledger_account_id, 50, kind=2, category="deposit.pending"
    )
    balance = (await mesh.balance(account.account_id, min_sequence=incoming.sequence)).balance
    assert (balance.total, balance.available, balance.held, balance.frozen, balance.pending_incoming) == (
        "1000",
        "700",
        "300",
        "0",
        "50",
    )
    batch = await mesh.accounts.BatchGetAccountBalances(
        service.BatchGetAccountBalancesRequest(
            account_ids=[other.account_id, account.account_id, other.account_id],
            min_sequence=incoming.sequence,
        )
    )
    assert [a.account_id for a in batch.accounts] == [other.account_id, account.account_id, other.account_id]
    assert batch.accounts[1].balance.held == "300" and batch.accounts[0].balance.pending_incoming == "300"
    assert hold.sequence < incoming.sequence
    changed = await mesh.events(account_events_pb2.AccountBalanceChanged)

    async def published() -> bool:
        nonlocal changed
        changed = await mesh.events(account_events_pb2.AccountBalanceChanged)
        return len(changed) >= 4

    await eventually(published)
    mine = [e for e in changed if e.account_id == account.account_id]
    assert [(e.entry_id, e.balance.total, e.balance.held) for e in mine] == [
        (deposit.entry_id, "1000", "0"),
        (hold.entry_id, "1000", "300"),
        (incoming.entry_id, "1000", "300"),
    ]
    assert mine[2].balance.pending_incoming == "50" and mine[0].category == "deposit.credit"


async def test_cached_balance_follows_ledger_events(mesh: Mesh) -> None:
    account = (await mesh.open()).account
    first = await mesh.deposit(account.ledger_account_id, 500)
    assert (await mesh.balance(account.account_id, first.sequence)).balance.total == "500"
    second = await mesh.deposit(account.ledger_account_id, 250)

    async def consumed() -> bool:
        return (await mesh.balance(account.account_id)).balance.as_of_sequence >= second.sequence

    await eventually(consumed)
    cached = (await mesh.balance(account.account_id)).balance
    assert cached.total == "750" and cached.as_of_sequence == second.sequence
    assert cached.as_of_time == second.post_time


async def test_activities_fold_holds_into_one_line(mesh: Mesh) -> None:
    account = (await mesh.open()).account
    other = (await mesh.open(user="u2")).account
    await mesh.deposit(account.ledger_account_id, 1_000)
    hold = await mesh.post(
        account.ledger_account_id, other.ledger_account_id, 400, kind=2, category="withdrawal.hold"
    )
    await mesh.ledger.PostPendingEntry(
        ledger_service.PostPendingEntryRequest(
            request_id="post-hold-1", entry_id="post.hold.0001", pending_entry_id=hold.entry_id
        )
    )
    voided = await mesh.post(
        account.ledger_account_id, other.ledger_account_id, 100, kind=2, category="withdrawal.hold"
    )
    await mesh.ledger.VoidPendingEntry(
        ledger_service.VoidPendingEntryRequest(
            request_id="void-hold-1",
            entry_id="void.hold.0001",
            pending_entry_id=voided.entry_id,
            description="x",
        )
    )
    listed = await mesh.accounts.ListAccountActivities(
        service.ListAccountActivitiesRequest(account_id=account.account_id)
    )
    lines = [(a.activity_id, a.direction, a.amount, a.status, a.category) for a in listed.activities]
    assert lines[0] == (voided.entry_id, 2, "100", 3, "withdrawal.hold")
    assert lines[1] == (hold.entry_id, 2, "400", 2, "withdrawal.hold")
    assert lines[2][1:] == (1, "1000", 2, "deposit.credit")
    assert len(lines) == 3
    deposits = await mesh.accounts.ListAccountActivities(
        service.ListAccountActivitiesRequest(account_id=account.account_id, category="deposit")
    )
    assert [a.amount for a in deposits.activities] == ["1000"]


async def test_close_only_at_zero(mesh: Mesh) -> None:
    account = (await mesh.open()).account
    deposit = await mesh.deposit(account.ledger_account_id, 100)
    close = service.CloseAccountRequest(
        request_id="close-u1-eth-1", account_id=account.account_id, reason="user left"
    )
    await refused(mesh.accounts.CloseAccount(close), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE")
    await mesh.post(account.ledger_account_id, mesh.custody_id, 100, category="withdrawal.send")
    assert deposit.sequence
    closed = await mesh.accounts.CloseAccount(close)
    assert closed.account.status == 3 and closed.account.HasField("close_time")
    assert await mesh.accounts.CloseAccount(close) == closed
    ledger_account = await mesh.ledger.GetLedgerAccount(
        ledger_service.GetLedgerAccountRequest(account_id=account.ledger_account_id)
    )
    assert ledger_account.account.status == 2
    [event] = await mesh.events(account_events_pb2.AccountClosed)
    assert event.reason == "user left" and event.account.status == 3
    again = service.CloseAccountRequest(
        request_id="close-u1-eth-2", account_id=account.account_id, reason="again"
    )
    await refused(mesh.accounts.CloseAccount(again), grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE")
    unknown = service.GetAccountRequest(account_id="00000000-0000-4000-8000-000000000000")
    await refused(mesh.accounts.GetAccount(unknown), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
