"""The last good response of cacheable read routes, served (marked stale) while a breaker is open.

Entries are keyed by the RPC, the full request URL and the caller, so one user's data is never
served to another. Bounded: the least recently stored entry goes first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

STALE_HEADER = "x-finmesh-stale"


@dataclass(frozen=True)
class Entry:
    body: bytes
    stored_at: float

    def age_s(self, now: float) -> int:
        return max(0, int(now - self.stored_at))


class StaleCache:
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.time) -> None:
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str, str], Entry] = OrderedDict()

    def store(self, rpc: str, url: str, caller: str, body: bytes) -> None:
        if self._max_entries == 0:
            return
        key = (rpc, url, caller)
        self._entries.pop(key, None)
        self._entries[key] = Entry(body, self._clock())
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def get(self, rpc: str, url: str, caller: str) -> Entry | None:
        return self._entries.get((rpc, url, caller))

    def headers(self, entry: Entry) -> dict[str, str]:
        """What marks a stale response: our header, the standard Age, and the RFC 7234 warning."""
        return {
            STALE_HEADER: "true",
            "age": str(entry.age_s(self._clock())),
            "warning": '110 - "Response is Stale"',
        }
