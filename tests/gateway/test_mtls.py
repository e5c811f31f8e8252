"""With TLS on, the gateway calls services over mutual TLS as the `gateway` identity, the one
identity every service accepts forwarded end-user tokens from (the catalog's edge caller)."""

from __future__ import annotations

import uuid
from pathlib import Path

from gateway.config import GatewaySettings
from svc.auth import keys as auth_keys
from svc.auth import main as auth_main
from svc.auth.config import AuthSettings
from svc.kit import catalog
from svc.kit.bus import InProcessBus
from svc.kit.server import ServiceApp
from tests.gateway.conftest import free_port, serve_gateway, start_ledger
from tests.gateway.issuer import Issuer, SigningKey
from tests.harness.identity import AUTH_MIGRATIONS


async def test_gateway_reaches_tls_services_as_the_gateway_identity(tmp_path: Path) -> None:
    services = catalog.default()
    pki = tmp_path / "pki"
    settings = AuthSettings(
        port=free_port(),
        pki_dir=pki,
        tls=True,
        data_dir=tmp_path / "auth-data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}",
    )
    auth = ServiceApp(services.service("auth"), settings, catalog=services, bus=InProcessBus())
    ring = auth_main.wire(auth).keyring
    await auth.start(migrations=AUTH_MIGRATIONS, migrate_database=True)
    loaded = ring.loaded
    assert loaded is not None
    pem = tmp_path / "keys.pem"
    pem.write_bytes(b"".join(auth_keys.public_pem(jwk) for jwk in loaded.published))
    ledger = await start_ledger(tmp_path, pem, InProcessBus(), tls=True)
    try:
        gateway = GatewaySettings(
            port=0,
            tls=True,
            pki_dir=pki,
            endpoints={"auth": f"127.0.0.1:{auth.port}", "ledger": f"127.0.0.1:{ledger.port}"},
        )
        async with serve_gateway(gateway) as edge:
            # An operator token (auth grants the role only through maker-checker), signed with
            # auth's key: the gateway fetched auth's JWKS over mTLS to verify it.
            token = Issuer([SigningKey(loaded.kid, loaded.private)]).token("ops-1", roles=("operator",))
            response = await edge.http.get(
                f"/v1/admin/ledger/accounts/{uuid.uuid4()}", headers={"Authorization": f"Bearer {token}"}
            )
            assert edge.gateway.authenticator.jwks.fetches == 1
    finally:
        await ledger.stop(0)
        await auth.stop(0)
    # NOT_FOUND from the ledger: the call was admitted (peer identity `gateway`, token verified).
    assert response.status_code == 404, response.text
    assert "ledger.finmesh.io" in response.text
