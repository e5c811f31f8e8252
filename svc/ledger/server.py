"""LedgerService: translates the contract's messages to the domain and back, nothing else."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

from finmesh.ledger.v1 import ledger_resources_pb2 as resources
from finmesh.ledger.v1 import ledger_service_pb2 as service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as service_grpc
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from svc.kit import errors, idempotency
from svc.kit.context import call
from svc.kit.db import Database
from svc.ledger import convert, domain, events, store
from svc.ledger.domain import (
    Account,
    AccountStatus,
    AccountType,
    Constraint,
    Kind,
    PendingStatus,
    ResultCode,
)
from svc.ledger.store import AccountRecord, Snapshot
from svc.ledger.writer import Writer

ROLLUP_DEPTH_DEFAULT = 2
# A code has at most 16 segments, so rolling up to 16 keeps one line per account.
ACCOUNT_LINE_DEPTH = 16
LISTING_KEY_CHARS = 16
SORT_DESCENDING = 2
UPDATABLE_FIELDS = ("display_name", "description", "labels", "debits_blocked", "credits_blocked")


def _caller() -> str:
    served = call()
    return served.caller if served is not None and served.caller else "unknown"


def _now_us() -> int:
    return time.time_ns() // 1000


def _trial_lines(
    members: Sequence[tuple[AccountRecord, domain.Balance]], depth: int
) -> tuple[domain.TrialLine, ...]:
    """The trial balance lines of one asset's accounts rolled up to `depth` code segments."""
    trial = domain.trial_balance([(record.account, balance) for record, balance in members], depth)
    assert len(trial) <= 1, [asset.asset for asset in trial]
    return trial[0].lines if trial else ()


def _listing_key(request: Message, ignored: Sequence[str]) -> str:
    """A digest of a listing's filters: a page token is only valid with the filters it came from."""
    filters = type(request)()
    filters.CopyFrom(request)
    for name in ignored:
        filters.ClearField(name)
    return hashlib.sha256(filters.SerializeToString(deterministic=True)).hexdigest()[:LISTING_KEY_CHARS]


def _listing_position(request: Any, ignored: Sequence[str]) -> dict[str, Any]:
    """The position of a request's page token (with its filter digest under `listing`), or a new
    position holding only the digest on a first page."""
    key = _listing_key(request, ignored)
    position = _position(request.page_token)
    if position and position.get("listing") != key:
        raise errors.InvalidArgument(
            [errors.FieldViolation("page_token", "the token belongs to a listing with other filters")]
        )
    return position or {"listing": key}


def _listing_token(position: dict[str, Any], **at: Any) -> str:
    """The token of the next page: the listing's digest and where the page ended."""
    return store.encode_token({"listing": position["listing"], **at})


def _page_size(requested: int) -> int:
    assert 0 <= requested <= store.PAGE_SIZE_MAX, requested
    return requested or store.PAGE_SIZE_DEFAULT


def _position(token: str) -> dict[str, Any]:
    if not token:
        return {}
    position = store.decode_token(token)
    if position is None:
        raise errors.InvalidArgument([errors.FieldViolation("page_token", "not a token from this listing")])
    return position


