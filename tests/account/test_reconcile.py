"""Orphan holds: a hold committed at the ledger under the id CreateFreeze would use, with no freeze
recorded (the gap a crash between the two commits leaves), is voided by the sweep once old enough;
a late retry of that CreateFreeze then holds again under a new version; holds of recorded freezes
and holds of others are never touched."""

from __future__ import annotations

import asyncio
import datetime
import time

import grpc
from finmesh.account.v1 import account_service_pb2 as service
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service

from svc.account import domain, store
from svc.account.ledger import LedgerGateway
from svc.account.reconcile import OrphanHoldReconciler
from svc.account.server import _hold_entry
from svc.kit import idempotency
from tests.account.conftest import Mesh, refused
from tests.account.test_freezes import figures, freeze_request

AGE_US = 900 * 1_000_000
PENDING, VOIDED = ledger_resources.PENDING_STATUS_PENDING, ledger_resources.PENDING_STATUS_VOIDED


def _now_us() -> int:
    return time.time_ns() // 1000


def _reconciler(mesh: Mesh) -> tuple[OrphanHoldReconciler, LedgerGateway]:
    gateway = LedgerGateway(mesh.channels[0])
    return OrphanHoldReconciler(mesh.account_app.database, gateway, age_us=AGE_US), gateway


async def _orphan(mesh: Mesh, gateway: LedgerGateway, account_id: str, request_id: str, amount: int) -> str:
    """Does CreateFreeze's ledger half only: commits the hold it would commit, records nothing."""
    async with mesh.account_app.database.transaction() as session:
        account = await store.account_by_id(session, account_id)
    assert account is not None
    freeze_id = domain.freeze_id_for(request_id)
    hold_id = domain.hold_entry_id(freeze_id, 0)
    assert await gateway.hold(_hold_entry(account, hold_id, amount, freeze_id))
    return hold_id


async def _entry(mesh: Mesh, entry_id: str) -> ledger_resources.JournalEntry:
    found = await mesh.ledger.GetJournalEntry(ledger_service.GetJournalEntryRequest(entry_id=entry_id))
    return found.entry


async def test_orphan_hold_is_voided_and_a_late_retry_holds_again(mesh: Mesh) -> None:
    reconciler, gateway = _reconciler(mesh)
    account = (await mesh.open()).account
    await mesh.deposit(account.ledger_account_id, 1_000)
    request = freeze_request(account.account_id, "freeze-orphan-1", amount="300")
    hold_id = await _orphan(mesh, gateway, account.account_id, request.request_id, 300)
    freeze_id = domain.freeze_id_for(request.request_id)
    held = await mesh.balance(account.account_id, (await _entry(mesh, hold_id)).sequence)
    assert (held.balance.available, held.balance.frozen) == ("700", "300")

    # Younger than the safe age: untouched.
    assert await reconciler.sweep(_now_us()) == 0
    assert (await _entry(mesh, hold_id)).pending_status == PENDING
    reconciler.next_sequence = 0

    # Old enough: voided at the ledger, under the reclaim id; the funds are free again.
    assert await reconciler.sweep(_now_us() + AGE_US) == 1
    hold = await _entry(mesh, hold_id)
    void = await _entry(mesh, domain.reclaim_entry_id(freeze_id, 0))
    assert hold.pending_status == VOIDED and hold.resolved_by_entry_id == void.entry_id
    assert void.kind == ledger_resources.ENTRY_KIND_VOID_PENDING and void.correlation_id == freeze_id
    freed = await mesh.balance(account.account_id, void.sequence)
    assert (freed.balance.available, freed.balance.frozen) == ("1000", "0")
    reconciler.next_sequence = 0
    assert await reconciler.sweep(_now_us() + AGE_US) == 0

    # The late retry holds again under version 1: the freeze is ACTIVE over a pending hold.
    placed = await mesh.accounts.CreateFreeze(request)
    assert placed.freeze.freeze_id == freeze_id and placed.freeze.state == 1
    assert placed.freeze.ledger_pending_entry_id == domain.hold_entry_id(freeze_id, 1)
    rehold = await _entry(mesh, placed.freeze.ledger_pending_entry_id)
    assert rehold.pending_status == PENDING and [p.amount for p in rehold.postings] == ["300", "300"]
    assert figures(placed.account) == ("1000", "700", "0", "300")
    assert await mesh.accounts.CreateFreeze(request) == placed
    changed = freeze_request(account.account_id, request.request_id, amount="301")
    await refused(
        mesh.accounts.CreateFreeze(changed), grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED"
    )
    assert await reconciler.sweep(_now_us() + 2 * AGE_US) == 0
    assert (await _entry(mesh, placed.freeze.ledger_pending_entry_id)).pending_status == PENDING

    # Released in part and in full from version 1 on; the books balance.
    release = {"account_id": account.account_id, "freeze_id": freeze_id, "note": "n", "released_by": "op"}
    part = await mesh.accounts.ReleaseFreeze(
        service.ReleaseFreezeRequest(request_id="release-orphan-1", amount="100", **release)
    )
    assert part.freeze.ledger_pending_entry_id == domain.hold_entry_id(freeze_id, 2)
    done = await mesh.accounts.ReleaseFreeze(
        service.ReleaseFreezeRequest(request_id="release-orphan-2", **release)
    )
    assert done.freeze.state == 2 and figures(done.account) == ("1000", "1000", "0", "0")
    assert (await mesh.ledger.GetTrialBalance(ledger_service.GetTrialBalanceRequest())).balanced


