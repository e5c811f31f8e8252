"""The account service's calls to the ledger, and the ledger's refusals as our typed errors.

Every mutating call carries an id derived from the account operation (entry ids, request ids),
so repeating an operation after a failure between the ledger's commit and ours replays the
ledger's result instead of applying it twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import grpc
from finmesh.ledger.v1 import ledger_resources_pb2 as resources
from finmesh.ledger.v1 import ledger_service_pb2 as service
from finmesh.ledger.v1 import ledger_service_pb2_grpc as service_grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2, status_pb2

from svc.account.domain import HOLD_CATEGORY, Account, Snapshot
from svc.kit import errors

# Calls made outside an RPC (event handling, the expiry sweep) have no caller deadline to inherit.
CALL_TIMEOUT_S = 10.0
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# The ledger reads at most 1,000 balances at one point; each account needs two (U and F).
ACCOUNTS_PER_READ_MAX = 500
LIABILITY = resources.ACCOUNT_TYPE_LIABILITY
NEVER_NEGATIVE = resources.BALANCE_CONSTRAINT_DEBITS_MUST_NOT_EXCEED_CREDITS
DEBIT = resources.POSTING_SIDE_DEBIT
CREDIT = resources.POSTING_SIDE_CREDIT

_ERRORS_BY_REASON: dict[str, type[errors.DomainError]] = {
    "NOT_FOUND": errors.NotFound,
    "ALREADY_EXISTS": errors.AlreadyExists,
    "IDEMPOTENCY_KEY_REUSED": errors.IdempotencyKeyReused,
    "INVALID_STATE": errors.InvalidState,
    "INSUFFICIENT_FUNDS": errors.InsufficientFunds,
    "FROZEN": errors.Frozen,
}
# How the ledger maps a batch entry's result code onto errors (see EntryResultCode).
_ERRORS_BY_RESULT: dict[int, type[errors.DomainError]] = {
    resources.ENTRY_RESULT_CODE_EXISTS_WITH_DIFFERENT_CONTENT: errors.IdempotencyKeyReused,
    resources.ENTRY_RESULT_CODE_ACCOUNT_NOT_FOUND: errors.NotFound,
    resources.ENTRY_RESULT_CODE_PENDING_ENTRY_NOT_FOUND: errors.NotFound,
    resources.ENTRY_RESULT_CODE_EXCEEDS_CREDITS: errors.InsufficientFunds,
    resources.ENTRY_RESULT_CODE_EXCEEDS_DEBITS: errors.InsufficientFunds,
    resources.ENTRY_RESULT_CODE_DEBITS_BLOCKED: errors.Frozen,
    resources.ENTRY_RESULT_CODE_CREDITS_BLOCKED: errors.Frozen,
}
_INVALID_ARGUMENT_RESULTS = frozenset(
    {
        resources.ENTRY_RESULT_CODE_UNBALANCED,
        resources.ENTRY_RESULT_CODE_ASSET_MISMATCH,
        resources.ENTRY_RESULT_CODE_AMOUNT_OVERFLOW,
    }
)


def _status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    raw = dict(error.trailing_metadata() or ()).get(STATUS_DETAILS_KEY)
    return status_pb2.Status.FromString(raw) if isinstance(raw, bytes) else status_pb2.Status()


def translate(error: grpc.aio.AioRpcError) -> errors.DomainError:
    """The ledger's refusal as our error, with the ledger's reason and metadata."""
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return errors.DependencyUnavailable(f"ledger: {error.details()}")
    info = error_details_pb2.ErrorInfo()
    request = error_details_pb2.BadRequest()
    for detail in _status(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            detail.Unpack(request)
    message = f"ledger: {error.details()}"
    if error.code() is grpc.StatusCode.INVALID_ARGUMENT:
        violations = [
            errors.FieldViolation(violation.field, violation.description, violation.reason)
            for violation in request.field_violations
        ]
        refused = errors.InvalidArgument(violations, message)
        refused.metadata.update(info.metadata)
        return refused
    error_type = _ERRORS_BY_REASON.get(info.reason)
    if error_type is None:
        return errors.DependencyUnavailable(message, metadata=dict(info.metadata))
    return error_type(message, metadata=dict(info.metadata))


def _result_error(result: resources.EntryResult) -> errors.DomainError:
    metadata = {
        "entry_result_code": resources.EntryResultCode.Name(result.code),
        "entry_id": result.entry_id,
    }
    if result.account_id:
        metadata["account_id"] = result.account_id
    message = f"ledger: {result.detail}"
    if result.code in _INVALID_ARGUMENT_RESULTS:
        refused = errors.InvalidArgument([errors.FieldViolation("entry", result.detail)], message)
        refused.metadata.update(metadata)
        return refused
    return _ERRORS_BY_RESULT.get(result.code, errors.InvalidState)(message, metadata=metadata)


def snapshot_of(user: resources.LedgerBalance, frozen: resources.LedgerBalance) -> Snapshot:
    """The snapshot of U and F read at one ledger sequence."""
    assert user.as_of_sequence == frozen.as_of_sequence, (user, frozen)
    return Snapshot(
        debits_posted=int(user.debits_posted),
        credits_posted=int(user.credits_posted),
        debits_pending=int(user.debits_pending),
        credits_pending=int(user.credits_pending),
        frozen=int(frozen.credits_pending),
        sequence=user.as_of_sequence,
        time_us=user.as_of_time.ToMicroseconds(),
    )


class LedgerGateway:
    """What the account service asks of the ledger."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = service_grpc.LedgerServiceStub(channel)

    async def open(self, code: str, asset: str, user_id: str) -> resources.LedgerAccount:
        """Creates (or finds) a user's never-negative liability account; refuses any other."""
        request = service.CreateLedgerAccountRequest(
            request_id="account.open." + hashlib.sha256(code.encode()).hexdigest()[:40],
            account=resources.LedgerAccount(
                code=code, type=LIABILITY, asset=asset, constraint=NEVER_NEGATIVE, owner_user_id=user_id
            ),
        )
        try:
            created = await self._stub.CreateLedgerAccount(request, timeout=CALL_TIMEOUT_S)
            return created.account
        except grpc.aio.AioRpcError as error:
            refused = translate(error)
            if not isinstance(refused, errors.AlreadyExists):
                raise refused from None
        found = await self.account(refused.metadata["account_id"])
        if (found.type, found.constraint, found.asset) != (LIABILITY, NEVER_NEGATIVE, asset):
            raise errors.InvalidState(
                f"ledger account {code} exists with another type, constraint or asset",
                metadata={"ledger_account_id": found.account_id},
            )
        return found

    async def account(self, ledger_account_id: str) -> resources.LedgerAccount:
        """One ledger account."""
        try:
            response = await self._stub.GetLedgerAccount(
                service.GetLedgerAccountRequest(account_id=ledger_account_id), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error) from None
        return response.account

    async def block_debits(self, account: Account, blocked: bool, request_id: str, reason: str) -> None:
        """Sets or clears debits_blocked on the user's ledger account (credits stay allowed)."""
        request = service.UpdateLedgerAccountRequest(
            request_id=request_id,
            account=resources.LedgerAccount(account_id=account.ledger_account_id, debits_blocked=blocked),
            update_mask=field_mask_pb2.FieldMask(paths=["debits_blocked"]),
            reason=reason,
        )
        try:
            await self._stub.UpdateLedgerAccount(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise translate(error) from None

    async def close(self, ledger_account_id: str, request_id: str, reason: str) -> None:
        """Closes a ledger account unless it is closed already."""
        if (await self.account(ledger_account_id)).status == resources.LEDGER_ACCOUNT_STATUS_CLOSED:
            return
        request = service.CloseLedgerAccountRequest(
            request_id=request_id, account_id=ledger_account_id, reason=reason
        )
        try:
            await self._stub.CloseLedgerAccount(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise translate(error) from None

    async def _commit(
        self, request_id: str, entries: Sequence[resources.JournalEntry]
    ) -> service.CreateJournalEntriesResponse:
        chain = [resources.JournalEntry() for _ in entries]
        for index, (linked, entry) in enumerate(zip(chain, entries, strict=True)):
            linked.CopyFrom(entry)
            linked.linked = index < len(entries) - 1
        try:
            response: service.CreateJournalEntriesResponse = await self._stub.CreateJournalEntries(
                service.CreateJournalEntriesRequest(request_id=request_id, entries=chain),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error) from None
        applied = (resources.ENTRY_RESULT_CODE_OK, resources.ENTRY_RESULT_CODE_EXISTS)
        failed = [result for result in response.results if result.code not in applied]
        if failed:
            # The failing entry reports its own code; the rest of the chain LINKED_ENTRY_FAILED.
            own = [r for r in failed if r.code != resources.ENTRY_RESULT_CODE_LINKED_ENTRY_FAILED]
            raise _result_error((own or failed)[0])
        return response

    async def commit(self, request_id: str, entries: Sequence[resources.JournalEntry]) -> int:
        """Commits entries, linked as one chain (all or nothing); returns the last one's sequence."""
        response = await self._commit(request_id, entries)
        return max(result.sequence for result in response.results)

    async def hold(self, entry: resources.JournalEntry) -> bool:
        """Commits a PENDING entry; whether it holds now. False means an entry of that id exists and
        was resolved already (for a freeze hold with no freeze: voided by the orphan sweep)."""
        assert entry.kind == resources.ENTRY_KIND_PENDING, entry
        [result] = (await self._commit(entry.entry_id, [entry])).results
        if result.code == resources.ENTRY_RESULT_CODE_OK:
            return True
        return (await self.entry(entry.entry_id)).pending_status == resources.PENDING_STATUS_PENDING

    async def pending_holds(
        self, *, committed_before_us: int, start_sequence: int, limit: int
    ) -> list[resources.JournalEntry]:
        """The PENDING freeze-hold entries still pending, committed before a time, from a sequence on."""
        request = service.ListJournalEntriesRequest(
            page_size=limit,
            kinds=[resources.ENTRY_KIND_PENDING],
            category=HOLD_CATEGORY,
            pending_status=resources.PENDING_STATUS_PENDING,
            start_sequence=start_sequence,
        )
        request.end_time.FromMicroseconds(committed_before_us)
        try:
            response = await self._stub.ListJournalEntries(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise translate(error) from None
        return list(response.entries)

    async def snapshots(self, accounts: Sequence[Account], *, as_of_sequence: int = 0) -> list[Snapshot]:
        """Each account's snapshot (U and F at one ledger point): now, or as of a sequence."""
        snapshots: list[Snapshot] = []
        for start in range(0, len(accounts), ACCOUNTS_PER_READ_MAX):
            chunk = accounts[start : start + ACCOUNTS_PER_READ_MAX]
            ids = [ledger_id for a in chunk for ledger_id in (a.ledger_account_id, a.frozen_account_id)]
            request = service.BatchGetLedgerBalancesRequest(account_ids=ids)
            if as_of_sequence:
                request.as_of_sequence = as_of_sequence
            try:
                response = await self._stub.BatchGetLedgerBalances(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                raise translate(error) from None
            found = list(response.balances)
            snapshots.extend(snapshot_of(found[index], found[index + 1]) for index in range(0, len(found), 2))
        return snapshots

    async def statement(
        self, request: service.ListAccountEntriesRequest
    ) -> service.ListAccountEntriesResponse:
        """A page of a ledger account's statement."""
        try:
            response: service.ListAccountEntriesResponse = await self._stub.ListAccountEntries(
                request, timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error) from None
        return response

    async def entry(self, entry_id: str) -> resources.JournalEntry:
        """One journal entry."""
        try:
            response = await self._stub.GetJournalEntry(
                service.GetJournalEntryRequest(entry_id=entry_id), timeout=CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error) from None
        return response.entry
