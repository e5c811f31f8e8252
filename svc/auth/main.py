"""Wiring: the auth servicer over its database, the user service, the signing-key ring, the
sealing key provider, argon2id and the nonce store; the ring loads before the service serves
and reloads in the background; the consumer of user status changes ends sessions."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac

from finmesh.auth.v1 import auth_service_pb2_grpc

from svc.auth import events, housekeeping
from svc.auth.config import AuthSettings
from svc.auth.keyring import KeyRing, KeyRingVerifier, refresh_forever
from svc.auth.nonces import make_nonce_store
from svc.auth.passwords import Argon2Parameters, Passwords
from svc.auth.resets import ResetNotices
from svc.auth.server import AuthServicer
from svc.auth.users import Users
from svc.kit.config import load_settings
from svc.kit.consumer import EventConsumer
from svc.kit.periodic import Periodic
from svc.kit.sealing import FileKeyProvider, KeyProvider, Sealer, StaticKeyProvider
from svc.kit.server import ServiceApp

SERVICE_NAME = "finmesh.auth.v1.AuthService"
MASTER_KEY_FILE = "auth-master.key"
IDENTIFIER_KEY_LABEL = b"finmesh.auth.identifier-hash"


def key_provider(settings: AuthSettings) -> KeyProvider:
    """Configured master keys, else the key file under the data directory."""
    if settings.master_keys:
        return StaticKeyProvider.from_base64(*settings.master_keys)
    return FileKeyProvider(settings.data_dir / MASTER_KEY_FILE)


def build(app: ServiceApp) -> None:
    """Registers the auth servicer; the signing keys load before the service reports SERVING."""
    wire(app)


def wire(app: ServiceApp) -> AuthServicer:
    """What `build` does, returning the servicer (tests reach its key ring through it)."""
    settings = app.settings if isinstance(app.settings, AuthSettings) else load_settings(AuthSettings)
    provider = key_provider(settings)
    sealer = Sealer(provider)
    ring = KeyRing(app.database, sealer, settings.signing_algorithm)
    # Identifier hashes (lockout counters, events) are keyed so that they reveal nothing without
    # the master key; derived rather than stored so that every replica computes the same.
    identifier_key = hmac.new(
        provider.key(provider.current_key_id()), IDENTIFIER_KEY_LABEL, hashlib.sha256
    ).digest()
    nonces = make_nonce_store(settings.redis_url)
    passwords = Passwords(
        Argon2Parameters(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    )
    reset_notices = ResetNotices(app.channel_to("notification"))
    servicer = AuthServicer(
        app.database,
        Users(app.channel_to("user")),
        ring,
        sealer,
        passwords,
        nonces,
        identifier_key,
        settings.bootstrap_admin_user_ids,
        reset_notices,
    )
    app.add_servicer(auth_service_pb2_grpc.add_AuthServiceServicer_to_server, servicer, SERVICE_NAME)
    app.use_token_verifier(KeyRingVerifier(ring, issuer=settings.jwt_issuer, audience=settings.jwt_audience))
    refresher: list[asyncio.Task[None]] = []

    async def start() -> None:
        await ring.current()
        refresher.append(asyncio.create_task(refresh_forever(ring), name="auth-signing-keys"))

    async def stop() -> None:
        for task in refresher:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await reset_notices.drain()
        await nonces.close()

    consumer = EventConsumer(
        app.database, app.bus, name=events.CONSUMER, topics=[events.USERS_TOPIC], handler=events.on_user_event
    )
    sweeper = Periodic(
        "auth-housekeeping", lambda: housekeeping.sweep(app.database, nonces), housekeeping.SWEEP_INTERVAL_S
    )
    app.on_start(start)
    app.on_start(sweeper.start)
    app.on_stop(sweeper.stop)
    app.on_start(consumer.start)
    app.on_stop(consumer.stop)
    app.on_stop(stop)
    return servicer
