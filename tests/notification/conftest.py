"""The notification service with the real user and auth services (tests/harness/identity.py) on
one in-process bus, a real SMTP server (aiosmtpd) receiving its email and a real HTTP server as
its push provider's API, on each backend."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from finmesh.notification.v1 import notification_service_pb2 as service
from finmesh.notification.v1 import notification_service_pb2_grpc as service_grpc
from google.protobuf.message import Message
from sqlalchemy import select

from svc.kit import catalog
from svc.kit.bus import BusMessage
from svc.kit.client import channel
from svc.kit.outbox import HEADER_CONTENT_TYPE, HEADER_EVENT_ID, HEADER_EVENT_TYPE, event_meta, event_topic
from svc.kit.server import ServiceApp
from svc.kit.tables import outbox
from svc.notification import main as notification_main
from svc.notification.config import NotificationSettings
from tests.harness.http_provider import ProviderServer
from tests.harness.identity import Identity, bearer, free_port, kafka_bus, start_identity
from tests.harness.servers import KafkaBroker
from tests.harness.smtp import SmtpServer

ROOT = Path(__file__).resolve().parents[2]
NOTIFICATION_MIGRATIONS = ROOT / "svc" / "notification" / "migrations" / "versions"
ATTEMPTS_MAX = 3


@dataclass
class Mesh:
    """Running user, auth and notification services, the SMTP server, and stubs."""

    identity: Identity
    app: ServiceApp
    stub: service_grpc.NotificationServiceStub
    smtp: SmtpServer
    push: ProviderServer
    connection: grpc.aio.Channel
    admin: tuple[tuple[str, str], ...] = ()

    async def user_token(self, email: str) -> tuple[tuple[str, str], ...]:
        """Metadata with a real access token of a registered user (a login: it is an event too)."""
        return bearer((await self.identity.tokens(email)).access_token)

    async def publish(self, event: Message) -> None:
        """Publishes an event on the shared bus as its producing service's relay would (again, for
        a redelivery)."""
        meta = event_meta(event)
        await self.app.bus.publish(
            [
                BusMessage(
                    topic=event_topic(event),
                    key=meta.aggregate_id,
                    value=event.SerializeToString(),
                    headers={
                        HEADER_EVENT_TYPE: event.DESCRIPTOR.full_name,
                        HEADER_EVENT_ID: meta.event_id,
                        HEADER_CONTENT_TYPE: "application/x-protobuf",
                    },
                )
            ]
        )

    async def deliveries(self, **filters: Any) -> list[Any]:
        listed = await self.stub.ListDeliveries(
            service.ListDeliveriesRequest(page_size=1000, **filters), metadata=self.admin
        )
        return list(listed.deliveries)

    async def events(self, event_type: type[Message]) -> list[Any]:
        async with self.app.database.transaction() as session:
            rows = await session.execute(
                select(outbox.c.payload)
                .where(outbox.c.event_type == event_type.DESCRIPTOR.full_name)
                .order_by(outbox.c.id)
            )
            return [event_type.FromString(row.payload) for row in rows]


def _database(database_url: str, tmp_path: Path) -> str:
    if database_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{tmp_path / 'notification.db'}"
    return database_url


async def start_mesh(database_url: str, tmp_path: Path, *, kafka: str = "") -> Mesh:
    """User, auth and notification sharing one in-process bus, or, with `kafka` (bootstrap
    servers), each on its own client of the real broker, as deployed."""
    smtp = SmtpServer()
    smtp.start()
    push = ProviderServer()
    push.start()
    prefix = f"t{uuid.uuid4().hex[:8]}."
    identity_bus = kafka_bus(kafka, prefix, "identity") if kafka else None
    # Auth (reset codes) and user (verification codes) send through notification, started last.
    notification_port = free_port()
    try:
        identity = await start_identity(
            database_url,
            tmp_path,
            endpoints={"notification": f"127.0.0.1:{notification_port}"},
            bus=identity_bus,
        )
    except BaseException:
        smtp.stop()
        push.stop()
        raise
    keys = tmp_path / "notification-jwt.pem"
    identity.export_public_keys(keys)
    settings = NotificationSettings(
        port=notification_port,
        tls=False,
        pki_dir=tmp_path / "pki",
        data_dir=tmp_path / "notification-data",
        database_url=_database(database_url, tmp_path),
        endpoints={"user": f"127.0.0.1:{identity.user_app.port}"},
        jwt_public_keys_file=keys,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        push_provider_url=push.url,
        push_provider_token="push-api-token",
        retry_backoff_ms=20,
        retry_backoff_max_ms=100,
        retry_attempts_max=ATTEMPTS_MAX,
        worker_poll_interval_ms=20,
    )
    services = catalog.default()
    bus = kafka_bus(kafka, prefix, "notification") if kafka else identity.user_app.bus
    app = ServiceApp(services.service("notification"), settings, catalog=services, bus=bus)
    notification_main.build(app)
    try:
        await app.start(migrations=NOTIFICATION_MIGRATIONS, migrate_database=True)
    except BaseException:
        await app.stop(0)
        await identity.stop()
        smtp.stop()
        push.stop()
        raise
    connection = channel(f"127.0.0.1:{app.port}")
    running = Mesh(identity, app, service_grpc.NotificationServiceStub(connection), smtp, push, connection)
    running.admin = bearer(await identity.admin_token())
    return running


async def stop_mesh(running: Mesh) -> None:
    await running.connection.close()
    await running.app.stop(0)
    await running.identity.stop()
    running.smtp.stop()
    running.push.stop()


@pytest.fixture
async def mesh(database_url: str, tmp_path: Path) -> AsyncIterator[Mesh]:
    running = await start_mesh(database_url, tmp_path)
    yield running
    await stop_mesh(running)


@pytest.fixture
async def kafka_mesh(database_url: str, tmp_path: Path, kafka_broker: KafkaBroker) -> AsyncIterator[Mesh]:
    """The same services, their events through the harness's real Kafka broker."""
    running = await start_mesh(database_url, tmp_path, kafka=kafka_broker.bootstrap_servers)
    yield running
    await stop_mesh(running)
