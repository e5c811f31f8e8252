"""The platform's health as the console shows it: every service of the catalog (the standard gRPC
health check of each one the admin BFF may call; DISABLED outside the product profile) and every
chain the chain gateway follows (its follower and providers), summed up in one condition.

A core flow is down (UNHEALTHY) when a service the profile deploys, or a chain, is down; an
optional service down, a lagging chain or an unhealthy provider only degrade it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from finmesh.admin_bff.v1 import admin_bff_service_pb2 as admin
from finmesh.chain_gateway.v1 import chain_gateway_resources_pb2 as chain_resources
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2 as chain_service
from finmesh.chain_gateway.v1 import chain_gateway_service_pb2_grpc as chain_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from svc.kit.catalog import Catalog, ServiceEntry

CHAINS_PAGE = 1000
SELF = "admin-bff"
SERVING = health_pb2.HealthCheckResponse.SERVING
HEALTHY, DEGRADED, UNHEALTHY, DISABLED = (
    admin.HEALTH_STATE_HEALTHY,
    admin.HEALTH_STATE_DEGRADED,
    admin.HEALTH_STATE_UNHEALTHY,
    admin.HEALTH_STATE_DISABLED,
)
# Each health check ends at this share of the section's deadline, so that one stalled service is
# reported as such instead of taking the whole section with it (even on a loaded machine).
CHECK_SHARE = 0.75
# A follower this many blocks behind the head degrades the chain (deposits credit late).
LAG_DEGRADED_BLOCKS = 20
_FOLLOWER_DOWN = frozenset({chain_resources.FOLLOWER_STATE_STALLED, chain_resources.FOLLOWER_STATE_STOPPED})


@dataclass
class ServiceCheck:
    """One service's health and, when it is not healthy, why."""

    health: admin.ServiceHealth
    core: bool
    reason: str = ""


@dataclass
class ChainCheck:
    health: admin.ChainHealth
    reason: str = ""


@dataclass
class Summary:
    """The overall condition and its one-line reasons."""

    state: admin.HealthState.ValueType = HEALTHY
    reasons: list[str] = field(default_factory=list)

    def worsen(self, state: admin.HealthState.ValueType, reason: str) -> None:
        if state == UNHEALTHY or (state == DEGRADED and self.state == HEALTHY):
            self.state = state
        self.reasons.append(reason)


