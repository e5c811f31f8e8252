"""Reclaims orphan holds: ledger holds placed by CreateFreeze whose freeze was never recorded.

CreateFreeze commits the hold at the ledger, then records the freeze in our database. A crash
between the two leaves a hold that no freeze accounts for; a retry with the same request_id adopts
it, but a caller that never retries would leave the user's funds held forever (freeze holds have no
timeout). The sweep lists, through the ledger's ListJournalEntries (kind PENDING, category
`freeze.hold`, still PENDING, committed before now - age), the holds older than any request could
still be running, and voids those whose freeze id (derived from the entry id) has no record.

Each void runs inside a transaction holding the account's row lock, the lock CreateFreeze holds
from before its ledger call until its freeze is recorded: a late retry and the sweep are thus
serialised, and the sweep re-checks for the freeze under the lock. A retry that comes after the
void finds its hold resolved and holds again under the next version (see CreateFreeze).

Holds whose freeze exists are left alone, even when they are not the freeze's current hold (a
partial release whose local commit failed after its ledger chain): the funds still belong to a
freeze, and voiding them would free money a freeze covers.
"""

from __future__ import annotations

import logging

from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources

from svc.account import domain, store
from svc.account.ledger import DEBIT, LedgerGateway
from svc.kit import errors
from svc.kit.db import Database

log = logging.getLogger("finmesh.account.reconcile")

# Holds read from the ledger per page.
HOLDS_PER_PAGE = 500
# Pages read per sweep, so that one sweep stays short; the next sweep continues.
PAGES_PER_SWEEP_MAX = 20


class OrphanHoldReconciler:
    """Voids freeze holds older than `age_us` that have no freeze record."""

    def __init__(self, database: Database, gateway: LedgerGateway, *, age_us: int) -> None:
        assert age_us > 0, age_us
        self.database = database
        self.gateway = gateway
        self.age_us = age_us
        # Holds below this ledger sequence were examined: each had a freeze (and a freeze is never
        # deleted) or was voided. Kept in memory; a restarted service examines every hold once.
        self.next_sequence = 0

    async def sweep(self, now_us: int) -> int:
        """Examines the holds committed before now - age; returns how many it voided."""
        reclaimed = 0
        for _ in range(PAGES_PER_SWEEP_MAX):
            holds = await self.gateway.pending_holds(
                committed_before_us=now_us - self.age_us,
                start_sequence=self.next_sequence,
                limit=HOLDS_PER_PAGE,
            )
            ours = {entry.entry_id: domain.parse_hold_entry_id(entry.entry_id) for entry in holds}
            async with self.database.transaction() as session:
                present = await store.present_freeze_ids(
                    session, [parsed[0] for parsed in ours.values() if parsed is not None]
                )
            for entry in holds:
                parsed = ours[entry.entry_id]
                if parsed is not None and parsed[0] not in present:
                    reclaimed += await self._reclaim(entry, *parsed)
                # Only after the entry was dealt with: a failed void is tried again next sweep.
                self.next_sequence = entry.sequence + 1
            if len(holds) < HOLDS_PER_PAGE:
                break
        return reclaimed

    async def _reclaim(self, hold: ledger_resources.JournalEntry, freeze_id: str, version: int) -> int:
        debited = {posting.account_id for posting in hold.postings if posting.side == DEBIT}
        async with self.database.transaction() as session:
            owners = await store.accounts_by_ledger_ids(session, sorted(debited))
            if len(owners) != 1 or owners[0].ledger_account_id not in debited:
                log.error("hold %s debits no single account of ours; left for an operator", hold.entry_id)
                return 0
            account = await store.account_by_id(session, owners[0].account_id, lock=True)
            assert account is not None, owners
            if await store.freeze_by_id(session, freeze_id) is not None:
                return 0  # a retry of the CreateFreeze recorded it meanwhile
            void_id = domain.reclaim_entry_id(freeze_id, version)
            void = ledger_resources.JournalEntry(
                entry_id=void_id,
                kind=ledger_resources.ENTRY_KIND_VOID_PENDING,
                pending_entry_id=hold.entry_id,
                category=domain.RECLAIM_CATEGORY,
                correlation_id=freeze_id,
                description="orphan freeze hold: no freeze was recorded",
            )
            try:
                await self.gateway.commit(void_id, [void])
            except errors.InvalidState:
                log.warning("hold %s was resolved meanwhile; nothing to reclaim", hold.entry_id)
                return 0
        log.warning(
            "reclaimed orphan hold %s of account %s (freeze %s never recorded): voided by %s",
            hold.entry_id,
            account.account_id,
            freeze_id,
            void_id,
        )
        return 1
