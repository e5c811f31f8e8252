"""The ledger as its own OS process (`python -m svc.kit.cli serve ledger`), for the fault test and
the benchmark: fixed free ports, no TLS, restartable on the same database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from svc.kit.client import channel
from svc.ledger.main import SERVICE_NAME
from tests.harness.process import free_port, log_tail

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
REPO = Path(__file__).resolve().parents[2]


class LedgerProcess:
    """`python -m svc.kit.cli serve ledger` on fixed ports, restartable on the same database."""

    def __init__(self, database_url: str, scratch: Path) -> None:
        self.port = free_port()
        self.log = scratch / "ledger.log"
        self.environment = {
            **os.environ,
            "FINMESH_PORT": str(self.port),
            "FINMESH_METRICS_PORT": str(free_port()),
            "FINMESH_TLS": "false",
            "FINMESH_DATABASE_URL": database_url,
            "FINMESH_DATA_DIR": str(scratch / "data"),
            "FINMESH_PKI_DIR": str(scratch / "pki"),
            "FINMESH_GRACE_PERIOD_S": "1",
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Starts the process and waits until its health says SERVING."""
        with self.log.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "svc.kit.cli", "serve", "ledger",
                cwd=REPO, env=self.environment, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        async with channel(f"127.0.0.1:{self.port}", identity=None, ca=None) as connection:
            health = health_pb2_grpc.HealthStub(connection)
            while True:
                if self.process.returncode is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the ledger did not start:\n{log_tail(self.log)}")
                try:
                    answer = await health.Check(
                        health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1
                    )
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: no drain, no shutdown hooks, whatever was in flight is cut."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)

    async def stop(self) -> None:
        """Stops the process if it still runs (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            await self.kill()
