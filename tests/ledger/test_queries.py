"""The ledger's listings and batch reads through gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from finmesh.ledger.v1 import ledger_resources_pb2 as resources
from finmesh.ledger.v1 import ledger_service_pb2 as service
from sqlalchemy import event

from tests.ledger.conftest import ASSET, Ledger

TX_HASH = "0x" + "Ab" * 32


async def _books(ledger: Ledger) -> tuple[str, str, str, str]:
    """Custody, two users and a fee revenue account, with a few entries of several kinds:

    1 deposit.0001 (custody -> u1 1000, correlation flow-1, chain transfer TX_HASH)
    2 transfer.0001 (u1 -> u2 300)      3 hold.0001 (PENDING u1 -> custody 50)
    4 fee.0001 (u1 -> fees 7)           5 transfer.0001.rev (CORRECTION of 2)
    """
    custody = await ledger.account("assets:custody:hot:a1:ethereum:ETH", constrained=False)
    user = await ledger.account("liabilities:users:u1:ethereum:ETH", owner="u1")
    other = await ledger.account("liabilities:users:u2:ethereum:ETH", owner="u2")
    fees = await ledger.account("revenue:fees:withdrawal:ethereum:ETH", constrained=False)
    await ledger.transfer(
        "deposit.0001", custody, user, 1_000, category="deposit.credit", correlation_id="flow-1",
        chain_transfer=resources.ChainTransferRef(chain="ethereum", tx_hash=TX_HASH),
    )  # fmt: skip
    await ledger.transfer("transfer.0001", user, other, 300)
    await ledger.transfer("hold.0001", user, custody, 50, kind=2, category="withdrawal.hold")
    await ledger.transfer("fee.0001", user, fees, 7, category="withdrawal.fee")
    await ledger.stub.ReverseJournalEntry(
        service.ReverseJournalEntryRequest(
            request_id="rev-0001",
            entry_id="transfer.0001.rev",
            corrects_entry_id="transfer.0001",
            category="transfer.reversal",
            description="wrong user",
        )
    )
    return custody, user, other, fees


async def _ids(ledger: Ledger, **filters: object) -> list[str]:
    """Entry ids of a ListJournalEntries listing, following every page."""
    ids: list[str] = []
    token = ""
    while True:
        page = await ledger.stub.ListJournalEntries(
            service.ListJournalEntriesRequest(page_token=token, **filters)  # type: ignore[arg-type]
        )
        ids.extend(found.entry_id for found in page.entries)
        token = page.next_page_token
        if not token:
            return ids


async def test_list_journal_entries_filters_and_pages(ledger: Ledger) -> None:
    await _books(ledger)
    everything = ["deposit.0001", "transfer.0001", "hold.0001", "fee.0001", "transfer.0001.rev"]
    assert await _ids(ledger) == everything
    assert await _ids(ledger, page_size=2) == everything
    assert await _ids(ledger, page_size=2, order=2) == everything[::-1]
    assert await _ids(ledger, kinds=[2, 6]) == ["hold.0001", "transfer.0001.rev"]
    assert await _ids(ledger, category="withdrawal") == ["hold.0001", "fee.0001"]
    assert await _ids(ledger, category="withdrawal.fee") == ["fee.0001"]
    assert await _ids(ledger, category="with") == []
    assert await _ids(ledger, correlation_id="flow-1") == ["deposit.0001"]
    assert await _ids(ledger, tx_hash=TX_HASH.lower()) == ["deposit.0001"]
    assert await _ids(ledger, asset=ASSET) == everything
    assert await _ids(ledger, asset="ethereum:USDC") == []
    assert await _ids(ledger, pending_status=1) == ["hold.0001"]
    assert await _ids(ledger, corrects_entry_id="transfer.0001") == ["transfer.0001.rev"]
    assert await _ids(ledger, start_sequence=2, end_sequence=4) == ["transfer.0001", "hold.0001"]
    first = await ledger.stub.GetJournalEntry(service.GetJournalEntryRequest(entry_id="transfer.0001"))
    assert await _ids(ledger, start_time=first.entry.post_time) == everything[1:]
    assert await _ids(ledger, end_time=first.entry.post_time) == everything[:1]
    listed = await ledger.stub.ListJournalEntries(service.ListJournalEntriesRequest(start_sequence=2))
    assert list(listed.entries[0].corrected_by_entry_ids) == ["transfer.0001.rev"]
    assert listed.entries[0] == first.entry
    await ledger.stub.PostPendingEntry(
        service.PostPendingEntryRequest(
            request_id="post-0001", entry_id="hold.0001.post", pending_entry_id="hold.0001"
        )
    )
    assert await _ids(ledger, pending_entry_id="hold.0001") == ["hold.0001.post"]
    assert await _ids(ledger, pending_status=2) == ["hold.0001"]


async def test_list_journal_entries_refuses_a_token_of_other_filters(ledger: Ledger) -> None:
    await _books(ledger)
    page = await ledger.stub.ListJournalEntries(service.ListJournalEntriesRequest(page_size=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ledger.stub.ListJournalEntries(
            service.ListJournalEntriesRequest(page_size=1, kinds=[1], page_token=page.next_page_token)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ledger.stub.ListJournalEntries(service.ListJournalEntriesRequest(page_token="not-a-token"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _lines(ledger: Ledger, **fields: object) -> tuple[list[resources.TrialBalanceLine], set[int]]:
    """Every trial balance line of ASSET (following pages) and the snapshot sequences of the pages."""
    lines: list[resources.TrialBalanceLine] = []
    sequences: set[int] = set()
    token = ""
    while True:
        page = await ledger.stub.ListTrialBalanceLines(
            service.ListTrialBalanceLinesRequest(asset=ASSET, page_token=token, **fields)  # type: ignore[arg-type]
        )
        lines.extend(page.lines)
        sequences.add(page.as_of_sequence)
        token = page.next_page_token
        if not token:
            return lines, sequences


async def test_list_trial_balance_lines(ledger: Ledger) -> None:
    custody, user, other, fees = await _books(ledger)
    idle = await ledger.account("liabilities:users:u9:ethereum:ETH", owner="u9")
    lines, sequences = await _lines(ledger, page_size=1)
    assert sequences == {5}
    assert [(line.code, line.account_id) for line in lines] == [
        ("assets:custody:hot:a1:ethereum:ETH", custody),
        ("liabilities:users:u1:ethereum:ETH", user),
        ("liabilities:users:u2:ethereum:ETH", other),  # 300 in and reversed: not a zero line
        ("revenue:fees:withdrawal:ethereum:ETH", fees),
    ]
    by_code = {line.code: line for line in lines}
    assert by_code["liabilities:users:u1:ethereum:ETH"].credit_balance == "993"
    assert by_code["liabilities:users:u1:ethereum:ETH"].debits_pending == "50"
    debit = sum(int(line.debit_balance) for line in lines)
    credit = sum(int(line.credit_balance) for line in lines)
    assert debit == credit == 1_000
    everything, _ = await _lines(ledger, include_zero_lines=True, page_size=2)
    assert [line.account_id for line in everything] == [custody, user, other, idle, fees]
    rolled, _ = await _lines(ledger, rollup_depth=2, page_size=1)
    assert [(line.code, line.account_count) for line in rolled] == [
        ("assets:custody", 1), ("liabilities:users", 3), ("revenue:fees", 1),
    ]  # fmt: skip
    users, _ = await _lines(ledger, code_prefix="liabilities:", include_zero_lines=True)
    assert [line.account_id for line in users] == [user, other, idle]
    history, sequences = await _lines(ledger, as_of_sequence=1, page_size=1)
    assert sequences == {1}
    assert [(line.account_id, line.credit_balance, line.debit_balance) for line in history] == [
        (custody, "0", "1000"), (user, "1000", "0"),
    ]  # fmt: skip


async def test_trial_balance_lines_pin_the_first_pages_snapshot(ledger: Ledger) -> None:
    custody, user, _other, _fees = await _books(ledger)
    first = await ledger.stub.ListTrialBalanceLines(
        service.ListTrialBalanceLinesRequest(asset=ASSET, page_size=1)
    )
    await ledger.transfer("deposit.0002", custody, user, 5, category="deposit.credit")
    rest = await ledger.stub.ListTrialBalanceLines(
        service.ListTrialBalanceLinesRequest(asset=ASSET, page_size=10, page_token=first.next_page_token)
    )
    assert rest.as_of_sequence == first.as_of_sequence == 5
    assert rest.lines[0].account_id == user and rest.lines[0].credit_balance == "993"


async def test_batch_get_balances_is_one_query(ledger: Ledger) -> None:
    custody, user, other, fees = await _books(ledger)
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    engine = ledger.app.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        response = await ledger.stub.BatchGetLedgerBalances(
            service.BatchGetLedgerBalancesRequest(account_ids=[fees, other, user, custody])
        )
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # Other statements (the outbox relay's poll) may run meanwhile; the read itself is one query.
    reads = [statement for statement in statements if "ledger_accounts" in statement]
    assert len(reads) == 1 and "ledger_accounts.account_id IN" in reads[0], reads
    assert [b.account_id for b in response.balances] == [fees, other, user, custody]
    assert [b.balance for b in response.balances] == ["7", "0", "993", "1000"]
    assert response.as_of_sequence == 5
    past = await ledger.stub.BatchGetLedgerBalances(
        service.BatchGetLedgerBalancesRequest(account_ids=[user, other], as_of_sequence=2)
    )
    assert [b.balance for b in past.balances] == ["700", "300"] and past.as_of_sequence == 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ledger.stub.BatchGetLedgerBalances(
            service.BatchGetLedgerBalancesRequest(account_ids=[user, "00000000-0000-4000-8000-000000000000"])
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
