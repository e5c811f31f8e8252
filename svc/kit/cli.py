"""The `finmesh` command: run a profile, serve or migrate one service, show the catalog, ask for health.

    finmesh run [--profile P] [--only A,B] [--port-offset N | --free-ports] [--var-dir DIR]
    finmesh serve NAME
    finmesh migrate NAME
    finmesh catalog [--profile P] [--json]
    finmesh status [--profile P] [--timeout S] [--var-dir DIR]

A mistake of the caller (unknown service or profile, bad FINMESH_* variable) is one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from svc.kit import catalog as catalog_module
from svc.kit.catalog import Catalog, CatalogError, ServiceEntry
from svc.kit.config import ConfigError, KitSettings, load_settings

PROG = "finmesh"
USAGE_ERROR = 2
DEFAULT_VAR_DIR = Path("var")
STATUS_TIMEOUT_S = 3.0


class UsageError(Exception):
    """The command cannot run as asked; the message says why."""


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog=PROG, description="finmesh: the local service mesh and its tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start every service of a profile, each in its own process")
    run.add_argument("--profile", default=catalog_module.FULL_PROFILE, help="product profile (default: full)")
    run.add_argument(
        "--only", default="", metavar="A,B", help="start only these of the profile (`gateway`: the REST edge)"
    )
    ports = run.add_mutually_exclusive_group()
    ports.add_argument("--port-offset", type=int, default=0, metavar="N", help="add N to every catalog port")
    ports.add_argument(
        "--free-ports", action="store_true", help="listen on free ports instead of the catalog's"
    )
    run.add_argument("--var-dir", type=Path, default=DEFAULT_VAR_DIR, help="state: pki/, data/, log/, run/")
    run.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=60.0,
        metavar="S",
        help="seconds to wait for every service to be SERVING (default: 60)",
    )
    run.add_argument(
        "--grace",
        type=_positive_seconds,
        default=10.0,
        metavar="S",
        help="seconds a stopping service has to drain before it is killed (default: 10)",
    )

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("name")

    migrate = commands.add_parser("migrate", help="apply a service's database migrations")
    migrate.add_argument("name")

    show = commands.add_parser("catalog", help="print the service catalog")
    show.add_argument("--profile", help="only the services of this profile")
    show.add_argument("--json", action="store_true", help="as JSON")

    status = commands.add_parser("status", help="ask every service of a profile for its health")
    status.add_argument("--profile", help="default: the running mesh's services, else the full profile")
    status.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=STATUS_TIMEOUT_S,
        metavar="S",
        help="seconds to wait for each answer (default: 3)",
    )
    status.add_argument("--var-dir", type=Path, default=DEFAULT_VAR_DIR, help="the mesh's state directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `finmesh` console script; returns the exit status."""
    arguments = build_parser().parse_args(argv)
    handlers = {"run": _run, "serve": _serve, "migrate": _migrate, "catalog": _catalog, "status": _status}
    try:
        return handlers[arguments.command](arguments)
    except (CatalogError, ConfigError, UsageError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130


# --------------------------------------------------------------------------------------------
# run


def _run(arguments: argparse.Namespace) -> int:
    from svc.kit.launcher import (
        GATEWAY,
        Launcher,
        LaunchError,
        Layout,
        plan_endpoints,
        plan_gateway,
        read_endpoints,
        select,
    )

    load_settings(KitSettings)  # a bad FINMESH_* variable stops here, not in every child
    catalog = catalog_module.default()
    entries = catalog.profile(arguments.profile)
    only = [name.strip() for name in arguments.only.split(",") if name.strip()]
    with_gateway = not only or GATEWAY in only
    services = [name for name in only if name != GATEWAY]
    try:
        for name in services:
            catalog.service(name)
        if only:
            entries = select(entries, services) if services else []
        endpoints = plan_endpoints(
            entries, port_offset=arguments.port_offset, free_ports=arguments.free_ports
        )
        if with_gateway:
            endpoints.append(plan_gateway(port_offset=arguments.port_offset, free_ports=arguments.free_ports))
    except LaunchError as error:
        raise UsageError(str(error)) from None
    layout = Layout(arguments.var_dir)
    running = read_endpoints(layout.endpoints_file)
    if running is not None:
        raise UsageError(f"a mesh of profile {running[0]} is already running from {layout.root}")
    launcher = Launcher(
        arguments.profile,
        endpoints,
        layout,
        startup_timeout_s=arguments.timeout,
        grace_s=arguments.grace,
    )
    return asyncio.run(launcher.run())


# --------------------------------------------------------------------------------------------
# serve and migrate


def _serve(arguments: argparse.Namespace) -> int:
    from svc.kit.launcher import die_with_launcher

    die_with_launcher()
    catalog_module.default().service(arguments.name)
    from svc.kit import server

    try:
        server.run(arguments.name)
    except RuntimeError as error:
        # grpc reports a port it cannot bind as a RuntimeError; anything else is a bug to see whole.
        if "Failed to bind" not in str(error):
            raise
        print(f"{PROG}: {arguments.name}: cannot listen: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        print(f"{PROG}: {arguments.name}: metrics port in use: {error}", file=sys.stderr)
        return 1
    return 0


def _migrate(arguments: argparse.Namespace) -> int:
    catalog = catalog_module.default()
    entry = catalog.service(arguments.name)
    settings = load_settings(KitSettings)
    database_url, migrations = asyncio.run(_upgrade(entry, catalog, settings))
    branches = "kit" + (f" and {migrations}" if migrations else "")
    print(f"{PROG}: {entry.name}: {database_url} is at the newest revision of {branches}")
    return 0


async def _upgrade(entry: ServiceEntry, catalog: Catalog, settings: KitSettings) -> tuple[str, Path | None]:
    from sqlalchemy.engine import make_url

    from svc.kit import migrate, server

    _, migrations = server.builder_for(entry)
    # The service's own app decides where its database is, exactly as when it serves.
    database = server.ServiceApp(entry, settings, catalog=catalog).database
    try:
        await migrate.upgrade(database, migrations)
    finally:
        await database.dispose()
    return make_url(database.url).render_as_string(hide_password=True), migrations


# --------------------------------------------------------------------------------------------
# catalog


def _profiles_of(entry: ServiceEntry) -> list[str]:
    return [*entry.profiles, *(f"{profile}(optional)" for profile in entry.optional_in)]


def _catalog(arguments: argparse.Namespace) -> int:
    from svc.kit.launcher import format_table

    catalog = catalog_module.default()
    entries = catalog.profile(arguments.profile) if arguments.profile else list(catalog.services.values())
    if arguments.json:
        print(json.dumps(_catalog_document(catalog, entries, arguments.profile), indent=2))
        return 0
    if arguments.profile:
        print(f"profile {arguments.profile}: {catalog.profiles[arguments.profile]} ({len(entries)} services)")
    rows = [
        (
            entry.name,
            entry.domain,
            entry.port,
            entry.metrics_port,
            ", ".join(sorted(catalog.allowed_callers(entry.name))),
            ", ".join(_profiles_of(entry)),
        )
        for entry in entries
    ]
    print(format_table(("SERVICE", "DOMAIN", "PORT", "METRICS", "CALLERS", "PROFILES"), rows))
    if not arguments.profile:
        print()
        print(format_table(("PROFILE", "DESCRIPTION"), catalog.profiles.items()))
    return 0


def _catalog_document(
    catalog: Catalog, entries: Sequence[ServiceEntry], profile: str | None
) -> dict[str, Any]:
    services = [
        {
            "name": entry.name,
            "domain": entry.domain,
            "grpc_service": entry.grpc_service,
            "port": entry.port,
            "metrics_port": entry.metrics_port,
            "calls": list(entry.calls),
            "callers": sorted(catalog.allowed_callers(entry.name)),
            "profiles": list(entry.profiles),
            "optional_in": list(entry.optional_in),
        }
        for entry in entries
    ]
    document: dict[str, Any] = {"profiles": catalog.profiles, "services": services}
    if profile:
        document["profile"] = profile
    return document


# --------------------------------------------------------------------------------------------
# status


def _status(arguments: argparse.Namespace) -> int:
    from svc.kit.launcher import (
        SERVING,
        Endpoint,
        LaunchError,
        Layout,
        check_all,
        format_table,
        plan_endpoints,
        read_endpoints,
    )

    catalog = catalog_module.default()
    layout = Layout(arguments.var_dir)
    recorded = read_endpoints(layout.endpoints_file)
    running: dict[str, Endpoint] = {
        endpoint.service: endpoint for endpoint in (recorded[1] if recorded else ())
    }
    if arguments.profile or not recorded:
        planned = plan_endpoints(catalog.profile(arguments.profile or catalog_module.FULL_PROFILE))
        endpoints = [running.get(endpoint.service, endpoint) for endpoint in planned]
    else:
        endpoints = list(running.values())
    try:
        statuses = asyncio.run(check_all(endpoints, layout.pki_dir, arguments.timeout))
    except LaunchError as error:
        raise UsageError(str(error)) from None
    rows = [(e.service, e.address, e.metrics_address, statuses[e.service]) for e in endpoints]
    print(format_table(("SERVICE", "GRPC", "METRICS", "STATUS"), rows))
    serving = sum(status == SERVING for status in statuses.values())
    print(f"{serving}/{len(endpoints)} SERVING")
    return 0 if serving == len(endpoints) else 1


if __name__ == "__main__":
    sys.exit(main())
