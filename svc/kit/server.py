"""The grpc.aio server bootstrap every service uses.

A service's `main.py` defines `build(app)`, which creates its servicer from `app.database`,
`app.bus` and `app.settings` and registers it with `app.add_servicer(...)`. The kit adds the
standard health service (NOT_SERVING while starting and draining), server reflection, mTLS,
the interceptor chain, metrics and graceful shutdown. A service without a `main.py` is served
by its generated base servicer, which answers UNIMPLEMENTED to every RPC.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from svc.kit import catalog as catalog_module
from svc.kit import client
from svc.kit.bus import EventBus, InProcessBus, KafkaBus, SqliteBus
from svc.kit.catalog import Catalog, CatalogError, ServiceEntry
from svc.kit.config import KitSettings, load_settings
from svc.kit.db import Database
from svc.kit.identity import TokenVerifier
from svc.kit.interceptors import Handler, ServerChain
from svc.kit.mtls import LocalCA
from svc.kit.outbox import OutboxRelay
from svc.kit.telemetry import RpcMetrics, configure_logging, configure_tracing

log = logging.getLogger("finmesh.server")

RegisterFunction = Callable[[Any, Any], None]


class ServiceApp:
    """One running service: its settings, resources and gRPC server."""

    def __init__(
        self,
        entry: ServiceEntry,
        settings: KitSettings,
        *,
        catalog: Catalog | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.entry = entry
        self.name = entry.name
        self.settings = settings
        self.catalog = catalog
        self.port = settings.port or entry.port
        self.metrics = RpcMetrics(entry.name)
        self.health = health.aio.HealthServicer()
        self._bus = bus
        self._database: Database | None = None
        self._service_names: list[str] = []
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._on_start: list[Callable[[], Awaitable[None]]] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._relay: OutboxRelay | None = None
        self._server: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()
        verifier = TokenVerifier.from_pem_file(
            settings.jwt_public_keys_file, issuer=settings.jwt_issuer, audience=settings.jwt_audience
        )
        self._chain = ServerChain(
            service=entry.name,
            catalog=catalog,
            metrics=self.metrics,
            verifier=verifier,
            require_peer_identity=settings.tls,
        )
        # Without this, grpc sets SO_REUSEPORT and a second server can bind the same port and
        # silently take half of another's calls.
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self._pending: list[tuple[str, dict[str, Handler]]] = []

    @property
    def server(self) -> grpc.aio.Server:
        assert self._server is not None
        return self._server

    @property
    def database(self) -> Database:
        """The service's database, created on first use (SQLite file under data_dir by default)."""
        if self._database is None:
            url = self.settings.database_url or self._default_database_url()
            schema = self.settings.database_schema or self.name.replace("-", "_")
            self._database = Database(url, schema=schema)
        return self._database

    @property
    def bus(self) -> EventBus:
        """The event bus of `settings.bus`, created on first use: Kafka, the SQLite file that the
        processes of a local mesh share, or in process."""
        if self._bus is None:
            if self.settings.bus == "kafka":
                self._bus = KafkaBus(self.settings.kafka_bootstrap_servers, client_id=self.name)
            elif self.settings.bus == "sqlite":
                self._bus = SqliteBus(self.settings.sqlite_bus_path)
            else:
                self._bus = InProcessBus()
        return self._bus

    def _default_database_url(self) -> str:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{(self.settings.data_dir / self.name).with_suffix('.db')}"

    def channel_to(self, service: str) -> grpc.aio.Channel:
        """A channel to another service of the mesh, as this service; only to services it may call.

        Refusing here, at the first use, names the missing catalog edge; the callee would only
        answer PERMISSION_DENIED.
        """
        existing = self._channels.get(service)
        if existing is not None:
            return existing
        if service not in self.entry.calls:
            raise CatalogError(
                f"{self.name!r} may not call {service!r}: add it to its 'calls' in the catalog"
            )
        target = self.settings.endpoints.get(service)
        if target is None:
            catalog = self.catalog or catalog_module.default()
            target = f"{self.settings.host}:{catalog.service(service).port}"
        ca = LocalCA(self.settings.pki_dir) if self.settings.tls else None
        created = client.channel(target, identity=self.name, ca=ca)
        self._channels[service] = created
        return created

    def use_token_verifier(self, verifier: TokenVerifier) -> None:
        """Replaces the verifier of end-user tokens built from `jwt_public_keys_file`: the auth
        service verifies against the signing keys it holds itself."""
        self._chain.use_verifier(verifier)

    def on_start(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Runs `hook` once the database is migrated, before the service reports SERVING."""
        self._on_start.append(hook)

    def on_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Runs `hook` after in-flight RPCs have drained, before the database closes (reverse order)."""
        self._on_stop.append(hook)

    def add_servicer(self, register: RegisterFunction, servicer: Any, service_name: str) -> None:
        """Registers a servicer through its generated add_*_to_server; it is served from start()."""
        capture = _HandlerCapture()
        register(servicer, capture)
        if set(capture.services) != {service_name}:
            raise ValueError(
                f"{register.__name__} registers {sorted(capture.services)}, not {service_name!r}"
            )
        self._pending.append((service_name, capture.services[service_name]))
        self._service_names.append(service_name)

    async def start(self, *, migrations: Path | None = None, migrate_database: bool = False) -> None:
        """Migrates (when asked), binds, starts serving and reports SERVING once ready."""
        for name in (*self._service_names, health.OVERALL_HEALTH):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        for service_name, handlers in self._pending:
            wrapped = self._chain.wrap_service(service_name, handlers)
            self.server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service_name, wrapped),)
            )
            self.server.add_registered_method_handlers(service_name, wrapped)
        self._pending.clear()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                *self._service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        if migrate_database:
            # Imported here: Alembic costs every process half a second of start-up, and a
            # service without migrations never needs it.
            from svc.kit import migrate

            await migrate.upgrade(self.database, migrations)
            # A service with a database has an outbox: its relay publishes what handlers commit.
            await self.bus.start()
            self._relay = OutboxRelay(self.database, self.bus)
            await self._relay.start()
        for hook in self._on_start:
            await hook()
        address = f"{self.settings.host}:{self.port}"
        if self.settings.tls:
            credentials = LocalCA(self.settings.pki_dir).credentials(self.name)
            bound = self.server.add_secure_port(address, credentials.server())
        else:
            bound = self.server.add_insecure_port(address)
        self.port = bound
        await self.server.start()
        if self.settings.metrics_port:
            self.metrics.serve(self.settings.host, self.settings.metrics_port)
        for name in (*self._service_names, health.OVERALL_HEALTH):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            extra={"fields": {"address": f"{self.settings.host}:{self.port}", "tls": self.settings.tls}},
        )

    async def stop(self, grace_s: float | None = None) -> None:
        """Drains: NOT_SERVING first, then refuses new RPCs and lets in-flight ones finish."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s if grace_s is not None else self.settings.grace_period_s)
        # Hooks first: a background task finishing its work may still call other services.
        for hook in reversed(self._on_stop):
            await hook()
        for channel in self._channels.values():
            await channel.close()
        if self._relay is not None:
            await self._relay.stop()
        if self._bus is not None:
            await self._bus.stop()
        if self._database is not None:
            await self._database.dispose()
        log.info("stopped")

    async def wait(self) -> None:
        await self.server.wait_for_termination()


class _HandlerCapture:
    """Stands in for the server in a generated add_*_to_server, keeping its method handlers."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Handler]] = {}

    def add_generic_rpc_handlers(self, _handlers: Any) -> None:
        # The same handlers arrive through add_registered_method_handlers, by method name.
        pass

    def add_registered_method_handlers(self, service_name: str, handlers: dict[str, Handler]) -> None:
        self.services[service_name] = dict(handlers)


