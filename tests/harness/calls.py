"""Helpers for tests that call services through their contract: the ErrorInfo of a refusal, a
call that must be refused with a given status and reason, and waiting for background work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from svc.kit import remote

WAIT_S = 10.0
POLL_INTERVAL_S = 0.02


async def refused(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> error_details_pb2.ErrorInfo:
    """Awaits a call that must fail with `code` and ErrorInfo `reason`; returns the ErrorInfo."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value
    info = remote.error_info(caught.value)
    assert info.reason == reason, info
    return info


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S) -> None:
    """Waits until `check()` holds (for what a service does in the background)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await check():
                return
            await asyncio.sleep(POLL_INTERVAL_S)
