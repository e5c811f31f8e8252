"""Background sweeps of the account service: releasing freezes at their expire_time (FreezeReleased
with expired = true), and reclaiming orphan holds (svc/account/reconcile.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from svc.account.server import AccountServicer
from svc.kit import errors

log = logging.getLogger("finmesh.account.expiry")

SWEEP_INTERVAL_MS = 1_000
SWEEP_FREEZES_MAX = 100


class Sweeper:
    """Every `interval_ms`, calls `sweep(now_us)` in the background; a failed sweep is logged and retried."""

    def __init__(
        self, name: str, sweep: Callable[[int], Awaitable[object]], *, interval_ms: int = SWEEP_INTERVAL_MS
    ) -> None:
        self.name = name
        self.sweep = sweep
        self.interval_ms = interval_ms
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Starts sweeping in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stops sweeping."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep(time.time_ns() // 1000)
            except errors.DependencyUnavailable as error:
                log.warning("%s: %s; retrying", self.name, error)
            except Exception:
                log.exception("%s failed; retrying", self.name)
            await asyncio.sleep(self.interval_ms / 1000)


def freeze_expiry_sweeper(servicer: AccountServicer, *, interval_ms: int = SWEEP_INTERVAL_MS) -> Sweeper:
    """Releases the freezes whose expire_time passed, at most SWEEP_FREEZES_MAX per sweep."""

    async def sweep(now_us: int) -> int:
        return await servicer.expire_due(now_us, SWEEP_FREEZES_MAX)

    return Sweeper("account-freeze-expiry", sweep, interval_ms=interval_ms)
