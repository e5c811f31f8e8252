"""The breaker in front of each provider (svc/chain_gateway/rpc.py: Circuit), on a given clock."""

from __future__ import annotations

from svc.chain_gateway.rpc import Circuit, CircuitState, redact

OPEN_MS = 30_000
SLOW_MS = 5_000


def _circuit() -> Circuit:
    return Circuit(
        window_calls=10, window_calls_min=4, failure_rate_bps=5_000, slow_call_ms=SLOW_MS, open_ms=OPEN_MS
    )


def test_opens_at_half_failed_calls_and_not_before_the_minimum() -> None:
    circuit = _circuit()
    for _ in range(3):
        circuit.record(False, 10, 0)
    assert circuit.state(0) is CircuitState.CLOSED  # three calls: below the minimum of four
    circuit.record(True, 10, 0)
    assert circuit.state(0) is CircuitState.OPEN and not circuit.allows(0)


def test_slow_calls_count_as_failures() -> None:
    circuit = _circuit()
    for _ in range(2):
        circuit.record(True, 10, 0)
    for _ in range(2):
        circuit.record(True, SLOW_MS, 0)
    assert circuit.state(0) is CircuitState.OPEN


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    circuit = _circuit()
    for _ in range(4):
        circuit.record(False, 10, 0)
    assert circuit.state(OPEN_MS - 1) is CircuitState.OPEN
    assert circuit.state(OPEN_MS) is CircuitState.HALF_OPEN and circuit.allows(OPEN_MS)
    circuit.begin(OPEN_MS)
    assert not circuit.allows(OPEN_MS)  # one probe at a time
    circuit.record(False, 10, OPEN_MS)
    assert circuit.state(OPEN_MS) is CircuitState.OPEN  # the probe failed: open again
    circuit.begin(2 * OPEN_MS)
    circuit.record(True, 10, 2 * OPEN_MS)
    assert circuit.state(2 * OPEN_MS) is CircuitState.CLOSED


def test_mostly_good_calls_keep_it_closed() -> None:
    circuit = _circuit()
    for index in range(100):
        circuit.record(index % 4 != 0, 10, index)  # one call in four fails
    assert circuit.state(100) is CircuitState.CLOSED


def test_endpoints_are_shown_without_credentials() -> None:
    assert (
        redact("https://user:secret@eth-mainnet.example.com:8443/v2/api-key?token=x")
        == "https://eth-mainnet.example.com:8443"
    )
    assert redact("embedded:local") == "embedded:local"
