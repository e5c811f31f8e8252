"""The RPC provider layer: a chain's providers in failover order, each behind a circuit breaker,
judged by periodic health checks (reachable, right chain id, fresh head, agreeing block hashes).

Only HEALTHY providers with a circuit that lets calls through are in rotation. A call goes to the
first provider in rotation and fails over to the next on a transport error or a timeout; a JSON-RPC
error is the node's answer (a revert, a rejected transaction) and is not retried elsewhere. A
provider whose call fails on transport leaves rotation at once; the health checker alone brings it
back, so a node that went away rejoins once it answers again and agrees with the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from eth_tester import EthereumTester, PyEVMBackend  # type: ignore[import-untyped]
from eth_tester.exceptions import TransactionFailed  # type: ignore[import-untyped]
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_utils.exceptions import ValidationError as EvmValidationError
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import (
    BadResponseFormat,
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
    Web3RPCError,
)
from web3.providers.eth_tester import AsyncEthereumTesterProvider
from web3.types import RPCEndpoint, RPCResponse

from svc.chain_gateway import dev_token
from svc.chain_gateway.config import EMBEDDED_SCHEME, ChainConfig, ProviderConfig
from svc.kit.errors import DependencyUnavailable

log = logging.getLogger("finmesh.chain_gateway.rpc")

T = TypeVar("T")
LATENCY_SAMPLES_MAX = 5
ERROR_TEXT_MAX = 300
# What the embedded EVM (eth-tester on py-evm) raises for a transaction it refuses (balance,
# nonce, gas, a revert): a node's error answer, not a provider failure.
EMBEDDED_REFUSALS = (TesterValidationError, EvmValidationError, TransactionFailed)
TRANSPORT_ERRORS = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
    ProviderConnectionError,
    BadResponseFormat,
    TooManyRequests,
    RequestTimedOut,
)


class Health(IntEnum):
    """finmesh.chain_gateway.v1.ProviderHealth."""

    UNSPECIFIED = 0
    HEALTHY = 1
    LAGGING = 2
    DISAGREEING = 3
    WRONG_CHAIN = 4
    UNREACHABLE = 5


class CircuitState(IntEnum):
    """finmesh.chain_gateway.v1.CircuitState."""

    CLOSED = 1
    OPEN = 2
    HALF_OPEN = 3


class Circuit:
    """A breaker over the outcomes of the last calls: OPEN when the share of failed or slow calls
    reaches the threshold, HALF_OPEN after the open interval (one probe at a time), CLOSED again
    when a probe succeeds."""

    def __init__(
        self, window_calls: int, window_calls_min: int, failure_rate_bps: int, slow_call_ms: int, open_ms: int
    ) -> None:
        self.window_calls_min = window_calls_min
        self.failure_rate_bps = failure_rate_bps
        self.slow_call_ms = slow_call_ms
        self.open_ms = open_ms
        self._outcomes: deque[bool] = deque(maxlen=window_calls)
        self._opened_at_ms: float | None = None
        self._probing = False

    def state(self, now_ms: float) -> CircuitState:
        if self._opened_at_ms is None:
            return CircuitState.CLOSED
        if now_ms - self._opened_at_ms >= self.open_ms:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def allows(self, now_ms: float) -> bool:
        state = self.state(now_ms)
        if state is CircuitState.CLOSED:
            return True
        return state is CircuitState.HALF_OPEN and not self._probing

    def begin(self, now_ms: float) -> None:
        if self.state(now_ms) is CircuitState.HALF_OPEN:
            self._probing = True

    def record(self, ok: bool, duration_ms: float, now_ms: float) -> None:
        good = ok and duration_ms < self.slow_call_ms
        state = self.state(now_ms)
        self._probing = False
        if state is CircuitState.HALF_OPEN:
            if good:
                self._opened_at_ms = None
                self._outcomes.clear()
            else:
                self._opened_at_ms = now_ms
            return
        self._outcomes.append(good)
        failures = sum(1 for outcome in self._outcomes if not outcome)
        if len(self._outcomes) >= self.window_calls_min and failures * 10_000 >= self.failure_rate_bps * len(
            self._outcomes
        ):
            self._opened_at_ms = now_ms
            self._outcomes.clear()


def redact(endpoint: str) -> str:
    """Scheme, host and port only: API keys live in paths, queries and user info."""
    if endpoint.startswith(EMBEDDED_SCHEME):
        return endpoint
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


_embedded: dict[str, AsyncEthereumTesterProvider] = {}


class _EmbeddedProvider(AsyncEthereumTesterProvider):
    """The in-process EVM, answering what it refuses (balance, nonce, gas, a revert) with a
    JSON-RPC error as a node does, where eth-tester raises: callers handle one kind of answer."""

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            return await super().make_request(method, params)
        except EMBEDDED_REFUSALS as refusal:
            return {"jsonrpc": "2.0", "id": 0, "error": {"code": -32000, "message": str(refusal)[:500]}}


def embedded_provider(name: str) -> AsyncEthereumTesterProvider:
    """The in-process EVM of that name, one per process (all its providers share one chain),
    carrying the development token from block 1 (every embedded chain alike)."""
    provider = _embedded.get(name)
    if provider is None:
        provider = _EmbeddedProvider()
        # The default genesis differs only by its timestamp, in seconds: two chains started within
        # one second would share a genesis hash, and a restarted chain would pass for the old one.
        genesis = PyEVMBackend.generate_genesis_params(overrides={"extra_data": secrets.token_bytes(32)})
        provider.ethereum_tester = EthereumTester(PyEVMBackend(genesis_parameters=genesis))
        dev_token.deploy(provider.ethereum_tester)
        _embedded[name] = provider
    return provider


def _web3_for(config: ProviderConfig) -> AsyncWeb3[Any]:
    if config.endpoint.startswith(EMBEDDED_SCHEME):
        return AsyncWeb3(embedded_provider(config.endpoint[len(EMBEDDED_SCHEME) :]))
    # No retries inside web3: failing over to the next provider is this layer's job.
    http = AsyncHTTPProvider(
        config.endpoint,
        request_kwargs={"timeout": aiohttp.ClientTimeout(total=config.timeout_ms / 1000)},
        exception_retry_configuration=None,
    )
    return AsyncWeb3(http)


def _now_ms() -> float:
    return time.monotonic() * 1000


def _wall_us() -> int:
    return time.time_ns() // 1000


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text[:ERROR_TEXT_MAX]


@dataclass
class ProviderHandle:
    """One provider: its client, breaker and the latest health check's findings."""

    config: ProviderConfig
    web3: AsyncWeb3[Any]
    circuit: Circuit
    health: Health = Health.UNSPECIFIED
    head_block_number: int = 0
    lag_blocks: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    check_time_us: int = 0
    health_change_time_us: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES_MAX))

    @property
    def name(self) -> str:
        return self.config.name

    def in_rotation(self, now_ms: float) -> bool:
        return self.health is Health.HEALTHY and self.circuit.state(now_ms) is not CircuitState.OPEN

    def latency_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0


