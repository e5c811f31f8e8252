"""Background rounds: run at once and then repeatedly, survive a failing round, stop on request."""

from __future__ import annotations

import asyncio

from svc.kit.periodic import Periodic


async def test_rounds_repeat_survive_failures_and_stop() -> None:
    calls: list[int] = []
    five = asyncio.Event()

    async def work() -> None:
        calls.append(len(calls))
        if len(calls) == 5:
            five.set()
        if len(calls) == 2:
            raise RuntimeError("a dependency is down")

    rounds = Periodic("test-rounds", work, interval_s=0.01)
    await rounds.start()
    await rounds.start()  # a second start does not add a second loop
    async with asyncio.timeout(5):
        await five.wait()
    await rounds.stop()
    stopped_at = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == stopped_at and calls == list(range(stopped_at))
    await rounds.stop()  # stopping twice is harmless
