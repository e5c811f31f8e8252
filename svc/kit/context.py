"""What the kit knows about the RPC being served, available to handlers and to outgoing calls."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EndUser:
    """The end user on whose behalf a call is made, from a JWT verified by the kit."""

    subject: str
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    session_id: str = ""
    token: str = field(default="", repr=False)


@dataclass
class CallContext:
    """One served RPC: its method, who called, and by when it must finish."""

    method: str
    caller: str = ""
    user: EndUser | None = None
    deadline: float | None = None  # time.monotonic() at which the caller stops waiting
    status_code: str = "OK"

    def time_remaining(self) -> float | None:
        """Seconds until the caller's deadline, or None when the caller set no deadline."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()


current_call: ContextVar[CallContext | None] = ContextVar("finmesh_current_call", default=None)


def call() -> CallContext | None:
    """The RPC currently being served by this task, if any."""
    return current_call.get()