@dataclass(frozen=True)
class _Observation:
    handle: ProviderHandle
    chain_id: int | None = None
    number: int = 0
    hash: str = ""
    timestamp_s: int = 0
    error: str = ""


HealthListener = Callable[[ProviderHandle, Health], Awaitable[None]]


class ProviderPool:
    """The providers of one chain, with failover and a health-check loop."""

    def __init__(self, chain: str, config: ChainConfig) -> None:
        self.chain = chain
        self.config = config
        circuit = config.circuit
        self.handles = [
            ProviderHandle(
                provider,
                _web3_for(provider),
                Circuit(
                    circuit.window_calls,
                    circuit.window_calls_min,
                    circuit.failure_rate_bps,
                    circuit.slow_call_ms,
                    circuit.open_ms,
                ),
            )
            for provider in config.ordered_providers()
        ]
        self.listeners: list[HealthListener] = []
        self._task: asyncio.Task[None] | None = None
        self._check_lock = asyncio.Lock()

    def rotation(self) -> list[ProviderHandle]:
        now = _now_ms()
        return [handle for handle in self.handles if handle.in_rotation(now)]

    async def call(self, operation: Callable[[AsyncWeb3[Any]], Awaitable[T]], *, what: str) -> T:
        """Runs `operation` on the first provider in rotation that answers, failing over on
        transport errors and timeouts; DependencyUnavailable when none does."""
        errors: list[str] = []
        for handle in self.rotation():
            now = _now_ms()
            if not handle.circuit.allows(now):
                continue
            handle.circuit.begin(now)
            began = _now_ms()
            try:
                async with asyncio.timeout(handle.config.timeout_ms / 1000):
                    result = await operation(handle.web3)
            except Web3RPCError:
                # The node answered (a revert, a refused transaction): not the provider's fault.
                handle.circuit.record(True, _now_ms() - began, _now_ms())
                raise
            except TRANSPORT_ERRORS as error:
                handle.circuit.record(False, _now_ms() - began, _now_ms())
                handle.consecutive_failures += 1
                handle.last_error = _error_text(error)
                errors.append(f"{handle.name}: {handle.last_error}")
                log.warning(
                    "provider call failed, failing over",
                    extra={
                        "fields": {
                            "chain": self.chain,
                            "provider": handle.name,
                            "what": what,
                            "error": handle.last_error,
                        }
                    },
                )
                await self._set_health(handle, Health.UNREACHABLE)
                continue
            handle.circuit.record(True, _now_ms() - began, _now_ms())
            handle.consecutive_failures = 0
            return result
        reasons = "; ".join(errors) or "no provider in rotation"
        raise DependencyUnavailable(
            f"no provider of chain {self.chain} answered {what} ({reasons[:300]})",
            metadata={"chain": self.chain, "errors": reasons[:1000]},
        )

    async def _set_health(self, handle: ProviderHandle, health: Health) -> None:
        previous = handle.health
        if previous is health:
            return
        handle.health = health
        handle.health_change_time_us = _wall_us()
        log.info(
            "provider health changed",
            extra={
                "fields": {
                    "chain": self.chain,
                    "provider": handle.name,
                    "from": previous.name,
                    "to": health.name,
                }
            },
        )
        for listener in self.listeners:
            try:
                await listener(handle, previous)
            except Exception:
                log.exception("provider health listener failed")

    async def _observe(self, handle: ProviderHandle) -> _Observation:
        began = _now_ms()
        try:
            async with asyncio.timeout(handle.config.timeout_ms / 1000):
                chain_id = await handle.web3.eth.chain_id
                block = await handle.web3.eth.get_block("latest")
        except (*TRANSPORT_ERRORS, Web3RPCError) as error:
            return _Observation(handle, error=_error_text(error))
        handle.latencies_ms.append(_now_ms() - began)
        return _Observation(
            handle, chain_id, int(block["number"]), AsyncWeb3.to_hex(block["hash"]), int(block["timestamp"])
        )

    async def _hash_at(self, handle: ProviderHandle, number: int) -> str:
        try:
            async with asyncio.timeout(handle.config.timeout_ms / 1000):
                block = await handle.web3.eth.get_block(number)
        except (*TRANSPORT_ERRORS, Web3RPCError) as error:
            return "error:" + _error_text(error)
        return AsyncWeb3.to_hex(block["hash"])

    async def check(self) -> None:
        """One health check of every provider (concurrently), then each one's verdict."""
        async with self._check_lock:
            observations = await asyncio.gather(*(self._observe(handle) for handle in self.handles))
            verdicts = await self._judge(observations)
            now_us = _wall_us()
            for observation, verdict in zip(observations, verdicts, strict=True):
                handle = observation.handle
                handle.check_time_us = now_us
                if observation.error:
                    handle.consecutive_failures += 1
                    handle.last_error = observation.error
                else:
                    handle.head_block_number = observation.number
                    if verdict is Health.HEALTHY:
                        handle.consecutive_failures = 0
                await self._set_health(handle, verdict)

    async def _judge(self, observations: Sequence[_Observation]) -> list[Health]:
        verdict: dict[str, Health] = {}
        candidates: list[_Observation] = []
        for observation in observations:
            if observation.error:
                verdict[observation.handle.name] = Health.UNREACHABLE
            elif observation.chain_id != self.config.chain_id:
                verdict[observation.handle.name] = Health.WRONG_CHAIN
                observation.handle.last_error = (
                    f"chain id {observation.chain_id}, configured {self.config.chain_id}"
                )
            else:
                candidates.append(observation)
        best = max((observation.number for observation in candidates), default=0)
        fresh: list[_Observation] = []
        now_s = time.time()
        for observation in candidates:
            observation.handle.lag_blocks = best - observation.number
            stale = (
                self.config.head_age_max_ms > 0
                and (now_s - observation.timestamp_s) * 1000 > self.config.head_age_max_ms
            )
            if best - observation.number > self.config.lag_blocks_max or stale:
                verdict[observation.handle.name] = Health.LAGGING
                observation.handle.last_error = f"head {observation.number}, best {best}" + (
                    ", head too old" if stale else ""
                )
            else:
                fresh.append(observation)
        if fresh:
            # Agreement: every fresh provider's hash at the lowest fresh head. The majority wins;
            # a tie goes to the side of the provider first in failover order.
            height = min(observation.number for observation in fresh)
            hashes = await asyncio.gather(
                *(
                    self._hash_at(observation.handle, height)
                    if observation.number != height
                    else _done(observation.hash)
                    for observation in fresh
                )
            )
            counts: dict[str, int] = {}
            for value in hashes:
                counts[value] = counts.get(value, 0) + 1
            order = {handle.name: index for index, handle in enumerate(self.handles)}
            winner = max(
                counts,
                key=lambda value: (
                    counts[value],
                    -min(order[o.handle.name] for o, h in zip(fresh, hashes, strict=True) if h == value),
                ),
            )
            for observation, value in zip(fresh, hashes, strict=True):
                if value == winner and not value.startswith("error:"):
                    verdict[observation.handle.name] = Health.HEALTHY
                else:
                    verdict[observation.handle.name] = Health.DISAGREEING
                    observation.handle.last_error = f"block {height} is {value}, majority {winner}"
        return [verdict[observation.handle.name] for observation in observations]

    async def start(self) -> None:
        """A first check now (so that the service starts with a rotation), then one per interval."""
        await self.check()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"chain-gateway-health-{self.chain}")

    async def stop(self) -> None:
        """Stops the health checks and closes the providers' HTTP sessions."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for handle in self.handles:
            if isinstance(handle.web3.provider, AsyncHTTPProvider):
                await handle.web3.provider.disconnect()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_ms / 1000)
            try:
                await self.check()
            except Exception:
                log.exception("provider health check failed", extra={"fields": {"chain": self.chain}})


async def _done(value: str) -> str:
    return value
