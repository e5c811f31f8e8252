"""What a profile deploys: the catalog's services of the profile, with their callers and read-only RPCs."""

from __future__ import annotations

from dataclasses import dataclass

from svc.kit.catalog import EDGE_CALLER, FULL_PROFILE, Catalog, ServiceEntry


@dataclass(frozen=True)
class Workload:
    """One catalog service as a profile deploys it."""

    entry: ServiceEntry
    optional: bool
    callers: tuple[str, ...]
    read_only_methods: tuple[str, ...]


def profile_workloads(
    catalog: Catalog, profile: str, read_only: dict[str, tuple[str, ...]]
) -> list[Workload]:
    """The services a profile deploys (required and optional), in catalog order.

    A service's callers are the catalog's allowed callers that the profile also deploys, plus
    the edge gateway: an AuthorizationPolicy names no identity that cannot exist in the release.
    """
    entries = catalog.profile(profile, with_optional=True)
    deployed = {entry.name for entry in entries}
    workloads = []
    for entry in entries:
        callers = sorted(c for c in catalog.allowed_callers(entry.name) if c in deployed or c == EDGE_CALLER)
        workloads.append(
            Workload(
                entry=entry,
                optional=profile != FULL_PROFILE and profile not in entry.profiles,
                callers=tuple(callers),
                read_only_methods=read_only.get(entry.grpc_service, ()),
            )
        )
    return workloads
