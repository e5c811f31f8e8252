"""What a deployment may set of each service's configuration, read from its settings class.

A service reads `FINMESH_<NAME>` into the fields of one pydantic-settings class (svc.kit.config);
the chart renders `serviceSettings.<service>` of the values into those variables. This module
says, per service, which names exist, which the chart sets itself (never the values), which are
secrets (only by reference to a Kubernetes Secret, never a literal) and whether the service reads
the shared Redis URL. The values schema turns that into `serviceSettings` (tools.deploy.schema),
so a typo, a setting of another service or a literal private key fails at `helm install`.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from types import ModuleType

from pydantic import SecretStr

from gateway.config import GatewaySettings
from svc.kit.catalog import Catalog, ServiceEntry
from svc.kit.config import KitSettings

GATEWAY = "gateway"
# Set by the chart's finmesh.env (or config.redisUrl) for every pod; a value would duplicate them.
CHART_MANAGED = frozenset(
    {
        "host",
        "port",
        "metrics_port",
        "tls",
        "data_dir",
        "log_level",
        "bus",
        "kafka_bootstrap_servers",
        "database_schema",
        "database_url",
        "jwt_public_keys_file",
        "jwt_issuer",
        "jwt_audience",
        "endpoints",
        "redis_url",
    }
)
# Credentials by name, whatever their type: keys, PINs, passwords, tokens, URLs with passwords.
SECRET_NAME = re.compile(
    r"(^|_)(private_key|pin|password|token|secret|secret_access_key)$|^(database_url|redis_url|master_keys|data_keys)$"
)
# Secrets by content: the chain gateway's chains hold the RPC providers' endpoints, whose URLs
# carry the providers' API keys.
SECRET_FIELDS = {"chain-gateway": frozenset({"chains"})}


@dataclass(frozen=True)
class ServiceSettings:
    """The settings a deployment gives one service, as FINMESH_ names without the prefix."""

    # Any value the service reads from a literal: non-secret and not set by the chart.
    plain: tuple[str, ...]
    # Secrets: only from a Secret (secretSettings), never a literal.
    secret: tuple[str, ...]
    # `*_FILE` settings, which may name a file mounted from a Secret (secretFiles).
    files: tuple[str, ...]
    # The service reads FINMESH_REDIS_URL (the chart gives it config.redisUrl).
    redis: bool

    @property
    def referable(self) -> tuple[str, ...]:
        """Names a Secret may give: every setting the chart does not set itself."""
        return tuple(sorted({*self.plain, *self.secret}))


def settings_class(entry: ServiceEntry) -> type[KitSettings]:
    """The settings class of a catalog service: the most derived KitSettings subclass its
    `<package>.config` module defines, or KitSettings for a service without a config module."""
    try:
        module = importlib.import_module(f"{entry.package}.config")
    except ModuleNotFoundError as error:
        if error.name not in (entry.package, f"{entry.package}.config"):
            raise
        return KitSettings
    return _defined_settings(module)


def _defined_settings(module: ModuleType) -> type[KitSettings]:
    defined = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, KitSettings) and value.__module__ == module.__name__
    ]
    leaves = [
        cls for cls in defined if not any(other is not cls and issubclass(other, cls) for other in defined)
    ]
    if len(leaves) != 1:
        raise ValueError(f"{module.__name__} defines {len(leaves)} settings classes, expected one")
    return leaves[0]


def describe(service: str, settings: type[KitSettings]) -> ServiceSettings:
    """Sorts the fields of one service's settings class into plain, secret and file settings."""
    plain: list[str] = []
    secret: list[str] = []
    files: list[str] = []
    for name, field in settings.model_fields.items():
        if name in CHART_MANAGED:
            continue
        is_secret = (
            SECRET_NAME.search(name) is not None
            or name in SECRET_FIELDS.get(service, frozenset())
            or SecretStr in _types(field.annotation)
        )
        (secret if is_secret else plain).append(name.upper())
        if name.endswith("_file"):
            files.append(name.upper())
    return ServiceSettings(
        plain=tuple(sorted(plain)),
        secret=tuple(sorted(secret)),
        files=tuple(sorted(files)),
        redis="redis_url" in settings.model_fields,
    )


def _types(annotation: object) -> set[object]:
    """The annotation and every type inside it (`SecretStr | None` -> {SecretStr, None, ...})."""
    found = {annotation}
    for argument in getattr(annotation, "__args__", ()):
        found |= _types(argument)
    return found


def catalog_settings(catalog: Catalog) -> dict[str, ServiceSettings]:
    """Every catalog service's settings and the gateway's, by service name."""
    found = {name: describe(name, settings_class(entry)) for name, entry in catalog.services.items()}
    found[GATEWAY] = describe(GATEWAY, GatewaySettings)
    return found
