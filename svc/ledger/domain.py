"""The ledger's rules: accounts, balances, journal entries and the two-phase state machine.

Pure: `apply_batch` validates entries against an in-memory `Book` (the balances of the accounts
the writer has locked) and returns what to write; it never touches the database. Amounts are
Python ints in base units; the only limit is the contract's 2^256 - 1 per account column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum

from svc.kit import errors
from svc.kit.amount import AMOUNT_MAX

BATCH_ENTRIES_MAX = 8190
ENTRY_POSTINGS_MAX = 128
EXPIRE_ENTRY_PREFIX = "expire."
SYSTEM_PRINCIPAL = "ledger"


class AccountType(IntEnum):
    """Type of a ledger account; fixes its normal side (see ledger_resources.proto)."""

    ASSET = 1
    LIABILITY = 2
    EQUITY = 3
    REVENUE = 4
    EXPENSE = 5


DEBIT_NORMAL_TYPES = frozenset({AccountType.ASSET, AccountType.EXPENSE})


class Constraint(IntEnum):
    """Balance constraint enforced on every entry that touches an account."""

    NONE = 1
    DEBITS_MUST_NOT_EXCEED_CREDITS = 2
    CREDITS_MUST_NOT_EXCEED_DEBITS = 3


class AccountStatus(IntEnum):
    """Lifecycle of an account: ACTIVE -> CLOSED (terminal)."""

    ACTIVE = 1
    CLOSED = 2


class Kind(IntEnum):
    """Kind of a journal entry."""

    STANDARD = 1
    PENDING = 2
    POST_PENDING = 3
    VOID_PENDING = 4
    EXPIRE_PENDING = 5
    CORRECTION = 6


RESOLVING_KINDS = frozenset({Kind.POST_PENDING, Kind.VOID_PENDING, Kind.EXPIRE_PENDING})
CORRECTABLE_KINDS = frozenset({Kind.STANDARD, Kind.POST_PENDING, Kind.CORRECTION})


class Side(IntEnum):
    """Side of a posting."""

    DEBIT = 1
    CREDIT = 2


class PendingStatus(IntEnum):
    """State of a PENDING entry; the other kinds are NONE."""

    NONE = 0
    PENDING = 1
    POSTED = 2
    VOIDED = 3
    EXPIRED = 4


PENDING_RESOLUTION = {
    Kind.POST_PENDING: PendingStatus.POSTED,
    Kind.VOID_PENDING: PendingStatus.VOIDED,
    Kind.EXPIRE_PENDING: PendingStatus.EXPIRED,
}


def resolve_pending(status: PendingStatus, kind: Kind) -> PendingStatus:
    """The one allowed transition of a hold: PENDING -> POSTED | VOIDED | EXPIRED, exactly once."""
    assert status is PendingStatus.PENDING, status
    return PENDING_RESOLUTION[kind]


class ResultCode(IntEnum):
    """Outcome of one entry (values of finmesh.ledger.v1.EntryResultCode)."""

    OK = 1
    EXISTS = 2
    EXISTS_WITH_DIFFERENT_CONTENT = 3
    LINKED_ENTRY_FAILED = 4
    LINKED_CHAIN_OPEN = 5
    UNBALANCED = 6
    ACCOUNT_NOT_FOUND = 7
    ACCOUNT_CLOSED = 8
    ASSET_MISMATCH = 9
    DEBITS_BLOCKED = 10
    CREDITS_BLOCKED = 11
    EXCEEDS_CREDITS = 12
    EXCEEDS_DEBITS = 13
    AMOUNT_OVERFLOW = 14
    PENDING_ENTRY_NOT_FOUND = 15
    PENDING_ENTRY_NOT_PENDING = 16
    PENDING_ENTRY_ALREADY_POSTED = 17
    PENDING_ENTRY_ALREADY_VOIDED = 18
    PENDING_ENTRY_EXPIRED = 19
    POSTING_NOT_IN_PENDING_ENTRY = 20
    EXCEEDS_PENDING_AMOUNT = 21
    CORRECTED_ENTRY_NOT_FOUND = 22
    CORRECTED_ENTRY_NOT_CORRECTABLE = 23
    DUPLICATE_IN_BATCH = 24
    KIND_NOT_ALLOWED = 25

    @property
    def applied(self) -> bool:
        """Whether the entry is in the ledger after this result (applied now or before)."""
        return self in (ResultCode.OK, ResultCode.EXISTS)


ALREADY_RESOLVED = {
    PendingStatus.POSTED: ResultCode.PENDING_ENTRY_ALREADY_POSTED,
    PendingStatus.VOIDED: ResultCode.PENDING_ENTRY_ALREADY_VOIDED,
    PendingStatus.EXPIRED: ResultCode.PENDING_ENTRY_EXPIRED,
}


@dataclass(frozen=True, slots=True)
class Balance:
    """The four columns of an account, each a non-negative integer of base units."""

    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def __post_init__(self) -> None:
        assert self.debits_posted >= 0 and self.credits_posted >= 0, self
        assert self.debits_pending >= 0 and self.credits_pending >= 0, self

    def columns(self) -> tuple[int, int, int, int]:
        """The columns in declaration order."""
        return (self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending)


ZERO = Balance()


@dataclass(frozen=True, slots=True)
class Account:
    """An account of the chart of accounts and its current balance."""

    account_id: str
    code: str
    type: AccountType
    asset: str
    constraint: Constraint
    status: AccountStatus = AccountStatus.ACTIVE
    debits_blocked: bool = False
    credits_blocked: bool = False
    balance: Balance = ZERO

    @property
    def debit_normal(self) -> bool:
        """Whether debits increase the account (assets and expenses)."""
        return self.type in DEBIT_NORMAL_TYPES

    def with_balance(self, balance: Balance) -> Account:
        """This account with another balance (`dataclasses.replace` inspects the fields on every
        call, and this runs once per posting on the write path)."""
        return Account(
            self.account_id,
            self.code,
            self.type,
            self.asset,
            self.constraint,
            self.status,
            self.debits_blocked,
            self.credits_blocked,
            balance,
        )


@dataclass(frozen=True, slots=True)
class BalanceView:
    """An account's balance as the contract reports it, with signed derived figures."""

    balance: int
    available: int
    pending_incoming: int


