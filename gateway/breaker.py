"""Circuit breakers, one per upstream service.

CLOSED: calls flow; each outcome lands in a rolling window of one-second buckets. When the window
holds at least `minimum_calls` and failures, or calls slower than `slow_call_s`, reach their rate
(50 % by default), the breaker OPENs. OPEN: calls are refused at once for `open_s` (30 s). Then
HALF_OPEN: up to `half_open_calls` probes go through; one failure or slow probe opens it again,
that many successes close it. The clock is injectable so tests move time instead of sleeping.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

# Codes that say the upstream is unwell; the others are answers about the request.
FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
    }
)


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    failure_rate: float = 0.5
    slow_call_s: float = 5.0
    slow_call_rate: float = 0.5
    window_s: float = 10.0
    minimum_calls: int = 20
    open_s: float = 30.0
    half_open_calls: int = 3


@dataclass
class _Bucket:
    second: int
    calls: int = 0
    failures: int = 0
    slow: int = 0


@dataclass
class CircuitBreaker:
    """The breaker of one upstream."""

    name: str
    policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    clock: Callable[[], float] = time.monotonic
    _state: State = State.CLOSED
    _opened_at: float = 0.0
    _window: deque[_Bucket] = field(default_factory=deque)
    _probes_in_flight: int = 0
    _probe_successes: int = 0

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self.clock() >= self._opened_at + self.policy.open_s:
            self._state = State.HALF_OPEN
            self._probes_in_flight = 0
            self._probe_successes = 0
        return self._state

    def acquire(self) -> bool:
        """Whether a call may go to the upstream now; every True must be followed by `record`."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and self._probes_in_flight < self.policy.half_open_calls:
            self._probes_in_flight += 1
            return True
        return False

    def retry_after_s(self) -> int:
        """Whole seconds until the breaker lets probes through (1 while probes are under way)."""
        if self.state is State.OPEN:
            return max(1, math.ceil(self._opened_at + self.policy.open_s - self.clock()))
        return 1 if self._state is State.HALF_OPEN else 0

    def record(self, seconds: float, failed: bool) -> None:
        """The outcome of an acquired call."""
        slow = seconds >= self.policy.slow_call_s
        state = self.state
        if state is State.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            if failed or slow:
                self._open()
                return
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_calls:
                self._state = State.CLOSED
                self._window.clear()
            return
        if state is State.OPEN:
            return  # a call that started before the breaker opened
        bucket = self._bucket()
        bucket.calls += 1
        bucket.failures += failed
        bucket.slow += slow
        calls = sum(item.calls for item in self._window)
        if calls < self.policy.minimum_calls:
            return
        failures = sum(item.failures for item in self._window)
        slow_calls = sum(item.slow for item in self._window)
        if failures >= self.policy.failure_rate * calls or slow_calls >= self.policy.slow_call_rate * calls:
            self._open()

    def release(self) -> None:
        """An acquired call that ended with no verdict on the upstream (cancelled by the client)."""
        if self._state is State.HALF_OPEN:
            self._probes_in_flight = max(0, self._probes_in_flight - 1)

    def _open(self) -> None:
        self._state = State.OPEN
        self._opened_at = self.clock()
        self._window.clear()

    def _bucket(self) -> _Bucket:
        second = int(self.clock())
        horizon = second - max(1, math.ceil(self.policy.window_s)) + 1
        while self._window and self._window[0].second < horizon:
            self._window.popleft()
        if not self._window or self._window[-1].second != second:
            self._window.append(_Bucket(second))
        return self._window[-1]


class Breakers:
    """The breakers of every upstream, created on first use with one policy and clock."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def __getitem__(self, service: str) -> CircuitBreaker:
        breaker = self._breakers.get(service)
        if breaker is None:
            breaker = CircuitBreaker(service, self.policy, self.clock)
            self._breakers[service] = breaker
        return breaker
