"""AccountService: translates the contract's messages to the domain and back, and sequences the
ledger calls and the local transaction of each operation.

Operations that change an account (freezes, closing) lock its row and make their ledger calls
inside that transaction, so that two operations on one account never interleave (a release must
not lift a debit block that a concurrent freeze just relied on). The ledger calls carry ids derived
from the operation, so a retry after a failure between the ledger's commit and ours converges.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from finmesh.account.v1 import account_resources_pb2 as resources
from finmesh.account.v1 import account_service_pb2 as service
from finmesh.account.v1 import account_service_pb2_grpc as service_grpc
from finmesh.ledger.v1 import ledger_resources_pb2 as ledger_resources
from finmesh.ledger.v1 import ledger_service_pb2 as ledger_service
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from svc.account import convert, domain, events, store
from svc.account.cache import BalanceCache
from svc.account.domain import Account, Freeze, FreezeState, Kind, Scope, Snapshot, Status
from svc.account.ledger import CREDIT, DEBIT, LedgerGateway
from svc.kit import errors, idempotency
from svc.kit.amount import AMOUNT_MAX
from svc.kit.context import call
from svc.kit.db import Database

SERVICE = "/finmesh.account.v1.AccountService/"
STAFF_ROLES = frozenset({"support", "operator", "approver", "admin", "auditor"})
ME = "me"
SYSTEM_PRINCIPAL = "account"
LISTED_STATUSES_DEFAULT = (Status.ACTIVE, Status.FROZEN)
DESCENDING = 2
ACTIVITY_STATUS = {
    ledger_resources.PENDING_STATUS_PENDING: resources.ACTIVITY_STATUS_PENDING,
    ledger_resources.PENDING_STATUS_POSTED: resources.ACTIVITY_STATUS_COMPLETED,
    ledger_resources.PENDING_STATUS_VOIDED: resources.ACTIVITY_STATUS_CANCELLED,
    ledger_resources.PENDING_STATUS_EXPIRED: resources.ACTIVITY_STATUS_CANCELLED,
}


def _now_us() -> int:
    return time.time_ns() // 1000


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


def _amount(text: str, field: str) -> int | None:
    """A request amount (the contract's pattern was checked), refused above the ledger's 2^256 - 1."""
    if not text:
        return None
    amount = int(text)
    if amount > AMOUNT_MAX:
        raise errors.InvalidArgument([errors.FieldViolation(field, "above 2^256 - 1", "range")])
    return amount


def _is_staff() -> bool:
    """Internal callers (no end user) and staff end users see every account."""
    served = call()
    user = served.user if served is not None else None
    return user is None or bool(user.roles & STAFF_ROLES)


def _require_visible(account: Account) -> None:
    """End users read only their own accounts; others are NOT_FOUND to them (no enumeration)."""
    served = call()
    user = served.user if served is not None else None
    if not _is_staff() and user is not None and user.subject != account.user_id:
        raise errors.NotFound(f"no account {account.account_id}")


def _require_staff() -> None:
    if not _is_staff():
        raise errors.PermissionDenied("freezes are visible to operators and support only")


def _hold_entry(
    account: Account, entry_id: str, amount: int, freeze_id: str
) -> ledger_resources.JournalEntry:
    """The PENDING entry (no timeout) moving `amount` from U towards F for a freeze."""
    return ledger_resources.JournalEntry(
        entry_id=entry_id,
        kind=ledger_resources.ENTRY_KIND_PENDING,
        category=domain.HOLD_CATEGORY,
        correlation_id=freeze_id,
        postings=[
            ledger_resources.Posting(
                account_id=account.ledger_account_id, side=DEBIT, asset=account.asset, amount=str(amount)
            ),
            ledger_resources.Posting(
                account_id=account.frozen_account_id, side=CREDIT, asset=account.asset, amount=str(amount)
            ),
        ],
    )


def _void_entry(entry_id: str, hold_entry_id: str) -> ledger_resources.JournalEntry:
    return ledger_resources.JournalEntry(
        entry_id=entry_id, kind=ledger_resources.ENTRY_KIND_VOID_PENDING, pending_entry_id=hold_entry_id
    )


class AccountServicer(service_grpc.AccountServiceServicer):
    """The account service's gRPC surface over its store, the ledger and the balance cache."""

    def __init__(
        self, database: Database, gateway: LedgerGateway, cache: BalanceCache, assets: Mapping[str, int]
    ) -> None:
        self.database = database
        self.gateway = gateway
        self.cache = cache
        self.assets = assets

    # Balances

    async def _snapshots(self, accounts: Sequence[Account], min_sequence: int = 0) -> list[Snapshot]:
        """Cached snapshots, read from the ledger (and cached) where missing or older than `min_sequence`."""
        cached = await self.cache.get_many([account.account_id for account in accounts])
        stale = [
            account
            for account in accounts
            if account.account_id not in cached or cached[account.account_id].sequence < min_sequence
        ]
        if stale:
            fresh = await self.gateway.snapshots(stale)
            for account, snapshot in zip(stale, fresh, strict=True):
                if snapshot.sequence < min_sequence:
                    raise errors.InvalidArgument(
                        [errors.FieldViolation("min_sequence", f"the ledger is at {snapshot.sequence}")]
                    )
                await self.cache.put(account.account_id, snapshot)
                cached[account.account_id] = snapshot
        return [cached[account.account_id] for account in accounts]

    def _message(self, account: Account, snapshot: Snapshot) -> resources.Account:
        figures = domain.balances(account.status, snapshot)
        return convert.account_message(account, figures, self.assets.get(account.asset, 0))

    async def _fresh_message(self, account: Account) -> resources.Account:
        """The account with balances read from the ledger now (after a change made through it)."""
        snapshot = (await self.gateway.snapshots([account]))[0]
        await self.cache.put(account.account_id, snapshot)
        return self._message(account, snapshot)

    async def _account(self, session: AsyncSession, account_id: str, *, lock: bool = False) -> Account:
        account = await store.account_by_id(session, account_id, lock=lock)
        if account is None:
            raise errors.NotFound(f"no account {account_id}", metadata={"account_id": account_id})
        _require_visible(account)
        return account

    async def _freeze(self, session: AsyncSession, account: Account, freeze_id: str) -> Freeze:
        freeze = await store.freeze_by_id(session, freeze_id)
        if freeze is None or freeze.account_id != account.account_id:
            raise errors.NotFound(f"no freeze {freeze_id} on this account", metadata={"freeze_id": freeze_id})
        return freeze

    # Accounts

    async def OpenAccount(self, request: service.OpenAccountRequest, context: Any) -> Any:
        """Opens the account of (user, asset, kind) with its two ledger accounts; returns it if it exists."""
        domain.check_user_id(request.user_id)
        if request.asset not in self.assets:
            raise domain.AssetDisabled(
                f"asset {request.asset} is not enabled", metadata={"asset": request.asset}
            )
        kind = Kind(request.kind)
        method = SERVICE + "OpenAccount"
        async with self.database.transaction() as session:
            # A reused request_id is refused before anything is created in the ledger.
            replay = await idempotency.lookup(session, method, request, service.OpenAccountResponse)
            if replay is not None:
                return replay
            existing = await store.account_by_owner(session, request.user_id, request.asset, kind)
        ledger_accounts: tuple[ledger_resources.LedgerAccount, ...] = ()
        if existing is None:
            ledger_accounts = tuple(
                [
                    await self.gateway.open(code, request.asset, request.user_id)
                    for code in domain.ledger_codes(request.user_id, request.asset, kind)
                ]
            )

        async def work(session: AsyncSession) -> service.OpenAccountResponse:
            found = await store.account_by_owner(session, request.user_id, request.asset, kind)
            if found is not None:
                snapshot = (await self._snapshots([found]))[0]
                return service.OpenAccountResponse(account=self._message(found, snapshot), created=False)
            user, frozen = ledger_accounts
            now_us = _now_us()
            account = Account(
                account_id=str(uuid.uuid4()),
                user_id=request.user_id,
                asset=request.asset,
                kind=kind,
                status=Status.ACTIVE,
                ledger_account_id=user.account_id,
                ledger_account_code=user.code,
                frozen_account_id=frozen.account_id,
                frozen_account_code=frozen.code,
                create_time_us=now_us,
                update_time_us=now_us,
            )
            await store.insert_account(session, account)
            message = await self._fresh_message(account)
            await events.publish_opened(session, message, account.version)
            return service.OpenAccountResponse(account=message, created=True)

        try:
            return await idempotency.run_once(
                self.database, method, request, service.OpenAccountResponse, work
            )
        except IntegrityError:
            # A concurrent open of the same (user, asset, kind) under another request_id won.
            return await idempotency.run_once(
                self.database, method, request, service.OpenAccountResponse, work
            )

    async def GetAccount(self, request: service.GetAccountRequest, context: Any) -> Any:
        """One account with its balances."""
        async with self.database.transaction() as session:
            account = await self._account(session, request.account_id)
        snapshot = (await self._snapshots([account]))[0]
        return service.GetAccountResponse(account=self._message(account, snapshot))

    async def ListAccounts(self, request: service.ListAccountsRequest, context: Any) -> Any:
        """A user's accounts ordered by asset then kind, with balances."""
        served = call()
        user = served.user if served is not None else None
        user_id = request.user_id
        if user_id == ME:
            if user is None:
                raise errors.InvalidArgument([errors.FieldViolation("user_id", "`me` needs an end user")])
            user_id = user.subject
        if not _is_staff() and user is not None and user.subject != user_id:
            raise errors.PermissionDenied("end users list only their own accounts")
        limit = _page_size(request.page_size)
        position = _position(request.page_token)
        after = (str(position["asset"]), int(position["kind"])) if position else None
        statuses = (Status(request.status),) if request.status else LISTED_STATUSES_DEFAULT
        async with self.database.transaction() as session:
            found = await store.list_accounts(
                session, user_id, after=after, limit=limit + 1, asset=request.asset, chain=request.chain,
                kind=int(request.kind), statuses=statuses,
            )  # fmt: skip
        page = found[:limit]
        response = service.ListAccountsResponse()
        for account, snapshot in zip(page, await self._snapshots(page), strict=True):
            message = self._message(account, snapshot)
            figures = message.balance
            if request.hide_zero_balances and {figures.total, figures.pending_incoming} == {"0"}:
                continue
            response.accounts.append(message)
        if len(found) > limit:
            last = page[-1]
            response.next_page_token = store.encode_token({"asset": last.asset, "kind": int(last.kind)})
        return response

    async def GetAccountBalance(self, request: service.GetAccountBalanceRequest, context: Any) -> Any:
        """An account's balances from the cache, or from the ledger when older than min_sequence."""
        async with self.database.transaction() as session:
            account = await self._account(session, request.account_id)
        snapshot = (await self._snapshots([account], request.min_sequence))[0]
        return service.GetAccountBalanceResponse(
            account_id=account.account_id,
            asset=account.asset,
            status=int(account.status),  # type: ignore[arg-type]
            balance=convert.balance_message(domain.balances(account.status, snapshot)),
        )

    async def BatchGetAccountBalances(
        self, request: service.BatchGetAccountBalancesRequest, context: Any
    ) -> Any:
        """Many accounts with their balances, in request order, in one cache read."""
        async with self.database.transaction() as session:
            found = await store.accounts_by_id(session, list(request.account_ids))
        for account_id in request.account_ids:
            if account_id not in found:
                raise errors.NotFound(f"no account {account_id}", metadata={"account_id": account_id})
            _require_visible(found[account_id])
        unique = [found[account_id] for account_id in dict.fromkeys(request.account_ids)]
        snapshots = await self._snapshots(unique, request.min_sequence)
        by_id = {account.account_id: snapshot for account, snapshot in zip(unique, snapshots, strict=True)}
        return service.BatchGetAccountBalancesResponse(
            accounts=[self._message(found[i], by_id[i]) for i in request.account_ids]
        )

    async def ListAccountActivities(self, request: service.ListAccountActivitiesRequest, context: Any) -> Any:
        """The account's history from the ledger's statement of U, newest first, one line per transfer."""
        async with self.database.transaction() as session:
            account = await self._account(session, request.account_id)
        statement = ledger_service.ListAccountEntriesRequest(
            account_id=account.ledger_account_id,
            page_size=_page_size(request.page_size),
            page_token=request.page_token,
            order=DESCENDING,  # type: ignore[arg-type]
        )
        if request.HasField("start_time"):
            statement.start_time.CopyFrom(request.start_time)
        if request.HasField("end_time"):
            statement.end_time.CopyFrom(request.end_time)
        page = await self.gateway.statement(statement)
        response = service.ListAccountActivitiesResponse(next_page_token=page.next_page_token)
        category = request.category
        for line in page.lines:
            activity = await self._activity(account, line)
            if activity is None or (request.status and activity.status != request.status):
                continue
            if (
                category
                and activity.category != category
                and not activity.category.startswith(category + ".")
            ):
                continue
            response.activities.append(activity)
        return response

    async def _activity(
        self, account: Account, line: ledger_resources.AccountStatementLine
    ) -> resources.AccountActivity | None:
        """One statement line as an activity line, or None for lines folded into another or hidden.

        Holds and their resolutions are one line (on the PENDING entry). Freeze holds and releases
        are never shown to the holder (no tipping-off); a capture moved money out and is shown.
        """
        entry = line.entry
        freeze = domain.is_freeze_entry(entry.entry_id)
        if entry.kind in (
            ledger_resources.ENTRY_KIND_VOID_PENDING,
            ledger_resources.ENTRY_KIND_EXPIRE_PENDING,
        ):
            return None
        if (entry.kind == ledger_resources.ENTRY_KIND_POST_PENDING) != freeze:
            return None
        debit, credit = int(line.debit_amount), int(line.credit_amount)
        activity = resources.AccountActivity(
            activity_id=entry.entry_id,
            sequence=entry.sequence,
            category=entry.category,
            direction=resources.ACTIVITY_DIRECTION_OUT if debit > credit else resources.ACTIVITY_DIRECTION_IN,
            amount=str(abs(debit - credit)),
            status=resources.ACTIVITY_STATUS_COMPLETED,
            description=entry.description,
            correlation_id=entry.correlation_id,
            tx_hash=entry.chain_transfer.tx_hash,
            total_after=line.balance_after.balance,
            create_time=entry.post_time,
            update_time=entry.post_time,
        )
        if entry.kind == ledger_resources.ENTRY_KIND_PENDING:
            activity.status = ACTIVITY_STATUS[entry.pending_status]
            if entry.resolved_by_entry_id:
                resolution = await self.gateway.entry(entry.resolved_by_entry_id)
                activity.sequence = resolution.sequence
                activity.update_time.CopyFrom(resolution.post_time)
                if entry.pending_status == ledger_resources.PENDING_STATUS_POSTED:
                    mine = [p for p in resolution.postings if p.account_id == account.ledger_account_id]
                    activity.amount = str(sum(int(posting.amount) for posting in mine))
        return activity

    async def CloseAccount(self, request: service.CloseAccountRequest, context: Any) -> Any:
        """ACTIVE -> CLOSED with every balance zero and no freeze or hold; closes both ledger accounts."""

        async def work(session: AsyncSession) -> service.CloseAccountResponse:
            account = await self._account(session, request.account_id, lock=True)
            domain.require_open(account)
            if account.status is Status.FROZEN or account.active_freezes:
                raise errors.InvalidState(
                    "account has active freezes", metadata={"account_id": account.account_id}
                )
            snapshot = (await self.gateway.snapshots([account]))[0]
            if not domain.closable(snapshot):
                raise errors.InvalidState(
                    "account has a balance or holds", metadata={"account_id": account.account_id}
                )
            for ledger_account_id, role in (
                (account.ledger_account_id, "user"),
                (account.frozen_account_id, "frozen"),
            ):
                await self.gateway.close(
                    ledger_account_id, f"account.close.{account.account_id}.{role}", request.reason
                )
            now_us = _now_us()
            closed = replace(
                account,
                status=Status.CLOSED,
                version=account.version + 1,
                update_time_us=now_us,
                close_time_us=now_us,
            )
            await store.update_account(session, closed)
            message = await self._fresh_message(closed)
            await events.publish_closed(session, message, closed.version, request.reason)
            return service.CloseAccountResponse(account=message)

        return await idempotency.run_once(
            self.database, SERVICE + "CloseAccount", request, service.CloseAccountResponse, work
        )

    # Freezes

    async def CreateFreeze(self, request: service.CreateFreezeRequest, context: Any) -> Any:
        """An AMOUNT freeze holds the amount in the ledger; an ACCOUNT freeze blocks the account's debits."""
        amount = _amount(request.amount, "amount") or 0
        freeze_id = domain.freeze_id_for(request.request_id)
        scope = Scope(request.scope)

        async def work(session: AsyncSession) -> service.CreateFreezeResponse:
            account = await self._account(session, request.account_id, lock=True)
            domain.require_open(account)
            if await store.freeze_by_id(session, freeze_id) is not None:
                # The request_id placed a freeze whose idempotency record was purged since.
                raise errors.IdempotencyKeyReused(
                    "request_id already placed a freeze", metadata={"freeze_id": freeze_id}
                )
            hold_id, hold_version = "", 0
            if scope is Scope.AMOUNT:
                # A retry after a crash between the ledger's commit and ours finds its hold
                # (EXISTS) and adopts it. If the orphan sweep voided that hold meanwhile (it waits
                # longer than any request deadline, and takes this account's lock, so it never
                # races this transaction), the retry holds again under the next version rather
                # than recording an ACTIVE freeze over a voided hold, or refusing a freeze the
                # caller still needs: the freeze is placed once, with the funds held now, or
                # refused like any freeze (INSUFFICIENT_FUNDS, FROZEN) if they no longer are.
                while True:
                    hold_id = domain.hold_entry_id(freeze_id, hold_version)
                    if await self.gateway.hold(_hold_entry(account, hold_id, amount, freeze_id)):
                        break
                    hold_version += 1
            elif not account.account_freezes:
                await self.gateway.block_debits(
                    account, True, f"account.freeze.{freeze_id}.block", f"account freeze {freeze_id}"
                )
            now_us = _now_us()
            freeze = Freeze(
                freeze_id=freeze_id,
                account_id=account.account_id,
                user_id=account.user_id,
                asset=account.asset,
                scope=scope,
                amount=amount,
                original_amount=amount,
                reason=int(request.reason),
                reason_detail=request.reason_detail,
                case_reference=request.case_reference,
                state=FreezeState.ACTIVE,
                hold_entry_id=hold_id,
                hold_version=hold_version,
                placed_by=request.placed_by,
                action_request_id=request.action_request_id,
                create_time_us=now_us,
                expire_time_us=request.expire_time.ToMicroseconds()
                if request.HasField("expire_time")
                else None,
            )
            await store.insert_freeze(session, freeze)
            amount_freezes = account.amount_freezes + (scope is Scope.AMOUNT)
            account_freezes = account.account_freezes + (scope is Scope.ACCOUNT)
            message = await self._account_changed(
                session, account, amount_freezes, account_freezes, freeze_id, now_us
            )
            await events.publish_freeze_placed(session, freeze)
            return service.CreateFreezeResponse(freeze=convert.freeze_message(freeze), account=message)

        return await idempotency.run_once(
            self.database, SERVICE + "CreateFreeze", request, service.CreateFreezeResponse, work
        )

    async def _account_changed(
        self,
        session: AsyncSession,
        account: Account,
        amount_freezes: int,
        account_freezes: int,
        freeze_id: str,
        now_us: int,
    ) -> resources.Account:
        """Writes new freeze counts (and the status they imply); the account with fresh balances."""
        updated = account
        if (amount_freezes, account_freezes) != (account.amount_freezes, account.account_freezes):
            updated = replace(
                account,
                amount_freezes=amount_freezes,
                account_freezes=account_freezes,
                status=domain.status_after_freezes(account, account_freezes),
                version=account.version + 1,
                update_time_us=now_us,
            )
            await store.update_account(session, updated)
        message = await self._fresh_message(updated)
        if updated.status is not account.status:
            await events.publish_status_changed(session, message, updated.version, account.status, freeze_id)
        return message

    async def ReleaseFreeze(self, request: service.ReleaseFreezeRequest, context: Any) -> Any:
        """Releases a freeze in full, or an AMOUNT freeze in part."""
        requested = _amount(request.amount, "amount")

        async def work(session: AsyncSession) -> service.ReleaseFreezeResponse:
            account = await self._account(session, request.account_id, lock=True)
            freeze = await self._freeze(session, account, request.freeze_id)
            released, message = await self.release(
                session, account, freeze, requested, by=request.released_by, note=request.note, expired=False
            )
            return service.ReleaseFreezeResponse(freeze=convert.freeze_message(released), account=message)

        return await idempotency.run_once(
            self.database, SERVICE + "ReleaseFreeze", request, service.ReleaseFreezeResponse, work
        )

    async def release(
        self,
        session: AsyncSession,
        account: Account,
        freeze: Freeze,
        requested: int | None,
        *,
        by: str,
        note: str,
        expired: bool,
    ) -> tuple[Freeze, resources.Account]:
        """Releases `requested` (None: all) of a freeze of a locked account; the freeze and account after."""
        domain.transition(freeze, FreezeState.RELEASED)
        amount = domain.release_amount(freeze, requested)
        now_us = _now_us()
        ended = replace(
            freeze, amount=0, state=FreezeState.RELEASED, end_time_us=now_us, ended_by=by, end_note=note,
            version=freeze.version + 1,
        )  # fmt: skip
        amount_freezes, account_freezes = account.amount_freezes, account.account_freezes
        if freeze.scope is Scope.AMOUNT:
            void_id = domain.release_entry_id(freeze.freeze_id, freeze.hold_version)
            remaining = freeze.amount - amount
            entries = [_void_entry(void_id, freeze.hold_entry_id)]
            if remaining:
                # Void and re-hold the rest in one linked chain: the remainder is never free.
                hold_id = domain.hold_entry_id(freeze.freeze_id, freeze.hold_version + 1)
                entries.append(_hold_entry(account, hold_id, remaining, freeze.freeze_id))
                ended = replace(
                    freeze, amount=remaining, hold_entry_id=hold_id, hold_version=freeze.hold_version + 1,
                    version=freeze.version + 1,
                )  # fmt: skip
            else:
                amount_freezes -= 1
            await self.gateway.commit(void_id, entries)
        else:
            account_freezes -= 1
            if not account_freezes:
                await self.gateway.block_debits(
                    account,
                    False,
                    f"account.freeze.{freeze.freeze_id}.unblock",
                    f"account freeze {freeze.freeze_id}",
                )
        await store.update_freeze(session, ended)
        message = await self._account_changed(
            session, account, amount_freezes, account_freezes, freeze.freeze_id, now_us
        )
        await events.publish_freeze_released(session, ended, amount, expired)
        return ended, message

    async def CaptureFreeze(self, request: service.CaptureFreezeRequest, context: Any) -> Any:
        """Moves an AMOUNT freeze's funds out: posts the hold into F, then F -> destination."""

        async def work(session: AsyncSession) -> service.CaptureFreezeResponse:
            account = await self._account(session, request.account_id, lock=True)
            freeze = await self._freeze(session, account, request.freeze_id)
            domain.transition(freeze, FreezeState.CAPTURED)
            destination = request.destination_ledger_account_code
            if not destination.endswith(f":{account.asset}"):
                raise errors.InvalidArgument(
                    [errors.FieldViolation("destination_ledger_account_code", f"must hold {account.asset}")]
                )
            post_id, transfer_id = domain.capture_entry_ids(freeze.freeze_id)
            description = request.note[: domain.ENTRY_DESCRIPTION_CHARS_MAX]
            post = ledger_resources.JournalEntry(
                entry_id=post_id,
                kind=ledger_resources.ENTRY_KIND_POST_PENDING,
                pending_entry_id=freeze.hold_entry_id,
                category=domain.CAPTURE_CATEGORY,
                description=description,
            )
            transfer = ledger_resources.JournalEntry(
                entry_id=transfer_id,
                kind=ledger_resources.ENTRY_KIND_STANDARD,
                category=domain.CAPTURE_CATEGORY,
                description=description,
                correlation_id=freeze.freeze_id,
                postings=[
                    ledger_resources.Posting(
                        account_id=account.frozen_account_id, side=DEBIT, asset=account.asset,
                        amount=str(freeze.amount),
                    ),
                    ledger_resources.Posting(
                        account_code=destination, side=CREDIT, asset=account.asset, amount=str(freeze.amount)
                    ),
                ],
            )  # fmt: skip
            await self.gateway.commit(post_id, [post, transfer])
            now_us = _now_us()
            captured = replace(
                freeze, amount=0, state=FreezeState.CAPTURED, end_time_us=now_us,
                ended_by=request.captured_by, end_note=request.note, capture_entry_id=post_id,
                version=freeze.version + 1,
            )  # fmt: skip
            await store.update_freeze(session, captured)
            message = await self._account_changed(
                session,
                account,
                account.amount_freezes - 1,
                account.account_freezes,
                freeze.freeze_id,
                now_us,
            )
            await events.publish_freeze_captured(session, captured, destination)
            return service.CaptureFreezeResponse(freeze=convert.freeze_message(captured), account=message)

        return await idempotency.run_once(
            self.database, SERVICE + "CaptureFreeze", request, service.CaptureFreezeResponse, work
        )

    async def GetFreeze(self, request: service.GetFreezeRequest, context: Any) -> Any:
        """One freeze (operators and support)."""
        _require_staff()
        async with self.database.transaction() as session:
            account = await self._account(session, request.account_id)
            freeze = await self._freeze(session, account, request.freeze_id)
        return service.GetFreezeResponse(freeze=convert.freeze_message(freeze))

    async def ListFreezes(self, request: service.ListFreezesRequest, context: Any) -> Any:
        """Freezes of an account or of all (`-`), newest first (operators and support)."""
        _require_staff()
        limit = _page_size(request.page_size)
        position = _position(request.page_token)
        after = (int(position["time_us"]), str(position["freeze_id"])) if position else None
        filters: dict[str, Any] = {}
        if request.user_id:
            filters["user_id"] = request.user_id
        for name in ("state", "scope", "reason"):
            if getattr(request, name):
                filters[name] = int(getattr(request, name))
        account_id = "" if request.account_id == "-" else request.account_id
        async with self.database.transaction() as session:
            found = await store.list_freezes(
                session, account_id=account_id, after=after, limit=limit + 1, filters=filters
            )
        response = service.ListFreezesResponse(freezes=[convert.freeze_message(f) for f in found[:limit]])
        if len(found) > limit:
            last = found[limit - 1]
            response.next_page_token = store.encode_token(
                {"time_us": last.create_time_us, "freeze_id": last.freeze_id}
            )
        return response

    async def expire_due(self, now_us: int, limit: int) -> int:
        """Releases freezes whose expire_time passed (at most `limit`); returns how many."""
        async with self.database.transaction() as session:
            due = await store.expired_freeze_ids(session, now_us, limit)
        for account_id, freeze_id in due:
            async with self.database.transaction() as session:
                account = await self._account(session, account_id, lock=True)
                freeze = await self._freeze(session, account, freeze_id)
                if freeze.state is FreezeState.ACTIVE:
                    await self.release(
                        session, account, freeze, None, by=SYSTEM_PRINCIPAL, note="expired", expired=True
                    )
        return len(due)
