"""The kit's overhead: Echo through the full kit against the same handler on a bare grpc.aio server.

Each server runs in its own process; the load comes from this process over one mTLS channel
with a fixed number of concurrent callers and a fixed number of calls, so the run is bounded.
Rounds alternate between servers so that drift on the machine hits both alike; the figure is
the median over rounds of the kit's throughput divided by the bare server's in the same
round. The sync server is measured the same way for the docs.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results import Figure
from svc.kit.client import channel
from svc.kit.mtls import LocalCA
from tests.kit.probe import compile_probe

MODES = ("kit", "kit-sampled", "bare-aio", "bare-sync")
# The standard OpenTelemetry SDK variables: a deployment that samples 10 % of traces at the root.
SAMPLED_ENVIRONMENT = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
CALLS_PER_ROUND = 4000
WARMUP_CALLS = 300
CONCURRENCY = 32
ROUNDS = 7
SERVER_START_TIMEOUT_S = 30


def _start(mode: str, pki: Path, gen: Path) -> tuple[subprocess.Popen[str], int]:
    environment = {**os.environ, **(SAMPLED_ENVIRONMENT if mode == "kit-sampled" else {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.kit_server", mode.removesuffix("-sampled"), str(pki), str(gen)],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    line = process.stdout.readline()
    if not line.strip().isdigit() or time.monotonic() > deadline:
        process.kill()
        raise RuntimeError(f"benchmark server {mode!r} did not start (printed {line!r})")
    return process, int(line)


async def _throughput(port: int, pki: Path, messages: Any, stubs: Any, calls: int) -> float:
    async with channel(f"127.0.0.1:{port}", identity="gateway", ca=LocalCA(pki)) as ch:
        stub = stubs.ProbeServiceStub(ch)
        request = messages.EchoRequest(text="ping")
        remaining = calls

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await stub.Echo(request, timeout=10)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
        return calls / (time.perf_counter() - started)


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as scratch:
        pki, gen = Path(scratch) / "pki", Path(scratch) / "gen"
        gen.mkdir()
        LocalCA(pki).credentials("probe")
        LocalCA(pki).credentials("gateway")
        messages, stubs = compile_probe(gen)
        servers = {mode: _start(mode, pki, gen) for mode in MODES}
        rates: dict[str, list[float]] = {mode: [] for mode in MODES}
        try:
            for _, port in servers.values():
                asyncio.run(_throughput(port, pki, messages, stubs, WARMUP_CALLS))
            for _ in range(ROUNDS):
                for mode, (_, port) in servers.items():
                    rates[mode].append(asyncio.run(_throughput(port, pki, messages, stubs, CALLS_PER_ROUND)))
        finally:
            for process, _ in servers.values():
                process.kill()
                process.wait()
    median = {mode: statistics.median(values) for mode, values in rates.items()}
    kit_ratio = statistics.median(
        kit / bare for kit, bare in zip(rates["kit"], rates["bare-aio"], strict=True)
    )
    sampled_ratio = statistics.median(
        kit / bare for kit, bare in zip(rates["kit-sampled"], rates["bare-aio"], strict=True)
    )
    sync_ratio = statistics.median(
        sync / bare for sync, bare in zip(rates["bare-sync"], rates["bare-aio"], strict=True)
    )
    detail = {
        "calls_per_round": CALLS_PER_ROUND,
        "rounds": ROUNDS,
        "concurrency": CONCURRENCY,
        "rps": {mode: [round(value, 1) for value in values] for mode, values in rates.items()},
    }
    return [
        Figure("kit", "throughput_ratio", kit_ratio, "ratio", ">=0.8", detail),
        Figure("kit", "throughput_ratio_sampled_10pct", sampled_ratio, "ratio", "", {}),
        Figure("kit", "kit_rps", median["kit"], "rps", "", {}),
        Figure("kit", "bare_aio_rps", median["bare-aio"], "rps", "", {}),
        Figure("kit", "bare_sync_rps", median["bare-sync"], "rps", "", {}),
        Figure("kit", "sync_over_aio_ratio", sync_ratio, "ratio", "", {}),
    ]