class LedgerServicer(service_grpc.LedgerServiceServicer):
    """The ledger's gRPC surface over the writer (postings) and the store (everything else)."""

    def __init__(self, database: Database, writer: Writer) -> None:
        self.database = database
        self.writer = writer

    # Chart of accounts

    async def CreateLedgerAccount(self, request: service.CreateLedgerAccountRequest, context: Any) -> Any:
        """Creates an account; a taken code is ALREADY_EXISTS with the existing account's id."""
        given = request.account
        now_us = _now_us()
        record = AccountRecord(
            account=Account(
                account_id=str(uuid.uuid4()),
                code=given.code,
                type=AccountType(given.type),
                asset=given.asset,
                constraint=Constraint(given.constraint),
                debits_blocked=given.debits_blocked,
                credits_blocked=given.credits_blocked,
            ),
            display_name=given.display_name,
            description=given.description,
            owner_user_id=given.owner_user_id,
            chain=given.chain_address.chain,
            chain_address=given.chain_address.address,
            labels=dict(given.labels),
            created_by=_caller(),
            create_time_us=now_us,
            update_time_us=now_us,
        )

        async def work(session: AsyncSession) -> service.CreateLedgerAccountResponse:
            existing = await store.account_by_code(session, given.code)
            if existing is not None:
                raise errors.AlreadyExists(
                    f"account {given.code} exists", metadata={"account_id": existing.account.account_id}
                )
            await store.insert_account(session, record)
            await events.publish_account_created(session, record)
            return service.CreateLedgerAccountResponse(account=convert.account_message(record))

        return await idempotency.run_once(
            self.database, "/finmesh.ledger.v1.LedgerService/CreateLedgerAccount", request,
            service.CreateLedgerAccountResponse, work,
        )  # fmt: skip

    async def GetLedgerAccount(self, request: service.GetLedgerAccountRequest, context: Any) -> Any:
        """One account by id."""
        async with self.database.transaction() as session:
            record = await store.account_by_id(session, request.account_id)
        if record is None:
            raise errors.NotFound(f"no account {request.account_id}")
        return service.GetLedgerAccountResponse(account=convert.account_message(record))

    async def LookupLedgerAccount(self, request: service.LookupLedgerAccountRequest, context: Any) -> Any:
        """One account by code."""
        async with self.database.transaction() as session:
            record = await store.account_by_code(session, request.code)
        if record is None:
            raise errors.NotFound(f"no account {request.code}")
        return service.LookupLedgerAccountResponse(account=convert.account_message(record))

    async def ListLedgerAccounts(self, request: service.ListLedgerAccountsRequest, context: Any) -> Any:
        """Accounts ordered by code, filtered, paginated."""
        limit = _page_size(request.page_size)
        filters: dict[str, Any] = {}
        if request.type:
            filters["type"] = int(request.type)
        if request.asset:
            filters["asset"] = request.asset
        if request.owner_user_id:
            filters["owner_user_id"] = request.owner_user_id
        if request.status:
            filters["status"] = int(request.status)
        if request.chain:
            filters["chain"] = request.chain
        after = str(_position(request.page_token).get("code", ""))
        async with self.database.transaction() as session:
            records = await store.list_accounts(
                session, after_code=after, limit=limit + 1, filters=filters, code_prefix=request.code_prefix
            )
        token = store.encode_token({"code": records[limit - 1].account.code}) if len(records) > limit else ""
        return service.ListLedgerAccountsResponse(
            accounts=[convert.account_message(record) for record in records[:limit]], next_page_token=token
        )

    async def UpdateLedgerAccount(self, request: service.UpdateLedgerAccountRequest, context: Any) -> Any:
        """Changes names, labels and debit/credit blocks; the writer sees blocks from its next commit."""
        paths = list(dict.fromkeys(request.update_mask.paths))
        assert set(paths) <= set(UPDATABLE_FIELDS), paths

        async def work(session: AsyncSession) -> service.UpdateLedgerAccountResponse:
            record = await store.account_by_id(session, request.account.account_id, lock=True)
            if record is None:
                raise errors.NotFound(f"no account {request.account.account_id}")
            values: dict[str, Any] = {path: getattr(request.account, path) for path in paths}
            if "labels" in values:
                values["labels"] = dict(request.account.labels)
            values["update_time_us"] = _now_us()
            await store.update_account(session, record.account.account_id, values)
            updated = await store.account_by_id(session, record.account.account_id)
            assert updated is not None
            await events.publish_account_updated(session, updated, paths, request.reason)
            return service.UpdateLedgerAccountResponse(account=convert.account_message(updated))

        return await idempotency.run_once(
            self.database, "/finmesh.ledger.v1.LedgerService/UpdateLedgerAccount", request,
            service.UpdateLedgerAccountResponse, work,
        )  # fmt: skip

    async def CloseLedgerAccount(self, request: service.CloseLedgerAccountRequest, context: Any) -> Any:
        """ACTIVE -> CLOSED, only with every column netting to zero."""

        async def work(session: AsyncSession) -> service.CloseLedgerAccountResponse:
            record = await store.account_by_id(session, request.account_id, lock=True)
            if record is None:
                raise errors.NotFound(f"no account {request.account_id}")
            if record.account.status is not AccountStatus.ACTIVE:
                raise errors.InvalidState(
                    "account already closed", metadata={"account_id": request.account_id}
                )
            if not domain.can_close(record.account.balance):
                raise errors.InvalidState(
                    "account has a balance or holds", metadata={"account_id": request.account_id}
                )
            now_us = _now_us()
            await store.update_account(
                session,
                request.account_id,
                {"status": int(AccountStatus.CLOSED), "close_time_us": now_us, "update_time_us": now_us},
            )
            closed = await store.account_by_id(session, request.account_id)
            assert closed is not None and closed.account.status is AccountStatus.CLOSED
            await events.publish_account_closed(session, closed, request.reason)
            return service.CloseLedgerAccountResponse(account=convert.account_message(closed))

        return await idempotency.run_once(
            self.database, "/finmesh.ledger.v1.LedgerService/CloseLedgerAccount", request,
            service.CloseLedgerAccountResponse, work,
        )  # fmt: skip

    # Postings

    async def _submit_one(self, entry: resources.JournalEntry) -> tuple[domain.Outcome, bool]:
        outcome = (await self.writer.submit([convert.draft(entry, created_by=_caller(), linked=False)]))[0]
        if not outcome.code.applied:
            raise domain.refusal(outcome)
        return outcome, outcome.code is ResultCode.EXISTS

    async def _balances_after(self, outcome: domain.Outcome) -> list[resources.LedgerBalance]:
        if outcome.code is ResultCode.OK:
            return convert.balances_after(outcome)
        entry = outcome.entry
        assert entry is not None
        account_ids = list(dict.fromkeys(posting.account_id for posting in entry.postings))
        async with self.database.transaction() as session:
            return await self._balances(session, account_ids, Snapshot(entry.sequence, entry.post_time_us))

    async def _balances(
        self, session: AsyncSession, account_ids: Sequence[str], at: Snapshot
    ) -> list[resources.LedgerBalance]:
        """The balances of `account_ids` at `at`, in their order, read in one query."""
        found = await store.accounts_at(session, account_ids, at.sequence)
        balances = []
        for account_id in account_ids:
            if account_id not in found:
                raise errors.NotFound(f"no account {account_id}", metadata={"account_id": account_id})
            record, balance = found[account_id]
            balances.append(convert.balance_message(record.account, balance, at))
        return balances

    async def _pending_now(self, entry_id: str) -> resources.JournalEntry:
        async with self.database.transaction() as session:
            pending = await store.entry_by_id(session, entry_id)
        assert pending is not None and pending.kind is Kind.PENDING
        return convert.entry_message(pending)

    async def CreateJournalEntry(self, request: service.CreateJournalEntryRequest, context: Any) -> Any:
        """Commits one entry; a refusal is a gRPC error carrying the result code."""
        outcome, replayed = await self._submit_one(request.entry)
        assert outcome.entry is not None
        return service.CreateJournalEntryResponse(
            entry=convert.entry_message(outcome.entry),
            replayed=replayed,
            balances=await self._balances_after(outcome),
        )

    async def CreateJournalEntries(self, request: service.CreateJournalEntriesRequest, context: Any) -> Any:
        """Commits a batch, each entry atomically and linked chains as a whole; one result per entry."""
        caller = _caller()
        drafts = [convert.draft(entry, created_by=caller, linked=entry.linked) for entry in request.entries]
        outcomes = await self.writer.submit(drafts)
        response = service.CreateJournalEntriesResponse()
        for outcome in outcomes:
            result = response.results.add(
                index=outcome.index,
                entry_id=outcome.entry_id,
                code=int(outcome.code),
                detail=outcome.detail,
            )
            if outcome.entry is not None:
                result.sequence = outcome.entry.sequence
                result.post_time.CopyFrom(convert.timestamp(outcome.entry.post_time_us))
            if outcome.posting_index is not None:
                result.posting_index = outcome.posting_index
            result.account_id = outcome.account_id
            if outcome.code is ResultCode.OK:
                response.applied_count += 1
                response.last_sequence = max(response.last_sequence, result.sequence)
            elif outcome.code is ResultCode.EXISTS:
                response.existing_count += 1
            else:
                response.failed_count += 1
        assert response.applied_count + response.existing_count + response.failed_count == len(
            request.entries
        )
        return response

    async def PostPendingEntry(self, request: service.PostPendingEntryRequest, context: Any) -> Any:
        """Posts a hold fully (no postings) or partially, releasing the rest."""
        entry = resources.JournalEntry(
            entry_id=request.entry_id,
            kind=resources.ENTRY_KIND_POST_PENDING,
            pending_entry_id=request.pending_entry_id,
            postings=request.postings,
            category=request.category,
            description=request.description,
        )
        outcome, replayed = await self._submit_one(entry)
        assert outcome.entry is not None
        return service.PostPendingEntryResponse(
            entry=convert.entry_message(outcome.entry),
            pending_entry=await self._pending_now(request.pending_entry_id),
            replayed=replayed,
            balances=await self._balances_after(outcome),
        )

    async def VoidPendingEntry(self, request: service.VoidPendingEntryRequest, context: Any) -> Any:
        """Voids a hold, releasing all of it."""
        entry = resources.JournalEntry(
            entry_id=request.entry_id,
            kind=resources.ENTRY_KIND_VOID_PENDING,
            pending_entry_id=request.pending_entry_id,
            description=request.description,
        )
        outcome, replayed = await self._submit_one(entry)
        assert outcome.entry is not None
        return service.VoidPendingEntryResponse(
            entry=convert.entry_message(outcome.entry),
            pending_entry=await self._pending_now(request.pending_entry_id),
            replayed=replayed,
            balances=await self._balances_after(outcome),
        )

    async def ReverseJournalEntry(self, request: service.ReverseJournalEntryRequest, context: Any) -> Any:
        """Commits a CORRECTION mirroring the corrected entry's postings with sides swapped."""
        async with self.database.transaction() as session:
            corrected = await store.entry_by_id(session, request.corrects_entry_id)
        if corrected is None:
            raise errors.NotFound(
                f"no entry {request.corrects_entry_id}",
                metadata={"entry_result_code": domain.code_name(ResultCode.CORRECTED_ENTRY_NOT_FOUND)},
            )
        if corrected.kind not in domain.CORRECTABLE_KINDS:
            raise errors.InvalidState(
                f"a {corrected.kind.name} entry is not reversed",
                metadata={"entry_result_code": domain.code_name(ResultCode.CORRECTED_ENTRY_NOT_CORRECTABLE)},
            )
        entry = resources.JournalEntry(
            entry_id=request.entry_id,
            kind=resources.ENTRY_KIND_CORRECTION,
            corrects_entry_id=request.corrects_entry_id,
            category=request.category,
            description=request.description,
            correlation_id=request.correlation_id,
            postings=[
                resources.Posting(
                    account_id=posting.account_id,
                    side=resources.POSTING_SIDE_CREDIT
                    if posting.side is domain.Side.DEBIT
                    else resources.POSTING_SIDE_DEBIT,
                    asset=posting.asset,
                    amount=str(posting.amount),
                    memo=posting.memo,
                )
                for posting in corrected.postings
            ],
        )
        outcome, replayed = await self._submit_one(entry)
        assert outcome.entry is not None
        return service.ReverseJournalEntryResponse(
            entry=convert.entry_message(outcome.entry),
            replayed=replayed,
            balances=await self._balances_after(outcome),
        )

    # Queries

    async def ListJournalEntries(self, request: service.ListJournalEntriesRequest, context: Any) -> Any:
        """Entries of the whole ledger in sequence order, filtered, paginated by sequence."""
        limit = _page_size(request.page_size)
        position = _listing_position(request, ("page_token", "page_size"))
        where = store.EntryFilter(
            kinds=tuple(Kind(kind) for kind in request.kinds),
            category=request.category,
            correlation_id=request.correlation_id,
            asset=request.asset,
            tx_hash=request.tx_hash,
            pending_status=PendingStatus(request.pending_status),
            pending_entry_id=request.pending_entry_id,
            corrects_entry_id=request.corrects_entry_id,
            start_time_us=request.start_time.ToMicroseconds() if request.HasField("start_time") else None,
            end_time_us=request.end_time.ToMicroseconds() if request.HasField("end_time") else None,
            start_sequence=request.start_sequence,
            end_sequence=request.end_sequence,
        )
        async with self.database.transaction() as session:
            found = await store.list_entries(
                session,
                where,
                after_sequence=int(position.get("sequence", 0)),
                descending=request.order == SORT_DESCENDING,
                limit=limit + 1,
            )
            corrected_by = await store.corrections_of(session, [entry.entry_id for entry in found[:limit]])
        response = service.ListJournalEntriesResponse(
            entries=[convert.entry_message(e, corrected_by.get(e.entry_id, ())) for e in found[:limit]]
        )
        if len(found) > limit:
            response.next_page_token = _listing_token(position, sequence=found[limit - 1].sequence)
        return response

    async def ListTrialBalanceLines(self, request: service.ListTrialBalanceLinesRequest, context: Any) -> Any:
        """One asset's trial balance lines ordered by code, per account or rolled up, paginated at the
        snapshot the first page pinned."""
        limit = _page_size(request.page_size)
        position = _listing_position(request, ("page_token", "page_size", "as_of_time", "as_of_sequence"))
        after = str(position.get("code", ""))
        async with self.database.transaction() as session:
            if "sequence" in position:
                at = Snapshot(int(position["sequence"]), 0)
            else:
                at = await self._snapshot(session, request)
            if request.rollup_depth:
                members = await store.asset_accounts_at(
                    session,
                    request.asset,
                    at.sequence,
                    code_prefix=request.code_prefix,
                    after_code="",
                    limit=None,
                )
                lines = [line for line in _trial_lines(members, request.rollup_depth) if line.code > after]
                lines = [line for line in lines if request.include_zero_lines or any(line.totals.columns())]
            else:
                lines = await self._account_lines(session, request, at, after, limit + 1)
        response = service.ListTrialBalanceLinesResponse(as_of_sequence=at.sequence)
        for line in lines[:limit]:
            response.lines.add(
                code=line.code,
                type=int(line.type),
                account_id=line.account_id,
                account_count=line.account_count,
                debits_posted=str(line.totals.debits_posted),
                credits_posted=str(line.totals.credits_posted),
                debits_pending=str(line.totals.debits_pending),
                credits_pending=str(line.totals.credits_pending),
                debit_balance=str(line.debit_balance),
                credit_balance=str(line.credit_balance),
            )
        if len(lines) > limit:
            response.next_page_token = _listing_token(
                position, sequence=at.sequence, code=lines[limit - 1].code
            )
        return response

    async def _account_lines(
        self,
        session: AsyncSession,
        request: service.ListTrialBalanceLinesRequest,
        at: Snapshot,
        after: str,
        count: int,
    ) -> list[domain.TrialLine]:
        """Up to `count` single-account lines after code `after`, reading accounts a page at a time
        until enough of them have a non-zero column (unless zero lines are asked for)."""
        lines: list[domain.TrialLine] = []
        while len(lines) < count:
            members = await store.asset_accounts_at(
                session,
                request.asset,
                at.sequence,
                code_prefix=request.code_prefix,
                after_code=after,
                limit=count,
            )
            found = _trial_lines(members, ACCOUNT_LINE_DEPTH)
            lines.extend(line for line in found if request.include_zero_lines or any(line.totals.columns()))
            if len(members) < count:
                break
            after = members[-1][0].account.code
        return lines[:count]

    async def GetJournalEntry(self, request: service.GetJournalEntryRequest, context: Any) -> Any:
        """One entry by id, with the corrections that reference it."""
        async with self.database.transaction() as session:
            entry = await store.entry_by_id(session, request.entry_id)
            corrected_by = (
                await store.corrections_of(session, [request.entry_id]) if entry is not None else {}
            )
        if entry is None:
            raise errors.NotFound(f"no entry {request.entry_id}")
        return service.GetJournalEntryResponse(
            entry=convert.entry_message(entry, corrected_by.get(request.entry_id, ()))
        )

    async def _snapshot(self, session: AsyncSession, request: Any) -> Snapshot:
        which = request.WhichOneof("as_of")
        latest = await store.snapshot(session)
        if which == "as_of_time":
            return await store.snapshot_at_time(session, request.as_of_time.ToMicroseconds())
        if which == "as_of_sequence" and request.as_of_sequence < latest.sequence:
            return await store.snapshot_at_sequence(session, request.as_of_sequence)
        return latest

    async def GetLedgerBalance(self, request: service.GetLedgerBalanceRequest, context: Any) -> Any:
        """An account's balance now or as of a time or sequence."""
        async with self.database.transaction() as session:
            at = await self._snapshot(session, request)
            balances = await self._balances(session, [request.account_id], at)
        return service.GetLedgerBalanceResponse(balance=balances[0])

    async def BatchGetLedgerBalances(
        self, request: service.BatchGetLedgerBalancesRequest, context: Any
    ) -> Any:
        """Balances of many accounts at one point, read in one query."""
        async with self.database.transaction() as session:
            at = await self._snapshot(session, request)
            balances = await self._balances(session, list(request.account_ids), at)
        return service.BatchGetLedgerBalancesResponse(balances=balances, as_of_sequence=at.sequence)

    async def ListAccountEntries(self, request: service.ListAccountEntriesRequest, context: Any) -> Any:
        """An account's statement: entries with the balance after each, paginated by sequence."""
        limit = _page_size(request.page_size)
        descending = request.order == SORT_DESCENDING
        after = int(_position(request.page_token).get("sequence", 0))
        async with self.database.transaction() as session:
            record = await store.account_by_id(session, request.account_id)
            if record is None:
                raise errors.NotFound(f"no account {request.account_id}")
            rows = await store.statement(
                session,
                request.account_id,
                after_sequence=after,
                descending=descending,
                start_sequence=request.start_sequence,
                end_sequence=request.end_sequence,
                start_time_us=request.start_time.ToMicroseconds() if request.HasField("start_time") else None,
                end_time_us=request.end_time.ToMicroseconds() if request.HasField("end_time") else None,
                limit=limit + 1,
            )
            opening: domain.Balance | None = None
            if rows and not after and not descending:
                first = rows[0].entry.sequence
                opening = (await store.balances_at(session, [request.account_id], first - 1)).get(
                    request.account_id, (domain.ZERO, 0)
                )[0]
        response = service.ListAccountEntriesResponse()
        for row in rows[:limit]:
            entry = row.entry
            mine = [posting for posting in entry.postings if posting.account_id == request.account_id]
            response.lines.add(
                entry=convert.entry_message(entry),
                debit_amount=str(sum(p.amount for p in mine if p.side is domain.Side.DEBIT)),
                credit_amount=str(sum(p.amount for p in mine if p.side is domain.Side.CREDIT)),
                balance_after=convert.balance_message(
                    record.account, row.balance_after, Snapshot(entry.sequence, entry.post_time_us)
                ),
            )
        if len(rows) > limit:
            response.next_page_token = store.encode_token({"sequence": rows[limit - 1].entry.sequence})
        if opening is not None:
            first_entry = rows[0].entry
            response.opening_balance.CopyFrom(
                convert.balance_message(
                    record.account, opening, Snapshot(first_entry.sequence - 1, first_entry.post_time_us)
                )
            )
        return response

    async def GetTrialBalance(self, request: service.GetTrialBalanceRequest, context: Any) -> Any:
        """Sums of every account per asset, rolled up by code prefix, at one consistent point."""
        depth = request.rollup_depth or ROLLUP_DEPTH_DEFAULT
        async with self.database.transaction() as session:
            at = await self._snapshot(session, request)
            records = await store.all_accounts(session, list(request.assets))
            latest = await store.snapshot(session)
            if at.sequence < latest.sequence:
                found = await store.balances_at(session, [r.account.account_id for r in records], at.sequence)
                balances = {key: value[0] for key, value in found.items()}
            else:
                balances = {record.account.account_id: record.account.balance for record in records}
        response = service.GetTrialBalanceResponse(
            as_of_sequence=at.sequence, as_of_time=convert.timestamp(at.time_us)
        )
        trial = domain.trial_balance(
            [(r.account, balances.get(r.account.account_id, domain.ZERO)) for r in records], depth
        )
        for asset in trial:
            message = response.assets.add(
                asset=asset.asset,
                total_debits_posted=str(asset.totals.debits_posted),
                total_credits_posted=str(asset.totals.credits_posted),
                total_debits_pending=str(asset.totals.debits_pending),
                total_credits_pending=str(asset.totals.credits_pending),
                total_debit_balance=str(asset.debit_balance),
                total_credit_balance=str(asset.credit_balance),
                balanced=asset.balanced,
            )
            for line in asset.lines:
                if not request.include_zero_lines and not any(line.totals.columns()):
                    continue
                message.lines.add(
                    code=line.code,
                    type=int(line.type),
                    account_id=line.account_id,
                    account_count=line.account_count,
                    debits_posted=str(line.totals.debits_posted),
                    credits_posted=str(line.totals.credits_posted),
                    debits_pending=str(line.totals.debits_pending),
                    credits_pending=str(line.totals.credits_pending),
                    debit_balance=str(line.debit_balance),
                    credit_balance=str(line.credit_balance),
                )
        response.balanced = all(asset.balanced for asset in trial)
        return response