def view(account_type: AccountType, balance: Balance) -> BalanceView:
    """Posted balance on the normal side, available (minus holds) and pending incoming."""
    if account_type in DEBIT_NORMAL_TYPES:
        posted = balance.debits_posted - balance.credits_posted
        return BalanceView(posted, posted - balance.credits_pending, balance.debits_pending)
    posted = balance.credits_posted - balance.debits_posted
    return BalanceView(posted, posted - balance.debits_pending, balance.credits_pending)


def constraint_violation(constraint: Constraint, balance: Balance) -> ResultCode | None:
    """The refusal code when `balance` breaks `constraint` (holds count as spent), else None."""
    if constraint is Constraint.DEBITS_MUST_NOT_EXCEED_CREDITS:
        if balance.debits_posted + balance.debits_pending > balance.credits_posted:
            return ResultCode.EXCEEDS_CREDITS
    elif (
        constraint is Constraint.CREDITS_MUST_NOT_EXCEED_DEBITS
        and balance.credits_posted + balance.credits_pending > balance.debits_posted
    ):
        return ResultCode.EXCEEDS_DEBITS
    return None


def can_close(balance: Balance) -> bool:
    """An account closes only when posted columns net to zero and nothing is held."""
    return (
        balance.debits_posted == balance.credits_posted
        and balance.debits_pending == 0
        and balance.credits_pending == 0
    )


@dataclass(frozen=True, slots=True)
class PostingDraft:
    """A posting as submitted: the account by id or code (or both, which must agree)."""

    account_id: str
    account_code: str
    side: Side
    asset: str
    amount: int
    memo: str = ""


@dataclass(frozen=True, slots=True)
class Posting:
    """A posting as committed: both the account id and its code are known."""

    account_id: str
    account_code: str
    side: Side
    asset: str
    amount: int
    memo: str = ""

    def __post_init__(self) -> None:
        assert 0 < self.amount <= AMOUNT_MAX, self.amount


