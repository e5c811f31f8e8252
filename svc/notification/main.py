"""Wiring: the notification servicer, the consumer of the events users are told about, and the
delivery worker with the provider of each channel this deployment has."""

from __future__ import annotations

from finmesh.notification.v1 import notification_service_pb2_grpc

from svc.kit.config import load_settings
from svc.kit.consumer import EventConsumer
from svc.kit.sealing import Sealer, configured_provider
from svc.kit.server import ServiceApp
from svc.notification import events
from svc.notification.channels import HttpProvider, Provider, SmtpProvider, SmtpSettings
from svc.notification.config import NotificationSettings
from svc.notification.contacts import UserServiceDirectory
from svc.notification.domain import Channel, RetryPolicy
from svc.notification.intake import EventIntake
from svc.notification.server import NotificationServicer, seed_builtins
from svc.notification.worker import DeliveryWorker

SERVICE_NAME = "finmesh.notification.v1.NotificationService"


def providers(settings: NotificationSettings) -> dict[Channel, Provider]:
    """The provider of every channel configured; the inbox needs none."""
    found: dict[Channel, Provider] = {}
    if settings.smtp_host:
        found[Channel.EMAIL] = SmtpProvider(
            SmtpSettings(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_sender,
                starttls=settings.smtp_starttls,
                username=settings.smtp_username,
                password=settings.smtp_password,
            )
        )
    if settings.sms_provider_url:
        found[Channel.SMS] = HttpProvider("sms", settings.sms_provider_url, settings.sms_provider_token)
    if settings.push_provider_url:
        found[Channel.PUSH] = HttpProvider("push", settings.push_provider_url, settings.push_provider_token)
    return found


def build(app: ServiceApp) -> None:
    """Registers the servicer; the consumer and the worker run while the service serves."""
    settings = (
        app.settings
        if isinstance(app.settings, NotificationSettings)
        else load_settings(NotificationSettings)
    )
    sealer = Sealer(configured_provider(settings.data_keys, settings.data_key_path))
    channels = providers(settings)
    available = [*channels, Channel.IN_APP]
    worker = DeliveryWorker(
        app.database,
        sealer,
        UserServiceDirectory(app.channel_to("user")),
        channels,
        policy=RetryPolicy(
            base_ms=settings.retry_backoff_ms,
            max_ms=settings.retry_backoff_max_ms,
            attempts_max=settings.retry_attempts_max,
        ),
        poll_interval_ms=settings.worker_poll_interval_ms,
    )
    servicer = NotificationServicer(app.database, sealer, available, worker.notify)
    app.add_servicer(
        notification_service_pb2_grpc.add_NotificationServiceServicer_to_server, servicer, SERVICE_NAME
    )
    consumer = EventConsumer(
        app.database,
        app.bus,
        name=events.CONSUMER,
        topics=events.TOPICS,
        handler=EventIntake(sealer, available, worker.notify),
        max_attempts=settings.consumer_attempts_max,
    )

    async def seed() -> None:
        await seed_builtins(app.database)

    app.on_start(seed)
    app.on_start(consumer.start)
    app.on_start(worker.start)
    app.on_stop(consumer.stop)
    app.on_stop(worker.stop)
