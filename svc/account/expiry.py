"""Releases freezes at their expire_time, in the background (FreezeReleased with expired = true)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from svc.account.server import AccountServicer

log = logging.getLogger("finmesh.account.expiry")

SWEEP_INTERVAL_MS = 1_000
SWEEP_FREEZES_MAX = 100


class FreezeExpirySweeper:
    """Every `interval_ms`, releases the freezes whose expire_time passed."""

    def __init__(self, servicer: AccountServicer, *, interval_ms: int = SWEEP_INTERVAL_MS) -> None:
        self.servicer = servicer
        self.interval_ms = interval_ms
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Starts sweeping in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="account-freeze-expiry")

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
                await self.servicer.expire_due(time.time_ns() // 1000, SWEEP_FREEZES_MAX)
            except Exception:
                log.exception("freeze expiry sweep failed; retrying")
            await asyncio.sleep(self.interval_ms / 1000)