@dataclass(frozen=True, slots=True)
class EntryDraft:
    """A journal entry as submitted, with the fingerprint of its content for idempotency."""

    entry_id: str
    kind: Kind
    postings: tuple[PostingDraft, ...]
    fingerprint: str
    pending_entry_id: str = ""
    corrects_entry_id: str = ""
    timeout_ms: int | None = None
    category: str = ""
    description: str = ""
    correlation_id: str = ""
    chain_transfer: bytes = b""
    metadata: tuple[tuple[str, str], ...] = ()
    linked: bool = False
    created_by: str = ""
    # Only the ledger's own expiry sweep may write EXPIRE_PENDING entries.
    system: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    """A committed journal entry. Immutable but for the resolution fields of a PENDING entry."""

    sequence: int
    entry_id: str
    kind: Kind
    postings: tuple[Posting, ...]
    fingerprint: str
    post_time_us: int
    pending_entry_id: str = ""
    corrects_entry_id: str = ""
    timeout_ms: int | None = None
    category: str = ""
    description: str = ""
    correlation_id: str = ""
    chain_transfer: bytes = b""
    metadata: tuple[tuple[str, str], ...] = ()
    created_by: str = ""
    pending_status: PendingStatus = PendingStatus.NONE
    expire_time_us: int | None = None
    resolved_by_entry_id: str = ""
    resolve_time_us: int | None = None

    def __post_init__(self) -> None:
        assert self.sequence > 0, self.sequence
        assert (self.kind is Kind.PENDING) == (self.pending_status is not PendingStatus.NONE), self
        assert (self.kind in RESOLVING_KINDS) == bool(self.pending_entry_id), self