class HealthReads:
    """Health checks of the catalog's services and the chain gateway's chains."""

    def __init__(self, channel_to: Callable[[str], grpc.aio.Channel], catalog: Catalog, profile: str) -> None:
        self._channel_to = channel_to
        self._catalog = catalog
        self.profile = profile
        self._deployed = {entry.name for entry in catalog.profile(profile)}
        self._core = {entry.name for entry in catalog.profile(profile, with_optional=False)}
        self._callable = set(catalog.service(SELF).calls)

    async def services(self, deadline_s: float) -> list[ServiceCheck]:
        """Every service of the catalog, in catalog order."""
        check_s = deadline_s * CHECK_SHARE
        return list(
            await asyncio.gather(
                *(self._service(check_s, entry) for entry in self._catalog.services.values())
            )
        )

    async def _service(self, deadline_s: float, entry: ServiceEntry) -> ServiceCheck:
        health = admin.ServiceHealth(service=entry.name)
        core = entry.name in self._core
        if entry.name not in self._deployed:
            health.state = DISABLED
            return ServiceCheck(health, core)
        health.total_instances = 1
        if entry.name == SELF:
            health.state, health.ready_instances = HEALTHY, 1
            return ServiceCheck(health, core)
        if entry.name not in self._callable:
            # The mesh lets admin-bff call only its catalog edges: not checked from here.
            health.state = admin.HEALTH_STATE_UNSPECIFIED
            health.total_instances = 0
            return ServiceCheck(health, core)
        stub = health_pb2_grpc.HealthStub(self._channel_to(entry.name))
        try:
            async with asyncio.timeout(deadline_s):
                answer = await stub.Check(
                    health_pb2.HealthCheckRequest(service=entry.grpc_service), timeout=deadline_s
                )
        except grpc.aio.AioRpcError as error:
            health.state = UNHEALTHY
            if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                why = f"did not answer its health check within {round(deadline_s * 1000)} ms"
            else:
                why = f"health check failed: {error.code().name}"
            return ServiceCheck(health, core, f"{entry.name} {why}")
        except TimeoutError:
            health.state = UNHEALTHY
            why = f"did not answer its health check within {round(deadline_s * 1000)} ms"
            return ServiceCheck(health, core, f"{entry.name} {why}")
        if answer.status != SERVING:
            health.state = UNHEALTHY
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            return ServiceCheck(health, core, f"{entry.name} is {status}")
        health.state, health.ready_instances = HEALTHY, 1
        return ServiceCheck(health, core)

    async def chains(self, deadline_s: float) -> list[ChainCheck]:
        """Every enabled chain with its follower's progress and its providers."""
        stub = chain_grpc.ChainGatewayServiceStub(self._channel_to("chain-gateway"))
        listed = await stub.ListChains(
            chain_service.ListChainsRequest(page_size=CHAINS_PAGE), timeout=deadline_s
        )
        return list(await asyncio.gather(*(self._chain(stub, deadline_s, chain) for chain in listed.chains)))

    async def _chain(
        self, stub: chain_grpc.ChainGatewayServiceAsyncStub, deadline_s: float, chain: chain_resources.Chain
    ) -> ChainCheck:
        follower, providers = await asyncio.gather(
            stub.GetFollowerStatus(
                chain_service.GetFollowerStatusRequest(chain=chain.chain), timeout=deadline_s
            ),
            stub.ListProviders(
                chain_service.ListProvidersRequest(chain=chain.chain, page_size=CHAINS_PAGE),
                timeout=deadline_s,
            ),
        )
        status = follower.status
        healthy = [p for p in providers.providers if p.health == chain_resources.PROVIDER_HEALTH_HEALTHY]
        in_rotation = sorted((p for p in providers.providers if p.in_rotation), key=lambda p: p.priority)
        health = admin.ChainHealth(
            chain=chain.chain,
            chain_id=chain.chain_id,
            head_block=status.head_block_number,
            processed_block=status.last_block_number,
            lag_blocks=status.lag_blocks,
            active_provider=(
                chain_resources.ProviderRole.Name(in_rotation[0].role).removeprefix("PROVIDER_ROLE_").lower()
                if in_rotation
                else ""
            ),
            healthy_providers=len(healthy),
            total_providers=len(providers.providers),
        )
        follower_state = chain_resources.FollowerState.Name(status.state).removeprefix("FOLLOWER_STATE_")
        if status.state in _FOLLOWER_DOWN or not healthy:
            health.state = UNHEALTHY
            why = f"follower {follower_state}" if status.state in _FOLLOWER_DOWN else "no healthy provider"
            return ChainCheck(health, f"chain {chain.chain}: {why}")
        if status.lag_blocks >= LAG_DEGRADED_BLOCKS or len(healthy) < len(providers.providers):
            health.state = DEGRADED
            return ChainCheck(
                health,
                f"chain {chain.chain}: {status.lag_blocks} blocks behind, "
                f"{len(healthy)} of {len(providers.providers)} providers healthy",
            )
        health.state = HEALTHY
        return ChainCheck(health)


def summary(services: list[ServiceCheck] | None, chains: list[ChainCheck] | None) -> Summary:
    """The overall condition: UNHEALTHY when a core service or a chain is down, DEGRADED when an
    optional service is down, a chain lags, or a source of health could not be read."""
    found = Summary()
    if services is None:
        found.worsen(DEGRADED, "the service health checks could not be run")
    for check in services or []:
        if check.health.state == UNHEALTHY:
            found.worsen(UNHEALTHY if check.core else DEGRADED, check.reason)
    if chains is None:
        found.worsen(DEGRADED, "the chain gateway's status could not be read")
    for chain in chains or []:
        if chain.health.state in (UNHEALTHY, DEGRADED):
            found.worsen(chain.health.state, chain.reason)
    return found
