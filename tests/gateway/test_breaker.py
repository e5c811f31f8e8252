"""Circuit breakers per upstream: the state machine on a manual clock, and over HTTP an upstream
that fails (the real ledger stopped, then restarted) or stalls, with stale responses for cacheable
reads and 503 FEATURE_DISABLED for non-core routes while the breaker is open."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.breaker import BreakerPolicy, CircuitBreaker, State
from gateway.config import RoutePolicy
from svc.kit.bus import InProcessBus
from tests.gateway.conftest import (
    ManualClock,
    Mesh,
    gateway_settings,
    serve_gateway,
    stalled_upstream,
    start_ledger,
    start_mesh,
)

OPERATOR = ("operator",)
GET_ACCOUNT = "finmesh.ledger.v1.LedgerService.GetLedgerAccount"
LIST_ACCOUNTS = "finmesh.ledger.v1.LedgerService.ListLedgerAccounts"


def breaker(clock: ManualClock, **policy: float) -> CircuitBreaker:
    return CircuitBreaker("ledger", BreakerPolicy(**policy), clock)  # type: ignore[arg-type]


def calls(target: CircuitBreaker, outcomes: str, seconds: float = 0.01) -> None:
    """Runs one call per character: '.' succeeds, 'x' fails, 's' is slow."""
    for outcome in outcomes:
        assert target.acquire()
        target.record(target.policy.slow_call_s if outcome == "s" else seconds, outcome == "x")


def test_opens_at_half_failures_once_the_window_has_the_minimum_calls() -> None:
    clock = ManualClock()
    below_minimum = breaker(clock)
    calls(below_minimum, "x" * 19)
    assert below_minimum.state is State.CLOSED
    calls(below_minimum, "x")
    assert below_minimum.state is State.OPEN
    mostly_fine = breaker(clock)
    calls(mostly_fine, "." * 11 + "x" * 9)
    assert mostly_fine.state is State.CLOSED
    half = breaker(clock)
    calls(half, "." * 10 + "x" * 10)
    assert half.state is State.OPEN


def test_opens_at_half_slow_calls() -> None:
    target = breaker(ManualClock())
    calls(target, "." * 10 + "s" * 9)
    assert target.state is State.CLOSED
    calls(target, "s")
    assert target.state is State.OPEN


def test_old_outcomes_leave_the_rolling_window() -> None:
    clock = ManualClock()
    target = breaker(clock)
    calls(target, "x" * 15)
    clock.advance(11)  # past the 10 s window
    calls(target, "." * 10)
    assert target.state is State.CLOSED


def test_open_then_half_open_probes_then_closed_or_open_again() -> None:
    clock = ManualClock()
    target = breaker(clock)
    calls(target, "x" * 20)
    assert not target.acquire()
    assert target.retry_after_s() == 30
    clock.advance(29.5)
    assert not target.acquire()
    clock.advance(0.5)
    assert target.state is State.HALF_OPEN
    assert [target.acquire() for _ in range(4)] == [True, True, True, False]
    target.record(0.01, True)  # one failed probe: open for another 30 s
    assert target.state is State.OPEN
    clock.advance(30)
    calls(target, "...")
    assert target.state is State.CLOSED
    assert target.acquire()


@pytest.fixture
async def own_mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """A mesh for one test: it stops and restarts the ledger."""
    running = await start_mesh(tmp_path, share_bus=False)
    yield running
    await running.stop()


async def test_failing_upstream_opens_serves_stale_and_recovers(own_mesh: Mesh) -> None:
    mesh = own_mesh
    clock = ManualClock()
    settings = gateway_settings(
        mesh,
        breaker_minimum_calls=4,
        routes={GET_ACCOUNT: RoutePolicy(cacheable=True), LIST_ACCOUNTS: RoutePolicy(core=False)},
    )
    headers = mesh.bearer("ops-1", roles=OPERATOR)
    account = f"/v1/admin/ledger/accounts/{mesh.custody_id}"
    async with serve_gateway(settings, clock=clock) as edge:
        fresh = await edge.http.get(account, headers=headers)
        assert fresh.status_code == 200
        assert "x-finmesh-stale" not in fresh.headers
        ledger_port = mesh.apps["ledger"].port
        await mesh.apps["ledger"].stop(0)
        failures = [
            await edge.http.get(f"/v1/admin/ledger/accounts/{uuid.uuid4()}", headers=headers)
            for _ in range(4)
        ]
        assert [response.status_code for response in failures] == [503] * 4
        assert failures[0].json()["code"] == 14
        assert edge.gateway.breakers["ledger"].state is State.OPEN
        # Open: the cacheable read answers from the last good response, marked stale.
        stale = await edge.http.get(account, headers=headers)
        assert stale.status_code == 200
        assert stale.headers["x-finmesh-stale"] == "true"
        assert stale.headers["warning"] == '110 - "Response is Stale"'
        assert stale.json() == fresh.json()
        # ...but never to another caller, and nothing cached means 503 with Retry-After.
        other = await edge.http.get(account, headers=mesh.bearer("ops-2", roles=OPERATOR))
        assert other.status_code == 503
        assert other.headers["retry-after"] == "30"
        assert other.json()["details"][0]["reason"] == "DEPENDENCY_UNAVAILABLE"
        # A non-core route is switched off with a clear body.
        off = await edge.http.get("/v1/admin/ledger/accounts", headers=headers)
        assert off.status_code == 503
        assert off.json()["details"][0]["reason"] == "FEATURE_DISABLED"
        assert "switched off while ledger recovers" in off.json()["message"]
        # The ledger comes back on its port; after 30 s the probes close the breaker.
        mesh.apps["ledger"] = await start_ledger(
            mesh.tmp_path, mesh.tmp_path / "jwt-keys.pem", InProcessBus(), ledger_port
        )
        recovered = None
        for _ in range(20):
            clock.advance(30)
            recovered = await edge.http.get(account, headers=headers)
            if recovered.status_code == 200 and "x-finmesh-stale" not in recovered.headers:
                break
        assert recovered is not None and recovered.status_code == 200, recovered
        assert "x-finmesh-stale" not in recovered.headers
        for _ in range(2):
            assert (await edge.http.get(account, headers=headers)).status_code == 200
        assert edge.gateway.breakers["ledger"].state is State.CLOSED


async def test_stalling_upstream_opens_the_breaker(own_mesh: Mesh) -> None:
    async with stalled_upstream() as address:
        settings = gateway_settings(
            own_mesh,
            breaker_minimum_calls=3,
            breaker_slow_call_s=0.2,
            routes={"finmesh.lending.v1.LendingService.ListLoans": RoutePolicy(timeout_s=0.25)},
        ).model_copy(update={"endpoints": {**own_mesh.endpoints, "lending": address}})
        async with serve_gateway(settings) as edge:
            slow = [
                (await edge.http.get("/v1/loans", headers=own_mesh.bearer("u-1"))).status_code
                for _ in range(3)
            ]
            assert slow == [504] * 3
            assert edge.gateway.breakers["lending"].state is State.OPEN
            refused = await edge.http.get("/v1/loans", headers=own_mesh.bearer("u-1"))
            assert refused.status_code == 503
            assert refused.json()["details"][0]["reason"] == "DEPENDENCY_UNAVAILABLE"
