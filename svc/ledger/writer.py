"""The single writer: every posting of this process goes through one task that group-commits.

Why one writer rather than row locks per request: a hot account (a clearing or fee account
in every transfer) makes row-locking transactions queue on that row one commit at a time,
each paying a durable WAL flush. The writer instead takes every submission waiting in its
queue (up to `group_entries_max` entries), validates them in memory against the balances it
locked, and commits them in one transaction: one flush for the whole group, and the hot
account is just a dict entry. Across processes (replicas) the writer's transaction locks the
ledger_state row first and then the touched accounts in account id order, so replicas
serialise instead of deadlocking, and sequences follow commit order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, IntegrityError

from svc.kit import errors
from svc.kit.db import Database
from svc.ledger import domain, events, store
from svc.ledger.domain import EntryDraft, Kind, Outcome

log = logging.getLogger("finmesh.ledger.writer")

GROUP_ENTRIES_MAX = 8_190
QUEUE_SUBMISSIONS_MAX = 4_096
EXPIRY_SWEEP_INTERVAL_MS = 1_000
EXPIRY_SWEEP_ENTRIES_MAX = 1_000


@dataclass
class _Submission:
    drafts: Sequence[EntryDraft]
    future: asyncio.Future[list[Outcome]]


class Writer:
    """Applies batches of entries, one group commit at a time; `submit` returns after the commit."""

    def __init__(self, database: Database, *, group_entries_max: int = GROUP_ENTRIES_MAX) -> None:
        assert 0 < group_entries_max <= GROUP_ENTRIES_MAX
        self.database = database
        self.group_entries_max = group_entries_max
        self.commits_total = 0
        self.entries_total = 0
        self._queue: asyncio.Queue[_Submission] = asyncio.Queue(QUEUE_SUBMISSIONS_MAX)
        self._task: asyncio.Task[None] | None = None

    async def submit(self, drafts: Sequence[EntryDraft]) -> list[Outcome]:
        """Applies `drafts` (one caller's batch) and returns one outcome per entry once durable."""
        assert 0 < len(drafts) <= domain.BATCH_ENTRIES_MAX, len(drafts)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="ledger-writer")
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Submission(drafts, future))
        return await future

    async def stop(self) -> None:
        """Stops the writer task; submissions still queued fail with UNAVAILABLE."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            submission = self._queue.get_nowait()
            if not submission.future.done():
                submission.future.set_exception(errors.DependencyUnavailable("the ledger is stopping"))

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            count = len(group[0].drafts)
            while not self._queue.empty() and count < self.group_entries_max:
                group.append(self._queue.get_nowait())
                count += len(group[-1].drafts)
            await self._commit(group)

    async def _commit(self, group: list[_Submission]) -> None:
        try:
            results = await self._apply([submission.drafts for submission in group])
        except (DBAPIError, IntegrityError, OSError) as failure:
            if len(group) > 1:
                # One submission's conflict (an entry id committed meanwhile by a replica) must
                # not fail the others: retry them one by one.
                for submission in group:
                    await self._commit([submission])
                return
            log.warning("ledger commit failed: %r", failure)
            _fail(group[0], errors.DependencyUnavailable("ledger commit failed; retry with the same entries"))
            return
        except BaseException as failure:
            for submission in group:
                _fail(
                    submission, failure if isinstance(failure, Exception) else RuntimeError("writer stopped")
                )
            raise
        for submission, outcomes in zip(group, results, strict=True):
            if not submission.future.done():
                submission.future.set_result(outcomes)

    async def _apply(self, segments: list[Sequence[EntryDraft]]) -> list[list[Outcome]]:
        drafts = [draft for segment in segments for draft in segment]
        async with self.database.transaction() as session:
            previous = await store.lock_state(session)
            referenced = {draft.entry_id for draft in drafts}
            referenced |= {draft.pending_entry_id for draft in drafts if draft.pending_entry_id}
            referenced |= {draft.corrects_entry_id for draft in drafts if draft.corrects_entry_id}
            known = await store.entries_by_id(session, referenced)
            account_ids = {
                posting.account_id for draft in drafts for posting in draft.postings if posting.account_id
            }
            account_ids |= {
                posting.account_id
                for draft in drafts
                if draft.pending_entry_id in known
                for posting in known[draft.pending_entry_id].postings
            }
            codes = {
                posting.account_code for draft in drafts for posting in draft.postings if posting.account_code
            }
            records = await store.lock_accounts(session, account_ids, codes)
            # Post times never go backwards, so "as of a time" is "as of a sequence".
            now_us = max(time.time_ns() // 1000, previous.time_us)
            book = domain.Book(
                accounts={account_id: record.account for account_id, record in records.items()},
                entries=known,
                last_sequence=previous.sequence,
                now_us=now_us,
            )
            results = domain.apply_batch(book, segments)
            await store.write_book(session, book, previous)
            await events.publish_entries(session, [outcome for outcomes in results for outcome in outcomes])
        self.commits_total += 1
        self.entries_total += len(book.created)
        return results


def _fail(submission: _Submission, failure: Exception) -> None:
    if not submission.future.done():
        submission.future.set_exception(failure)


class ExpirySweeper:
    """Releases holds whose timeout passed, with EXPIRE_PENDING entries `expire.<pending id>`."""

    def __init__(
        self, database: Database, writer: Writer, *, interval_ms: int = EXPIRY_SWEEP_INTERVAL_MS
    ) -> None:
        self.database = database
        self.writer = writer
        self.interval_ms = interval_ms
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts sweeping in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-expiry-sweeper")

    async def stop(self) -> None:
        """Stops sweeping."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sweep(self) -> int:
        """Expires every hold due now (at most EXPIRY_SWEEP_ENTRIES_MAX); returns how many."""
        async with self.database.transaction() as session:
            due = await store.expired_pending_ids(session, time.time_ns() // 1000, EXPIRY_SWEEP_ENTRIES_MAX)
        if not due:
            return 0
        drafts = [
            EntryDraft(
                entry_id=f"{domain.EXPIRE_ENTRY_PREFIX}{pending_id}",
                kind=Kind.EXPIRE_PENDING,
                postings=(),
                fingerprint=f"{domain.EXPIRE_ENTRY_PREFIX}{pending_id}",
                pending_entry_id=pending_id,
                description="hold expired",
                created_by=domain.SYSTEM_PRINCIPAL,
                system=True,
            )
            for pending_id in due
        ]
        outcomes = await self.writer.submit(drafts)
        return sum(1 for outcome in outcomes if outcome.code is domain.ResultCode.OK)

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("expiry sweep failed; retrying")
            await asyncio.sleep(self.interval_ms / 1000)
