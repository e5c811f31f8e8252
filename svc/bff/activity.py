"""The caller's activity list for the end-user BFFs: the balance movements of every account of the
caller (the account service's ledger-backed history), merged newest first, filtered, paged.

A page token holds one cursor per account (the account service's page token and how many
activities of that page were already shown), the time the first page was read (later pages read
nothing newer, so that new activity never shifts a cursor), and a fingerprint of the filters
(a token is only good for the filters it was made with).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from finmesh.account.v1 import account_resources_pb2 as account_resources
from finmesh.account.v1 import account_service_pb2 as account_service
from finmesh.account.v1 import account_service_pb2_grpc as account_grpc
from google.protobuf import timestamp_pb2

from svc.bff.reads import CallerReads
from svc.kit import errors
from svc.kit.aggregate import Section

Pair = tuple[account_resources.Account, account_resources.AccountActivity]
Accept = Callable[[account_resources.Account, account_resources.AccountActivity], bool]
DEFAULT_PAGE = 50


@dataclass(frozen=True)
class Query:
    """The filters of one activity list (everything but the page)."""

    asset: str = ""
    start_us: int = 0
    end_us: int = 0
    fingerprint: str = ""


# Where an account's list resumes: the account service's page token, the page size it was read
# with (an index is only meaningful in a page of that size) and the first index not shown yet.
Cursor = tuple[str, int, int]


@dataclass
class Candidate:
    pair: Pair
    cursor: Cursor


def _stamp(us: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(us)
    return stamp


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(part) for part in parts]).encode()).hexdigest()[:16]


def _bad_token(why: str) -> errors.InvalidArgument:
    return errors.InvalidArgument([errors.FieldViolation("page_token", why)])


def _decode(token: str, query: Query) -> tuple[int, dict[str, Cursor]] | None:
    if not token:
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
        cursors = {str(key): (str(value[0]), int(value[1]), int(value[2])) for key, value in raw["c"].items()}
        snapshot, filters = int(raw["s"]), str(raw["f"])
    except (ValueError, KeyError, TypeError, IndexError):
        raise _bad_token("not a token of this list") from None
    if filters != query.fingerprint:
        raise _bad_token("the filters changed since the token was made")
    return snapshot, cursors


def _encode(snapshot_us: int, cursors: dict[str, Cursor], query: Query) -> str:
    raw = {
        "s": snapshot_us,
        "f": query.fingerprint,
        "c": {key: list(value) for key, value in cursors.items()},
    }
    return base64.urlsafe_b64encode(json.dumps(raw, separators=(",", ":")).encode()).decode()


class ActivityList:
    """Pages of the caller's merged activity."""

    def __init__(self, reads: CallerReads, channel_to: Callable[[str], grpc.aio.Channel]) -> None:
        self._reads = reads
        self._channel_to = channel_to

    def section(self, section: int, query: Query, accept: Accept, size: int, token: str) -> Section[Any]:
        """The contract's activity section reading one page (account is its one source)."""
        return Section(
            section, ("account",), lambda deadline_s: self.page(deadline_s, query, accept, size, token)
        )

    async def page(
        self, deadline_s: float, query: Query, accept: Accept, size: int, token: str
    ) -> tuple[list[Pair], str]:
        """Up to `size` activities newest first, and the token of the next page ('' on the last)."""
        size = size or DEFAULT_PAGE
        decoded = _decode(token, query)
        accounts = await self._reads.accounts(deadline_s, asset=query.asset)
        if decoded is None:
            snapshot_us = time.time_ns() // 1000
            cursors = {account.account_id: ("", size, 0) for account in accounts}
        else:
            snapshot_us, cursors = decoded
        end_us = min(query.end_us, snapshot_us) if query.end_us else snapshot_us
        stub = account_grpc.AccountServiceStub(self._channel_to("account"))
        open_accounts = [account for account in accounts if account.account_id in cursors]
        read = await asyncio.gather(
            *(
                self._candidates(
                    stub, deadline_s, account, cursors[account.account_id], query, end_us, accept, size
                )
                for account in open_accounts
            )
        )
        merged = [candidate for candidates, _ in read for candidate in candidates]
        merged.sort(
            key=lambda found: (found.pair[1].create_time.ToMicroseconds(), found.pair[1].sequence),
            reverse=True,
        )
        shown = merged[:size]
        shown_ids = {id(candidate) for candidate in shown}
        following: dict[str, Cursor] = {}
        for account, (candidates, after) in zip(open_accounts, read, strict=True):
            unshown = [candidate for candidate in candidates if id(candidate) not in shown_ids]
            if unshown:
                following[account.account_id] = unshown[0].cursor
            elif after is not None:
                following[account.account_id] = (after, size, 0)
        next_token = _encode(snapshot_us, following, query) if following else ""
        return [candidate.pair for candidate in shown], next_token

    async def _candidates(
        self,
        stub: account_grpc.AccountServiceAsyncStub,
        deadline_s: float,
        account: account_resources.Account,
        cursor: Cursor,
        query: Query,
        end_us: int,
        accept: Accept,
        size: int,
    ) -> tuple[list[Candidate], str | None]:
        """At least `size` accepted activities of one account from its cursor (fewer when it has
        no more), and the page token after the last page read (None when none is left)."""
        token, fetch, skip = cursor
        found: list[Candidate] = []
        while True:
            request = account_service.ListAccountActivitiesRequest(
                account_id=account.account_id, page_size=fetch, page_token=token, end_time=_stamp(end_us)
            )
            if query.start_us:
                request.start_time.CopyFrom(_stamp(query.start_us))
            page = await stub.ListAccountActivities(request, timeout=deadline_s)
            for index, activity in enumerate(page.activities):
                if index >= skip and accept(account, activity):
                    found.append(Candidate((account, activity), (token, fetch, index)))
            if not page.next_page_token:
                return found, None
            token, fetch, skip = page.next_page_token, size, 0
            if len(found) >= size:
                return found, token
