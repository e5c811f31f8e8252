"""A probe service, compiled from tests/kit/probe, served by the real kit for the kit's tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from svc.kit import errors, idempotency
from svc.kit.catalog import Catalog, ServiceEntry
from svc.kit.client import channel
from svc.kit.config import KitSettings
from svc.kit.context import call as current_call
from svc.kit.db import Database
from svc.kit.mtls import LocalCA
from svc.kit.server import ServiceApp
from tests.kit.probe import compile_probe

PROBE_DIR = Path(__file__).parent / "probe"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    """The probe's generated modules (messages, stubs)."""
    return compile_probe(tmp_path_factory.mktemp("probe_gen"))


def probe_catalog() -> Catalog:
    def entry(name: str, calls: tuple[str, ...]) -> ServiceEntry:
        return ServiceEntry(name, "test", 0, "finmesh.kitprobe.v1.ProbeService", calls, ("full",), ())

    services = {
        "probe-a": entry("probe-a", ("probe-b",)),
        "probe-b": entry("probe-b", ()),
        "outsider": entry("outsider", ()),
    }
    return Catalog(services=services, profiles={"full": "all"}, edge=())


def make_servicer(probe: tuple[ModuleType, ModuleType], app: ServiceApp, database: Database | None) -> Any:
    messages, stubs = probe

    class ProbeServicer(stubs.ProbeServiceServicer):  # type: ignore[misc, name-defined]
        executions = 0

        async def Echo(self, request: Any, context: Any) -> Any:
            served = current_call()
            assert served is not None
            remaining = served.time_remaining()
            return messages.EchoResponse(
                text=request.text,
                caller=served.caller,
                user=served.user.subject if served.user else "",
                time_remaining=f"{remaining:.3f}" if remaining is not None else "-1",
            )

        async def Transfer(self, request: Any, context: Any) -> Any:
            assert database is not None

            async def work(_session: Any) -> Any:
                ProbeServicer.executions += 1
                return messages.TransferResponse(
                    transfer_id=f"t-{request.request_id}", execution=ProbeServicer.executions
                )

            return await idempotency.run_once(
                database, "/probe/Transfer", request, messages.TransferResponse, work
            )

        async def Fail(self, request: Any, context: Any) -> Any:
            if request.kind == "insufficient_funds":
                raise errors.InsufficientFunds("available 5 < 7", metadata={"account": "acc-1"})
            if request.kind == "not_found":
                raise errors.NotFound("no such thing")
            raise RuntimeError("secret internal detail")

        async def Sleep(self, request: Any, context: Any) -> Any:
            await asyncio.sleep(request.millis / 1000)
            return messages.SleepResponse()

        async def Relay(self, request: Any, context: Any) -> Any:
            downstream = app.channel_to(request.target)
            response = await stubs.ProbeServiceStub(downstream).Echo(messages.EchoRequest(text="relayed"))
            return messages.RelayResponse(downstream=response)

        async def Count(self, request: Any, context: Any) -> AsyncIterator[Any]:
            for value in range(request.up_to):
                if value == 3 and request.up_to == 99:
                    raise errors.InvalidState("stream stopped at 3")
                yield messages.CountResponse(value=value)

    return ProbeServicer()


StartProbe = Callable[..., Awaitable[ServiceApp]]


@pytest.fixture
async def start_probe(probe: tuple[ModuleType, ModuleType], tmp_path: Path) -> AsyncIterator[StartProbe]:
    """Starts probe services on free ports with the kit's full chain; stops them after the test."""
    apps: list[ServiceApp] = []
    catalog = probe_catalog()

    async def start(
        name: str, *, database: Database | None = None, tls: bool = True, **overrides: Any
    ) -> ServiceApp:
        settings = KitSettings(port=0, pki_dir=tmp_path / "pki", tls=tls, **overrides)
        app = ServiceApp(catalog.service(name), settings, catalog=catalog)
        servicer = make_servicer(probe, app, database)
        app.add_servicer(
            probe[1].add_ProbeServiceServicer_to_server, servicer, "finmesh.kitprobe.v1.ProbeService"
        )
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(0)


def client_channel(app: ServiceApp, identity: str | None) -> grpc.aio.Channel:
    """A channel to `app` presenting `identity`'s certificate from the app's CA (None: no TLS)."""
    ca = LocalCA(app.settings.pki_dir) if identity else None
    return channel(f"127.0.0.1:{app.port}", identity=identity, ca=ca)
