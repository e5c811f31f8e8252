"""Background rounds: work a service runs every few seconds while it serves (sweepers, followers,
executors). A failing round is logged and retried on the next one, never fatal to the service.

    rounds = Periodic("custody-movements", executor.run_once, interval_s=2.0)
    app.on_start(rounds.start)
    app.on_stop(rounds.stop)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("finmesh.periodic")


class Periodic:
    """Runs `work` now and then every `interval_s`, from start() to stop()."""

    def __init__(self, name: str, work: Callable[[], Awaitable[object]], interval_s: float) -> None:
        self.name = name
        self.work = work
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Starts the rounds in the background (the first one at once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Cancels the rounds, waiting for the one in progress to be cancelled."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.work()
            except Exception as error:
                # A dependency that is down delays this round's work; the service keeps serving.
                log.warning("%s round failed; retrying: %r", self.name, error)
            await asyncio.sleep(self.interval_s)