@dataclass(frozen=True, slots=True)
class BalanceAfter:
    """An account's balance right after an entry."""

    account: Account
    sequence: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one entry: the code and, when applied, the entry and balances after it."""

    index: int
    entry_id: str
    code: ResultCode
    entry: Entry | None = None
    resolved: Entry | None = None
    balances: tuple[BalanceAfter, ...] = ()
    posting_index: int | None = None
    account_id: str = ""
    detail: str = ""


@dataclass
class Book:
    """What a batch is validated against: locked accounts and the entries it may reference.

    `apply_batch` mutates it in place; an undo log makes a failed linked chain leave no trace.
    """

    accounts: dict[str, Account]
    entries: dict[str, Entry]
    last_sequence: int
    now_us: int
    account_ids_by_code: dict[str, str] = field(default_factory=dict)
    created: list[Entry] = field(default_factory=list)
    resolved: dict[str, Entry] = field(default_factory=dict)
    history: list[BalanceAfter] = field(default_factory=list)
    _undo: list[tuple[str, str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.account_ids_by_code = {account.code: account.account_id for account in self.accounts.values()}

    def _set_account(self, account: Account) -> None:
        self._undo.append(("account", account.account_id, self.accounts[account.account_id]))
        self.accounts[account.account_id] = account

    def _set_entry(self, entry: Entry) -> None:
        self._undo.append(("entry", entry.entry_id, self.entries.get(entry.entry_id)))
        self.entries[entry.entry_id] = entry

    def _mark(self) -> tuple[int, int, int, int, int]:
        return (len(self._undo), len(self.created), len(self.history), len(self.resolved), self.last_sequence)

    def _rollback(self, mark: tuple[int, int, int, int, int]) -> None:
        undo_length, created_length, history_length, _, last_sequence = mark
        while len(self._undo) > undo_length:
            kind, key, previous = self._undo.pop()
            if kind == "account":
                assert isinstance(previous, Account)
                self.accounts[key] = previous
            elif previous is None:
                del self.entries[key]
            else:
                assert isinstance(previous, Entry)
                self.entries[key] = previous
        for entry in self.created[created_length:]:
            self.resolved.pop(entry.pending_entry_id, None)
        del self.created[created_length:]
        del self.history[history_length:]
        self.last_sequence = last_sequence


class _Refused(Exception):
    """An entry breaks a rule; carries its result code to the batch loop (never escapes it)."""

    def __init__(
        self, code: ResultCode, detail: str, *, posting_index: int | None = None, account_id: str = ""
    ):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.posting_index = posting_index
        self.account_id = account_id


def apply_batch(book: Book, segments: Sequence[Sequence[EntryDraft]]) -> list[list[Outcome]]:
    """Applies each segment's entries in order, each atomically and linked chains as a whole.

    A segment is one caller's batch: `linked` chains and DUPLICATE_IN_BATCH never cross its
    boundary, so segments of several callers can share one commit. Returns one outcome per
    entry; the book then holds what to write (created, resolved, history, accounts).
    """
    results: list[list[Outcome]] = []
    for drafts in segments:
        assert 0 < len(drafts) <= BATCH_ENTRIES_MAX, len(drafts)
        outcomes: list[Outcome | None] = [None] * len(drafts)
        seen: set[str] = set()
        start = 0
        while start < len(drafts):
            end = start
            while drafts[end].linked and end + 1 < len(drafts):
                end += 1
            chain = range(start, end + 1)
            if drafts[end].linked:
                for index in chain:
                    code = ResultCode.LINKED_CHAIN_OPEN if index == end else ResultCode.LINKED_ENTRY_FAILED
                    outcomes[index] = Outcome(index, drafts[index].entry_id, code, detail="linked chain open")
                    seen.add(drafts[index].entry_id)
                break
            mark = book._mark()
            failed: Outcome | None = None
            for index in chain:
                draft = drafts[index]
                outcome = (
                    Outcome(index, draft.entry_id, ResultCode.DUPLICATE_IN_BATCH, detail="entry_id repeated")
                    if draft.entry_id in seen
                    else _apply_one(book, index, draft)
                )
                seen.add(draft.entry_id)
                outcomes[index] = outcome
                if not outcome.code.applied:
                    failed = outcome
                    break
            if failed is not None and len(chain) > 1:
                book._rollback(mark)
                for index in chain:
                    if index != failed.index:
                        outcomes[index] = Outcome(
                            index,
                            drafts[index].entry_id,
                            ResultCode.LINKED_ENTRY_FAILED,
                            detail="chain failed",
                        )
                        seen.add(drafts[index].entry_id)
            start = end + 1
        assert all(outcome is not None for outcome in outcomes)
        results.append([outcome for outcome in outcomes if outcome is not None])
    return results


def _apply_one(book: Book, index: int, draft: EntryDraft) -> Outcome:
    existing = book.entries.get(draft.entry_id)
    if existing is not None:
        if existing.fingerprint != draft.fingerprint:
            return Outcome(
                index,
                draft.entry_id,
                ResultCode.EXISTS_WITH_DIFFERENT_CONTENT,
                detail="entry_id used before with different content",
            )
        return Outcome(index, draft.entry_id, ResultCode.EXISTS, entry=existing)
    try:
        return _commit(book, index, draft)
    except _Refused as refused:
        return Outcome(
            index,
            draft.entry_id,
            refused.code,
            posting_index=refused.posting_index,
            account_id=refused.account_id,
            detail=refused.detail,
        )


def _resolve_postings(book: Book, draft: EntryDraft) -> tuple[Posting, ...]:
    postings = []
    for position, posting in enumerate(draft.postings):
        account_id = posting.account_id or book.account_ids_by_code.get(posting.account_code, "")
        account = book.accounts.get(account_id)
        if account is None or (posting.account_code and posting.account_code != account.code):
            raise _Refused(
                ResultCode.ACCOUNT_NOT_FOUND,
                f"no account {posting.account_id or posting.account_code}",
                posting_index=position,
                account_id=posting.account_id,
            )
        if posting.asset != account.asset:
            raise _Refused(
                ResultCode.ASSET_MISMATCH,
                f"posting asset {posting.asset} but account holds {account.asset}",
                posting_index=position,
                account_id=account_id,
            )
        if posting.amount > AMOUNT_MAX:
            raise _Refused(
                ResultCode.AMOUNT_OVERFLOW,
                "amount above 2^256 - 1",
                posting_index=position,
                account_id=account_id,
            )
        postings.append(
            Posting(account_id, account.code, posting.side, posting.asset, posting.amount, posting.memo)
        )
    return tuple(postings)


def _check_balanced(postings: Sequence[Posting]) -> None:
    net: dict[str, int] = {}
    for posting in postings:
        signed = posting.amount if posting.side is Side.DEBIT else -posting.amount
        net[posting.asset] = net.get(posting.asset, 0) + signed
    unbalanced = sorted(asset for asset, amount in net.items() if amount != 0)
    if unbalanced:
        raise _Refused(ResultCode.UNBALANCED, f"debits and credits differ for {', '.join(unbalanced)}")


def _pending_of(book: Book, draft: EntryDraft) -> Entry:
    pending = book.entries.get(draft.pending_entry_id)
    if pending is None:
        raise _Refused(ResultCode.PENDING_ENTRY_NOT_FOUND, f"no entry {draft.pending_entry_id}")
    if pending.kind is not Kind.PENDING:
        raise _Refused(ResultCode.PENDING_ENTRY_NOT_PENDING, f"{pending.entry_id} is {pending.kind.name}")
    if pending.pending_status is not PendingStatus.PENDING:
        raise _Refused(ALREADY_RESOLVED[pending.pending_status], f"{pending.entry_id} is already resolved")
    expired = pending.expire_time_us is not None and pending.expire_time_us <= book.now_us
    if expired and draft.kind is not Kind.EXPIRE_PENDING:
        raise _Refused(ResultCode.PENDING_ENTRY_EXPIRED, f"{pending.entry_id} expired")
    return pending


def _partial_post(pending: Entry, postings: tuple[Posting, ...]) -> None:
    held: dict[tuple[str, Side], int] = {}
    for posting in pending.postings:
        held[(posting.account_id, posting.side)] = (
            held.get((posting.account_id, posting.side), 0) + posting.amount
        )
    posted: dict[tuple[str, Side], int] = {}
    for position, posting in enumerate(postings):
        key = (posting.account_id, posting.side)
        if key not in held:
            raise _Refused(
                ResultCode.POSTING_NOT_IN_PENDING_ENTRY,
                "the pending entry has no such account and side",
                posting_index=position,
                account_id=posting.account_id,
            )
        posted[key] = posted.get(key, 0) + posting.amount
        if posted[key] > held[key]:
            raise _Refused(
                ResultCode.EXCEEDS_PENDING_AMOUNT,
                f"posts {posted[key]} of a hold of {held[key]}",
                posting_index=position,
                account_id=posting.account_id,
            )


def _check_blocks(book: Book, postings: Sequence[Posting]) -> None:
    for position, posting in enumerate(postings):
        account = book.accounts[posting.account_id]
        if account.status is AccountStatus.CLOSED:
            raise _Refused(
                ResultCode.ACCOUNT_CLOSED,
                "account closed",
                posting_index=position,
                account_id=account.account_id,
            )
        if posting.side is Side.DEBIT and account.debits_blocked:
            raise _Refused(
                ResultCode.DEBITS_BLOCKED,
                "debits blocked",
                posting_index=position,
                account_id=account.account_id,
            )
        if posting.side is Side.CREDIT and account.credits_blocked:
            raise _Refused(
                ResultCode.CREDITS_BLOCKED,
                "credits blocked",
                posting_index=position,
                account_id=account.account_id,
            )


def _add(deltas: dict[str, list[int]], postings: Sequence[Posting], *, pending: bool, sign: int) -> None:
    for posting in postings:
        column = (0 if posting.side is Side.DEBIT else 1) + (2 if pending else 0)
        deltas.setdefault(posting.account_id, [0, 0, 0, 0])[column] += sign * posting.amount


def _commit(book: Book, index: int, draft: EntryDraft) -> Outcome:
    if draft.kind is Kind.EXPIRE_PENDING and not draft.system:
        raise _Refused(ResultCode.KIND_NOT_ALLOWED, "EXPIRE_PENDING entries are written by the ledger only")
    # The kit validated the request's rules before the handler ran; these only restate them.
    assert len(draft.postings) <= ENTRY_POSTINGS_MAX
    assert (draft.kind in RESOLVING_KINDS) == bool(draft.pending_entry_id), draft.kind
    assert (draft.kind is Kind.CORRECTION) == bool(draft.corrects_entry_id), draft.kind
    postings = _resolve_postings(book, draft)
    _check_balanced(postings)
    deltas: dict[str, list[int]] = {}
    pending: Entry | None = None
    category = draft.category
    if draft.kind in RESOLVING_KINDS:
        pending = _pending_of(book, draft)
        category = category or pending.category
        if draft.kind is Kind.POST_PENDING and postings:
            _partial_post(pending, postings)
        elif draft.kind is Kind.POST_PENDING:
            postings = pending.postings
        else:
            assert not postings, "VOID and EXPIRE entries carry no postings on input"
            postings = pending.postings
        _add(deltas, pending.postings, pending=True, sign=-1)
        if draft.kind is Kind.POST_PENDING:
            _check_blocks(book, postings)
            _add(deltas, postings, pending=False, sign=1)
    else:
        assert len(postings) >= 2, "STANDARD, PENDING and CORRECTION entries have 2 or more postings"
        if draft.kind is Kind.CORRECTION:
            corrected = book.entries.get(draft.corrects_entry_id)
            if corrected is None:
                raise _Refused(ResultCode.CORRECTED_ENTRY_NOT_FOUND, f"no entry {draft.corrects_entry_id}")
            if corrected.kind not in CORRECTABLE_KINDS:
                raise _Refused(
                    ResultCode.CORRECTED_ENTRY_NOT_CORRECTABLE,
                    f"a {corrected.kind.name} entry is not corrected",
                )
        _check_blocks(book, postings)
        _add(deltas, postings, pending=draft.kind is Kind.PENDING, sign=1)
    updated: list[Account] = []
    for account_id, delta in deltas.items():
        account = book.accounts[account_id]
        assert constraint_violation(account.constraint, account.balance) is None, account
        columns = [old + change for old, change in zip(account.balance.columns(), delta, strict=True)]
        assert min(columns) >= 0, (account_id, columns)
        if max(columns) > AMOUNT_MAX:
            raise _Refused(
                ResultCode.AMOUNT_OVERFLOW, "an account total would exceed 2^256 - 1", account_id=account_id
            )
        balance = Balance(*columns)
        violation = constraint_violation(account.constraint, balance)
        if violation is not None:
            raise _Refused(violation, f"{account.code} would go below zero", account_id=account_id)
        updated.append(account.with_balance(balance))
    sequence = book.last_sequence + 1
    entry = Entry(
        sequence=sequence,
        entry_id=draft.entry_id,
        kind=draft.kind,
        postings=postings,
        fingerprint=draft.fingerprint,
        post_time_us=book.now_us,
        pending_entry_id=draft.pending_entry_id,
        corrects_entry_id=draft.corrects_entry_id,
        timeout_ms=draft.timeout_ms,
        category=category,
        description=draft.description,
        correlation_id=draft.correlation_id,
        chain_transfer=draft.chain_transfer,
        metadata=draft.metadata,
        created_by=draft.created_by,
        pending_status=PendingStatus.PENDING if draft.kind is Kind.PENDING else PendingStatus.NONE,
        expire_time_us=book.now_us + draft.timeout_ms * 1000 if draft.timeout_ms is not None else None,
    )
    book.last_sequence = sequence
    book.created.append(entry)
    book._set_entry(entry)
    resolved: Entry | None = None
    if pending is not None:
        resolved = replace(
            pending,
            pending_status=resolve_pending(pending.pending_status, draft.kind),
            resolved_by_entry_id=entry.entry_id,
            resolve_time_us=book.now_us,
        )
        book._set_entry(resolved)
        book.resolved[resolved.entry_id] = resolved
    after = []
    for account in updated:
        book._set_account(account)
        history = BalanceAfter(account, sequence)
        book.history.append(history)
        after.append(history)
    return Outcome(
        index, entry.entry_id, ResultCode.OK, entry=entry, resolved=resolved, balances=tuple(after)
    )


class EntryRefused(errors.InvalidArgument):
    """An entry refused with a result code that the contract maps to INVALID_ARGUMENT."""

    def __init__(self, outcome: Outcome) -> None:
        field_path = "entry" if outcome.posting_index is None else f"entry.postings[{outcome.posting_index}]"
        name = code_name(outcome.code)
        super().__init__([errors.FieldViolation(field_path, outcome.detail, name)], outcome.detail)
        self.metadata.update(error_metadata(outcome))


def code_name(code: ResultCode) -> str:
    """The contract's name of a result code, carried in ErrorInfo metadata `entry_result_code`."""
    return f"ENTRY_RESULT_CODE_{code.name}"