async def test_sweep_spares_recorded_freezes_and_others_holds(mesh: Mesh) -> None:
    reconciler, gateway = _reconciler(mesh)
    first = (await mesh.open("u1")).account
    second = (await mesh.open("u2")).account
    for account in (first, second):
        await mesh.deposit(account.ledger_account_id, 1_000)
    kept = await mesh.accounts.CreateFreeze(freeze_request(first.account_id, "freeze-kept-1", amount="100"))
    partial = await mesh.accounts.CreateFreeze(
        freeze_request(first.account_id, "freeze-kept-2", amount="200")
    )
    moved = await mesh.accounts.ReleaseFreeze(
        service.ReleaseFreezeRequest(
            request_id="release-kept-2", account_id=first.account_id,
            freeze_id=partial.freeze.freeze_id, amount="50", note="n", released_by="op",
        )
    )  # fmt: skip
    # A hold of another service (a withdrawal) and a hold filed under our category by someone else.
    withdrawal = await mesh.post(
        first.ledger_account_id, mesh.custody_id, 10, kind=2, category="withdrawal.hold"
    )
    foreign = await mesh.post(
        first.ledger_account_id, mesh.custody_id, 20, kind=2, category=domain.HOLD_CATEGORY
    )
    # An orphan on the second account, swept while its late retry races the sweep.
    request = freeze_request(second.account_id, "freeze-orphan-2", amount="400")
    await _orphan(mesh, gateway, second.account_id, request.request_id, 400)
    swept, placed = await asyncio.gather(
        reconciler.sweep(_now_us() + AGE_US), mesh.accounts.CreateFreeze(request)
    )
    assert swept in (0, 1)
    for entry_id in (
        kept.freeze.ledger_pending_entry_id,
        moved.freeze.ledger_pending_entry_id,
        withdrawal.entry_id,
        foreign.entry_id,
        placed.freeze.ledger_pending_entry_id,
    ):
        assert (await _entry(mesh, entry_id)).pending_status == PENDING, entry_id
    # Whichever went first, the freeze is ACTIVE over its own pending hold, and held once.
    assert placed.freeze.ledger_pending_entry_id == domain.hold_entry_id(placed.freeze.freeze_id, swept)
    pending = await mesh.ledger.ListJournalEntries(
        ledger_service.ListJournalEntriesRequest(
            correlation_id=placed.freeze.freeze_id, pending_status=PENDING, page_size=10
        )
    )
    assert [entry.entry_id for entry in pending.entries] == [placed.freeze.ledger_pending_entry_id]
    balance = await mesh.balance(second.account_id, pending.entries[0].sequence)
    assert (balance.balance.available, balance.balance.frozen) == ("600", "400")
    reconciler.next_sequence = 0
    assert await reconciler.sweep(_now_us() + 2 * AGE_US) == 0


async def test_retry_after_idempotency_purge_holds_nothing_more(mesh: Mesh) -> None:
    account = (await mesh.open()).account
    await mesh.deposit(account.ledger_account_id, 1_000)
    request = freeze_request(account.account_id, "freeze-purged-1", amount="100")
    placed = await mesh.accounts.CreateFreeze(request)
    await mesh.accounts.ReleaseFreeze(
        service.ReleaseFreezeRequest(
            request_id="release-purged-1", account_id=account.account_id,
            freeze_id=placed.freeze.freeze_id, note="n", released_by="op",
        )
    )  # fmt: skip
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    assert await idempotency.purge(mesh.account_app.database, later) >= 2
    # The freeze's hold is resolved, and its id still derives from the request_id: refused, and
    # no second hold is placed (it would be a hold of a recorded freeze, which no sweep reclaims).
    info = await refused(
        mesh.accounts.CreateFreeze(request), grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED"
    )
    assert info.metadata["freeze_id"] == placed.freeze.freeze_id
    entries = await mesh.ledger.ListJournalEntries(
        ledger_service.ListJournalEntriesRequest(
            category=domain.HOLD_CATEGORY, kinds=[ledger_resources.ENTRY_KIND_PENDING], page_size=10
        )
    )
    assert [entry.entry_id for entry in entries.entries] == [placed.freeze.ledger_pending_entry_id]
