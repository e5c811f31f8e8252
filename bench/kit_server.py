"""One benchmark server process: the probe's Echo behind the full kit, a bare grpc.aio server, or a
bare sync server; all with the same mTLS credentials. Prints its port on stdout when serving."""

from __future__ import annotations

import asyncio
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from svc.kit.catalog import Catalog, ServiceEntry
from svc.kit.config import KitSettings
from svc.kit.mtls import LocalCA
from svc.kit.server import ServiceApp
from svc.kit.telemetry import configure_tracing
from tests.kit.probe import PROBE_SERVICE, compile_probe

SYNC_WORKERS = 16


def _servicers(messages: Any, stubs: Any) -> tuple[Any, Any]:
    class AsyncEcho(stubs.ProbeServiceServicer):  # type: ignore[misc]
        async def Echo(self, request: Any, context: Any) -> Any:
            return messages.EchoResponse(text=request.text)

    class SyncEcho(stubs.ProbeServiceServicer):  # type: ignore[misc]
        def Echo(self, request: Any, context: Any) -> Any:
            return messages.EchoResponse(text=request.text)

    return AsyncEcho(), SyncEcho()


async def _serve_aio(mode: str, pki: Path, stubs: Any, servicer: Any) -> None:
    if mode == "kit":
        configure_tracing("bench-kit")
        entry = ServiceEntry("probe", "bench", 0, PROBE_SERVICE, (), ("full",), ())
        catalog = Catalog(services={"probe": entry}, profiles={"full": "all"}, edge=())
        app = ServiceApp(
            entry, KitSettings(port=0, pki_dir=pki, tls=True, log_level="WARNING"), catalog=catalog
        )
        app.add_servicer(stubs.add_ProbeServiceServicer_to_server, servicer, PROBE_SERVICE)
        await app.start()
        port = app.port
        server = app.server
    else:
        server = grpc.aio.server()
        stubs.add_ProbeServiceServicer_to_server(servicer, server)
        port = server.add_secure_port("127.0.0.1:0", LocalCA(pki).credentials("probe").server())
        await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def _serve_sync(pki: Path, stubs: Any, servicer: Any) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=SYNC_WORKERS))
    stubs.add_ProbeServiceServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", LocalCA(pki).credentials("probe").server())
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def main(mode: str, pki: str, gen: str) -> None:
    messages, stubs = compile_probe(Path(gen))
    async_servicer, sync_servicer = _servicers(messages, stubs)
    if mode == "bare-sync":
        _serve_sync(Path(pki), stubs, sync_servicer)
    else:
        asyncio.run(_serve_aio(mode, Path(pki), stubs, async_servicer))


if __name__ == "__main__":
    main(*sys.argv[1:4])