def error_metadata(outcome: Outcome) -> dict[str, str]:
    """ErrorInfo metadata for a refused entry."""
    metadata = {"entry_result_code": code_name(outcome.code), "entry_id": outcome.entry_id}
    if outcome.posting_index is not None:
        metadata["posting_index"] = str(outcome.posting_index)
    if outcome.account_id:
        metadata["account_id"] = outcome.account_id
    return metadata


INVALID_ARGUMENT_CODES = frozenset(
    {
        ResultCode.UNBALANCED,
        ResultCode.ASSET_MISMATCH,
        ResultCode.AMOUNT_OVERFLOW,
        ResultCode.DUPLICATE_IN_BATCH,
        ResultCode.KIND_NOT_ALLOWED,
    }
)
NOT_FOUND_CODES = frozenset(
    {ResultCode.ACCOUNT_NOT_FOUND, ResultCode.PENDING_ENTRY_NOT_FOUND, ResultCode.CORRECTED_ENTRY_NOT_FOUND}
)


def refusal(outcome: Outcome) -> errors.DomainError:
    """The gRPC error of a refused single entry, as listed on EntryResultCode in the contract."""
    assert not outcome.code.applied, outcome.code
    metadata = error_metadata(outcome)
    code = outcome.code
    if code is ResultCode.EXISTS_WITH_DIFFERENT_CONTENT:
        return errors.IdempotencyKeyReused(outcome.detail, metadata=metadata)
    if code in NOT_FOUND_CODES:
        return errors.NotFound(outcome.detail, metadata=metadata)
    if code in (ResultCode.EXCEEDS_CREDITS, ResultCode.EXCEEDS_DEBITS):
        return errors.InsufficientFunds(outcome.detail, metadata=metadata)
    if code in (ResultCode.DEBITS_BLOCKED, ResultCode.CREDITS_BLOCKED):
        return errors.Frozen(outcome.detail, metadata=metadata)
    if code in INVALID_ARGUMENT_CODES:
        return EntryRefused(outcome)
    return errors.InvalidState(outcome.detail, metadata=metadata)