def unimplemented_builder(entry: ServiceEntry) -> Callable[[ServiceApp], None]:
    """Serves the generated base servicer: every RPC answers UNIMPLEMENTED."""
    package, _, service = entry.grpc_service.rpartition(".")
    short = package.split(".")[1]
    module = importlib.import_module(f"{package}.{short}_service_pb2_grpc")

    def build(app: ServiceApp) -> None:
        servicer = getattr(module, f"{service}Servicer")()
        app.add_servicer(getattr(module, f"add_{service}Servicer_to_server"), servicer, entry.grpc_service)

    return build


def builder_for(entry: ServiceEntry) -> tuple[Callable[[ServiceApp], None], Path | None]:
    """The service's own `build` from svc/<name>/main.py, or the UNIMPLEMENTED servicer."""
    try:
        module = importlib.import_module(f"{entry.package}.main")
    except ModuleNotFoundError as missing:
        if missing.name not in (entry.package, f"{entry.package}.main"):
            raise
        return unimplemented_builder(entry), None
    migrations = Path(module.__file__ or "").parent / "migrations" / "versions"
    build: Callable[[ServiceApp], None] = module.build
    return build, migrations if migrations.is_dir() else None


async def serve(name: str, *, settings: KitSettings | None = None) -> None:
    """Runs one service from the catalog until SIGTERM or SIGINT, then drains and exits."""
    catalog = catalog_module.default()
    entry = catalog.service(name)
    settings = settings or load_settings(KitSettings)
    configure_logging(name, settings.log_level)
    configure_tracing(name)
    if settings.tls:
        settings.pki_dir.mkdir(parents=True, exist_ok=True)
    if not settings.metrics_port:
        settings = settings.model_copy(update={"metrics_port": entry.metrics_port})
    app = ServiceApp(entry, settings, catalog=catalog)
    build, migrations = builder_for(entry)
    build(app)
    await app.start(migrations=migrations, migrate_database=migrations is not None)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await app.stop()


def run(name: str) -> None:
    asyncio.run(serve(name))
