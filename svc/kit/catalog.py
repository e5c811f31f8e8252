"""The service catalog (svc/catalog.yaml): every service, its port, its callers and its profiles."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

CATALOG_PATH = Path(__file__).resolve().parents[1] / "catalog.yaml"
FULL_PROFILE = "full"
METRICS_PORT_OFFSET = 1000
# The REST edge transcodes calls to any service's annotated RPCs, so it may call every service.
EDGE_CALLER = "gateway"


class CatalogError(ValueError):
    """The catalog file is inconsistent (unknown service, duplicate port, unknown profile)."""


@dataclass(frozen=True)
class ServiceEntry:
    """One service of the catalog."""

    name: str
    domain: str
    port: int
    grpc_service: str
    calls: tuple[str, ...]
    profiles: tuple[str, ...]
    optional_in: tuple[str, ...]

    @property
    def metrics_port(self) -> int:
        return self.port + METRICS_PORT_OFFSET

    @property
    def package(self) -> str:
        """Python package of the service under svc/ (`chain-gateway` -> `svc.chain_gateway`)."""
        return "svc." + self.name.replace("-", "_")


@dataclass(frozen=True)
class Catalog:
    """The whole catalog, validated."""

    services: dict[str, ServiceEntry]
    profiles: dict[str, str]
    edge: tuple[str, ...]

    def service(self, name: str) -> ServiceEntry:
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(sorted(self.services))
            raise CatalogError(f"unknown service {name!r}; the catalog has: {known}") from None

    def profile(self, profile: str, *, with_optional: bool = True) -> list[ServiceEntry]:
        """Services deployed by a product profile, in catalog order."""
        if profile not in self.profiles:
            raise CatalogError(f"unknown profile {profile!r}; profiles: {', '.join(self.profiles)}")
        if profile == FULL_PROFILE:
            return list(self.services.values())
        return [
            entry
            for entry in self.services.values()
            if profile in entry.profiles or (with_optional and profile in entry.optional_in)
        ]

    def allowed_callers(self, name: str) -> frozenset[str]:
        """Identities allowed to call `name`: the services whose `calls` name it, and the edge."""
        self.service(name)
        callers = {entry.name for entry in self.services.values() if name in entry.calls}
        return frozenset(callers | {EDGE_CALLER})


def _parse(raw: dict[str, object]) -> Catalog:
    profiles = raw.get("profiles")
    services = raw.get("services")
    if not isinstance(profiles, dict) or not isinstance(services, dict):
        raise CatalogError("catalog needs 'profiles' and 'services' mappings")
    entries: dict[str, ServiceEntry] = {}
    for name, spec in services.items():
        if not isinstance(spec, dict):
            raise CatalogError(f"service {name!r}: expected a mapping")
        try:
            entries[name] = ServiceEntry(
                name=name,
                domain=str(spec["domain"]),
                port=int(spec["port"]),
                grpc_service=str(spec["grpc_service"]),
                calls=tuple(spec.get("calls") or ()),
                profiles=tuple(spec.get("profiles") or ()),
                optional_in=tuple(spec.get("optional_in") or ()),
            )
        except KeyError as missing:
            raise CatalogError(f"service {name!r}: missing field {missing}") from None
    catalog = Catalog(services=entries, profiles=dict(profiles), edge=tuple(raw.get("edge") or ()))  # type: ignore[arg-type]
    _check(catalog)
    return catalog


def _check(catalog: Catalog) -> None:
    ports: dict[int, str] = {}
    for entry in catalog.services.values():
        for port in (entry.port, entry.metrics_port):
            if port in ports:
                raise CatalogError(f"port {port} of {entry.name!r} is already used by {ports[port]!r}")
            ports[port] = entry.name
        for callee in entry.calls:
            if callee not in catalog.services:
                raise CatalogError(f"service {entry.name!r} calls unknown service {callee!r}")
        for profile in (*entry.profiles, *entry.optional_in):
            if profile not in catalog.profiles:
                raise CatalogError(f"service {entry.name!r} names unknown profile {profile!r}")


def load(path: Path = CATALOG_PATH) -> Catalog:
    """Reads and validates a catalog file."""
    with path.open() as handle:
        raw = yaml.safe_load(handle)
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: not a mapping")
    return _parse(raw)


@cache
def default() -> Catalog:
    """The repository's catalog, read once."""
    return load()