@dataclass(frozen=True, slots=True)
class TrialLine:
    """One trial balance line: an account or the accounts under a code prefix."""

    code: str
    type: AccountType
    account_id: str
    account_count: int
    totals: Balance
    debit_balance: int
    credit_balance: int


@dataclass(frozen=True, slots=True)
class AssetTrial:
    """The trial balance of one asset."""

    asset: str
    totals: Balance
    debit_balance: int
    credit_balance: int
    balanced: bool
    lines: tuple[TrialLine, ...]


def _sum(balances: Sequence[Balance]) -> Balance:
    return Balance(*(sum(column) for column in zip(*(b.columns() for b in balances), strict=True)))


def _line(code: str, members: Sequence[tuple[Account, Balance]]) -> TrialLine:
    totals = _sum([balance for _, balance in members]) if members else ZERO
    net = totals.debits_posted - totals.credits_posted
    single = members[0][0].account_id if len(members) == 1 and members[0][0].code == code else ""
    return TrialLine(code, members[0][0].type, single, len(members), totals, max(net, 0), max(-net, 0))


def trial_balance(accounts: Sequence[tuple[Account, Balance]], depth: int) -> list[AssetTrial]:
    """Per asset (ordered): totals, and lines rolled up to the first `depth` code segments.

    Balanced means posted debits equal posted credits and pending debits equal pending credits:
    every entry balances per asset, so anything else is a broken ledger.
    """
    assert depth >= 1, depth
    by_asset: dict[str, dict[str, list[tuple[Account, Balance]]]] = {}
    for account, balance in accounts:
        prefix = ":".join(account.code.split(":")[:depth])
        by_asset.setdefault(account.asset, {}).setdefault(prefix, []).append((account, balance))
    trials = []
    for asset in sorted(by_asset):
        lines = tuple(_line(code, members) for code, members in sorted(by_asset[asset].items()))
        totals = _sum([line.totals for line in lines])
        balanced = (
            totals.debits_posted == totals.credits_posted and totals.debits_pending == totals.credits_pending
        )
        debit_balance = sum(line.debit_balance for line in lines)
        credit_balance = sum(line.credit_balance for line in lines)
        trials.append(AssetTrial(asset, totals, debit_balance, credit_balance, balanced, lines))
    return trials
