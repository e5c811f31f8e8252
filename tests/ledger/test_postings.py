"""The ledger through its gRPC contract, on SQLite and PostgreSQL: accounts, postings, refusals."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from finmesh.events.v1 import ledger_events_pb2
from finmesh.ledger.v1 import ledger_resources_pb2 as resources
from finmesh.ledger.v1 import ledger_service_pb2 as service
from google.protobuf import duration_pb2, field_mask_pb2
from sqlalchemy import func, select

from svc.kit.tables import outbox
from svc.ledger import store
from tests.ledger.conftest import ASSET, Ledger, entry, error_info

USER = "liabilities:users:u1:ethereum:ETH"


async def funded(ledger: Ledger, amount: int = 1_000) -> tuple[str, str, str]:
    """A custody asset account, a user and a second user, the first user credited `amount`."""
    custody = await ledger.account("assets:custody:hot:a1:ethereum:ETH", constrained=False)
    user = await ledger.account(USER, owner="u1")
    other = await ledger.account("liabilities:users:u2:ethereum:ETH", owner="u2")
    await ledger.transfer("deposit.0001", custody, user, amount, category="deposit.credit")
    return custody, user, other


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_chart_of_accounts(ledger: Ledger) -> None:
    user = await ledger.account(USER, owner="u1")
    got = await ledger.stub.GetLedgerAccount(service.GetLedgerAccountRequest(account_id=user))
    assert got.account.code == USER and got.account.asset == ASSET and got.account.status == 1
    looked = await ledger.stub.LookupLedgerAccount(service.LookupLedgerAccountRequest(code=USER))
    assert looked.account.account_id == user
    error = await refused(
        ledger.stub.CreateLedgerAccount(
            service.CreateLedgerAccountRequest(
                request_id="acct-dup-0001",
                account=resources.LedgerAccount(
                    code=USER, type=2, asset=ASSET, constraint=2, owner_user_id="u1"
                ),
            )
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(error).metadata["account_id"] == user
    listed = await ledger.stub.ListLedgerAccounts(
        service.ListLedgerAccountsRequest(code_prefix="liabilities:")
    )
    assert [a.account_id for a in listed.accounts] == [user]


async def test_post_and_balances_and_events(ledger: Ledger, database_url: str) -> None:
    custody, user, other = await funded(ledger)
    response = await ledger.transfer("transfer.0001", user, other, 300)
    assert not response.replayed and response.entry.sequence == 2
    balances = {b.account_id: b for b in response.balances}
    assert balances[user].balance == "700" and balances[other].balance == "300"
    assert (await ledger.balance(custody)).balance == "1000"
    assert (await ledger.balance(user, as_of_sequence=1)).balance == "1000"
    at_first = (await ledger.balance(user, as_of_sequence=1)).as_of_time
    by_time = await ledger.stub.GetLedgerBalance(
        service.GetLedgerBalanceRequest(account_id=user, as_of_time=at_first)
    )
    assert by_time.balance.as_of_sequence in (1, 2)
    assert await ledger.trial_balanced()
    async with ledger.app.database.transaction() as session:
        rows = (
            await session.execute(select(outbox.c.event_type, outbox.c.payload).order_by(outbox.c.id))
        ).all()
    posted = [r for r in rows if r.event_type == "finmesh.events.v1.EntryPosted"]
    assert [ledger_events_pb2.EntryPosted.FromString(r.payload).entry.entry_id for r in posted] == [
        "deposit.0001",
        "transfer.0001",
    ]
    statement = await ledger.stub.ListAccountEntries(
        service.ListAccountEntriesRequest(account_id=user, page_size=1)
    )
    assert [line.entry.entry_id for line in statement.lines] == ["deposit.0001"]
    assert statement.opening_balance.balance == "0"
    page = await ledger.stub.ListAccountEntries(
        service.ListAccountEntriesRequest(account_id=user, page_size=1, page_token=statement.next_page_token)
    )
    assert [line.entry.entry_id for line in page.lines] == ["transfer.0001"] and not page.next_page_token
    assert page.lines[0].debit_amount == "300" and page.lines[0].balance_after.balance == "700"


async def test_idempotent_replay_and_key_reuse(ledger: Ledger) -> None:
    _, user, other = await funded(ledger)
    first = await ledger.transfer("transfer.0002", user, other, 10)
    again = await ledger.transfer("transfer.0002", user, other, 10)
    assert again.replayed and again.entry.sequence == first.entry.sequence
    assert [b.balance for b in again.balances] == [b.balance for b in first.balances]
    error = await refused(ledger.transfer("transfer.0002", user, other, 11))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(error).reason == "IDEMPOTENCY_KEY_REUSED"
    assert (await ledger.balance(user)).balance == "990"


@pytest.mark.parametrize(
    ("case", "status", "reason", "code"),
    [
        ("unbalanced", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "ENTRY_RESULT_CODE_UNBALANCED"),
        ("unknown_account", "NOT_FOUND", "NOT_FOUND", "ENTRY_RESULT_CODE_ACCOUNT_NOT_FOUND"),
        ("wrong_asset", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "ENTRY_RESULT_CODE_ASSET_MISMATCH"),
        ("overflow", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "ENTRY_RESULT_CODE_AMOUNT_OVERFLOW"),
        ("insufficient", "FAILED_PRECONDITION", "INSUFFICIENT_FUNDS", "ENTRY_RESULT_CODE_EXCEEDS_CREDITS"),
        ("frozen", "FAILED_PRECONDITION", "FROZEN", "ENTRY_RESULT_CODE_DEBITS_BLOCKED"),
        ("closed", "FAILED_PRECONDITION", "INVALID_STATE", "ENTRY_RESULT_CODE_ACCOUNT_CLOSED"),
        ("expire_kind", "INVALID_ARGUMENT", "INVALID_ARGUMENT", "ENTRY_RESULT_CODE_KIND_NOT_ALLOWED"),
        ("pending_missing", "NOT_FOUND", "NOT_FOUND", "ENTRY_RESULT_CODE_PENDING_ENTRY_NOT_FOUND"),
        ("correct_missing", "NOT_FOUND", "NOT_FOUND", "ENTRY_RESULT_CODE_CORRECTED_ENTRY_NOT_FOUND"),
    ],
)
async def test_refusals_apply_nothing(ledger: Ledger, case: str, status: str, reason: str, code: str) -> None:
    _custody, user, other = await funded(ledger)
    bad = entry("bad.entry.0001", user, other, 5)
    if case == "unbalanced":
        bad.postings[1].amount = "4"
    elif case == "unknown_account":
        bad.postings[1].account_id = "00000000-0000-4000-8000-000000000000"
    elif case == "wrong_asset":
        bad.postings[0].asset = bad.postings[1].asset = "ethereum:USDC"
    elif case == "overflow":
        bad.postings[0].amount = bad.postings[1].amount = str(2**256)
    elif case == "insufficient":
        bad.postings[0].amount = bad.postings[1].amount = "1001"
    elif case == "frozen":
        await ledger.stub.UpdateLedgerAccount(
            service.UpdateLedgerAccountRequest(
                request_id="freeze-0001",
                account=resources.LedgerAccount(account_id=user, debits_blocked=True),
                update_mask=field_mask_pb2.FieldMask(paths=["debits_blocked"]),
                reason="compliance",
            )
        )
    elif case == "closed":
        empty = await ledger.account("liabilities:users:u3:ethereum:ETH", owner="u3")
        await ledger.stub.CloseLedgerAccount(
            service.CloseLedgerAccountRequest(request_id="close-0001", account_id=empty, reason="gone")
        )
        bad.postings[1].account_id = empty
    elif case == "expire_kind":
        bad = resources.JournalEntry(entry_id="bad.entry.0001", kind=5, pending_entry_id="missing.0001")
    elif case == "pending_missing":
        bad = resources.JournalEntry(entry_id="bad.entry.0001", kind=4, pending_entry_id="missing.0001")
    elif case == "correct_missing":
        bad.kind = 6
        bad.corrects_entry_id = "missing.0001"
    before = await ledger.stub.GetTrialBalance(service.GetTrialBalanceRequest(rollup_depth=4))
    error = await refused(
        ledger.stub.CreateJournalEntry(
            service.CreateJournalEntryRequest(request_id="req-bad-0001", entry=bad)
        )
    )
    assert error.code().name == status
    info = error_info(error)
    assert (info.reason, info.metadata["entry_result_code"]) == (reason, code)
    after = await ledger.stub.GetTrialBalance(service.GetTrialBalanceRequest(rollup_depth=4))
    assert after == before and after.balanced
    missing = await refused(
        ledger.stub.GetJournalEntry(service.GetJournalEntryRequest(entry_id="bad.entry.0001"))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("amount", ["-5", "1.5", "0", "abc", ""])
async def test_malformed_amounts_are_invalid_argument(ledger: Ledger, amount: str) -> None:
    _, user, other = await funded(ledger)
    error = await refused(ledger.transfer("bad.amount.0001", user, other, amount))  # type: ignore[arg-type]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).reason == "INVALID_ARGUMENT"
    assert (await ledger.balance(user)).balance == "1000"


async def test_two_phase_partial_post_void_and_expiry(ledger: Ledger) -> None:
    custody, user, other = await funded(ledger)
    hold = await ledger.transfer("withdraw.0001.hold", user, custody, 400, kind=2, category="withdrawal.hold")
    assert hold.entry.pending_status == 1
    held = await ledger.balance(user)
    assert (held.balance, held.available, held.debits_pending) == ("1000", "600", "400")
    error = await refused(ledger.transfer("transfer.0003", user, other, 601))
    assert error_info(error).reason == "INSUFFICIENT_FUNDS"
    posted = await ledger.stub.PostPendingEntry(
        service.PostPendingEntryRequest(
            request_id="post-0001",
            entry_id="withdraw.0001.post",
            pending_entry_id="withdraw.0001.hold",
            postings=[
                resources.Posting(account_id=user, side=1, asset=ASSET, amount="250"),
                resources.Posting(account_id=custody, side=2, asset=ASSET, amount="250"),
            ],
        )
    )
    assert posted.pending_entry.pending_status == 2 and posted.entry.category == "withdrawal.hold"
    after = await ledger.balance(user)
    assert (after.balance, after.available, after.debits_pending) == ("750", "750", "0")
    again = await refused(
        ledger.stub.VoidPendingEntry(
            service.VoidPendingEntryRequest(
                request_id="void-0001",
                entry_id="withdraw.0001.void",
                pending_entry_id="withdraw.0001.hold",
                description="x",
            )
        )
    )
    assert error_info(again).metadata["entry_result_code"] == "ENTRY_RESULT_CODE_PENDING_ENTRY_ALREADY_POSTED"
    await ledger.transfer("withdraw.0002.hold", user, custody, 100, kind=2, category="withdrawal.hold")
    voided = await ledger.stub.VoidPendingEntry(
        service.VoidPendingEntryRequest(
            request_id="void-0002",
            entry_id="withdraw.0002.void",
            pending_entry_id="withdraw.0002.hold",
            description="x",
        )
    )
    assert voided.pending_entry.pending_status == 3 and voided.entry.postings[0].amount == "100"
    assert (await ledger.balance(user)).available == "750"
    await ledger.transfer(
        "withdraw.0003.hold", user, custody, 50, kind=2, category="withdrawal.hold",
        timeout=duration_pb2.Duration(nanos=200_000_000),
    )  # fmt: skip
    assert (await ledger.balance(user)).available == "700"
    for _ in range(100):
        pending = await ledger.stub.GetJournalEntry(
            service.GetJournalEntryRequest(entry_id="withdraw.0003.hold")
        )
        if pending.entry.pending_status == 4:
            break
        await asyncio.sleep(0.05)
    assert pending.entry.resolved_by_entry_id == "expire.withdraw.0003.hold"
    assert (await ledger.balance(user)).available == "750"
    late = await refused(
        ledger.stub.PostPendingEntry(
            service.PostPendingEntryRequest(
                request_id="post-0003", entry_id="withdraw.0003.post", pending_entry_id="withdraw.0003.hold"
            )
        )
    )
    assert error_info(late).metadata["entry_result_code"] == "ENTRY_RESULT_CODE_PENDING_ENTRY_EXPIRED"
    async with ledger.app.database.transaction() as session:
        types = (await session.execute(select(outbox.c.event_type))).scalars().all()
    assert types.count("finmesh.events.v1.PendingEntryVoided") == 1
    assert types.count("finmesh.events.v1.PendingEntryExpired") == 1
    assert await ledger.trial_balanced()


async def test_expired_but_unswept_hold_refuses_post(ledger: Ledger) -> None:
    custody, user, _ = await funded(ledger)
    await ledger.sweeper.stop()
    await ledger.transfer(
        "withdraw.0004.hold", user, custody, 50, kind=2, category="withdrawal.hold",
        timeout=duration_pb2.Duration(nanos=1_000_000),
    )  # fmt: skip
    await asyncio.sleep(0.01)
    late = await refused(
        ledger.stub.PostPendingEntry(
            service.PostPendingEntryRequest(
                request_id="post-0004", entry_id="withdraw.0004.post", pending_entry_id="withdraw.0004.hold"
            )
        )
    )
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(late).metadata["entry_result_code"] == "ENTRY_RESULT_CODE_PENDING_ENTRY_EXPIRED"
    assert await ledger.sweeper.sweep() == 1


async def test_reversal_references_the_corrected_entry(ledger: Ledger) -> None:
    custody, user, other = await funded(ledger)
    await ledger.transfer("transfer.0005", user, other, 100)
    reversed_ = await ledger.stub.ReverseJournalEntry(
        service.ReverseJournalEntryRequest(
            request_id="rev-0001",
            entry_id="transfer.0005.rev",
            corrects_entry_id="transfer.0005",
            description="oops",
            category="transfer.reversal",
        )
    )
    assert reversed_.entry.kind == 6 and reversed_.entry.corrects_entry_id == "transfer.0005"
    assert (await ledger.balance(user)).balance == "1000"
    original = await ledger.stub.GetJournalEntry(service.GetJournalEntryRequest(entry_id="transfer.0005"))
    assert list(original.entry.corrected_by_entry_ids) == ["transfer.0005.rev"]
    await ledger.transfer("transfer.0007", user, custody, 1, category="withdrawal.debit")
    spent = await refused(
        ledger.stub.ReverseJournalEntry(
            service.ReverseJournalEntryRequest(
                request_id="rev-0002",
                entry_id="deposit.0001.rev",
                corrects_entry_id="deposit.0001",
                description="reorg",
                category="deposit.reorg_reversal",
            )
        )
    )
    assert error_info(spent).reason == "INSUFFICIENT_FUNDS"


async def test_batch_mixed_results_and_linked_chains(ledger: Ledger) -> None:
    _custody, user, other = await funded(ledger)
    entries = [
        entry("batch.0000001", user, other, 100),
        entry("batch.0000002", user, other, 5_000),  # insufficient: alone
        entry("batch.0000003", user, other, 100, linked=True),
        entry("batch.0000004", other, user, 10_000),  # fails the chain
        entry("batch.0000005", user, other, 1, linked=True),
        entry("batch.0000006", other, user, 1),  # a chain that succeeds
        entry("batch.0000001", user, other, 100),  # duplicate in batch
        entry("batch.0000007", user, other, 1, linked=True),  # chain never closed
    ]
    response = await ledger.stub.CreateJournalEntries(
        service.CreateJournalEntriesRequest(request_id="batch-0001", entries=entries)
    )
    codes = [
        resources.EntryResultCode.Name(r.code).removeprefix("ENTRY_RESULT_CODE_") for r in response.results
    ]
    assert codes == [
        "OK", "EXCEEDS_CREDITS", "LINKED_ENTRY_FAILED", "EXCEEDS_CREDITS", "OK", "OK", "DUPLICATE_IN_BATCH",
        "LINKED_CHAIN_OPEN",
    ]  # fmt: skip
    assert (response.applied_count, response.existing_count, response.failed_count) == (3, 0, 5)
    assert (await ledger.balance(user)).balance == "900"
    replay = await ledger.stub.CreateJournalEntries(
        service.CreateJournalEntriesRequest(request_id="batch-0002", entries=entries[:1] + entries[4:6])
    )
    assert [r.code for r in replay.results] == [2, 2, 2] and replay.applied_count == 0
    assert [r.sequence for r in replay.results] == [response.results[i].sequence for i in (0, 4, 5)]
    assert await ledger.trial_balanced()
    async with ledger.app.database.transaction() as session:
        count = (await session.execute(select(func.count()).select_from(store.entries))).scalar_one()
    assert count == 4


async def test_balance_as_of_sequence_and_trial_balance_history(ledger: Ledger) -> None:
    _custody, user, other = await funded(ledger)
    for number in range(5):
        await ledger.transfer(f"transfer.1{number:04d}", user, other, 10)
    for sequence in range(1, 7):
        expected = 1000 - 10 * (sequence - 1)
        assert (await ledger.balance(user, as_of_sequence=sequence)).balance == str(expected)
    trial = await ledger.stub.GetTrialBalance(
        service.GetTrialBalanceRequest(as_of_sequence=3, rollup_depth=2)
    )
    assert trial.balanced and trial.as_of_sequence == 3
    lines = {line.code: line for line in trial.assets[0].lines}
    assert (
        lines["liabilities:users"].credit_balance == "1000"
        and lines["assets:custody"].debit_balance == "1000"
    )
