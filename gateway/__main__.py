"""`python -m gateway`: serves the REST edge on FINMESH_HOST:FINMESH_PORT (8080 by default).

Configured like every service by FINMESH_* variables (gateway.config.GatewaySettings); the
upstreams are found as the launcher publishes them (FINMESH_ENDPOINTS, else catalog ports), and
with FINMESH_TLS on the gateway calls them with its own `gateway` certificate from FINMESH_PKI_DIR.
"""

from __future__ import annotations

import signal
import sys

import uvicorn

from gateway.app import create_app
from gateway.config import GatewaySettings
from svc.kit.config import ConfigError, load_settings
from svc.kit.launcher import die_with_launcher
from svc.kit.telemetry import configure_logging, configure_tracing


def main() -> None:
    die_with_launcher()
    try:
        settings = load_settings(GatewaySettings)
    except ConfigError as error:
        sys.exit(str(error))
    configure_logging("gateway", settings.log_level)
    configure_tracing("gateway")
    app = create_app(settings)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again for the previous handler;
    # these make that a normal exit (status 0), as for the services under the launcher.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _drained)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        # The C parser, never a silent fall back to h11 (a quarter more CPU per request).
        http="httptools",
        timeout_graceful_shutdown=int(settings.grace_period_s),
    )


def _drained(_signum: int, _frame: object) -> None:
    """Nothing left to do: uvicorn has already stopped serving and drained."""


if __name__ == "__main__":
    main()
