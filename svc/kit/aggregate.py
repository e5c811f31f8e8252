"""Aggregated reads for the BFFs: sections fetched from downstream services in parallel, each under
its own deadline, and degraded one by one.

A BFF method names its sections and, for each, a coroutine reading the downstream services it
needs. `Aggregation.run` starts them all at once; each gets the downstream deadline (the incoming
call's remaining time minus a margin, at most the BFF's cap), passed as the `timeout` of every call
it makes and enforced around the whole section. A section whose downstream fails, stalls, is not
deployed or does not serve the method yet is left empty and recorded with its state and a short
reason; the others are served. A required section (the caller's identity) fails the whole call
with the peer's error instead. The section and state numbers are those of the BFF contracts, which
share the SectionState numbering (OK 1, STALE 2, UNAVAILABLE 3, DISABLED 4, FORBIDDEN 5).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import grpc
from google.protobuf import timestamp_pb2

from svc.kit import errors, remote
from svc.kit.catalog import Catalog, CatalogError
from svc.kit.client import DeadlineExpired
from svc.kit.context import call

T = TypeVar("T")
# Time kept for the BFF itself to assemble and send its answer after the downstream deadline.
ASSEMBLY_MARGIN_S = 0.05
# A downstream that leaves less than this is not called: the section is reported at once.
MINIMUM_DOWNSTREAM_S = 0.005


class SectionState(enum.IntEnum):
    """How a section was served (the numbering every BFF contract's SectionState uses)."""

    OK = 1
    STALE = 2
    UNAVAILABLE = 3
    DISABLED = 4
    FORBIDDEN = 5


@dataclass(frozen=True)
class SectionOutcome:
    """How one section of a response was served, and why when it is missing."""

    section: int
    state: SectionState
    message: str = ""
    as_of_us: int = 0


SectionRead = Callable[[float], Awaitable[T]]


@dataclass
class Section(Generic[T]):
    """One section to fetch: its contract number, the services it reads and how."""

    section: int
    services: tuple[str, ...]
    read: SectionRead[T]
    required: bool = False


class StatusMessage(Protocol):
    """A BFF contract's SectionStatus message."""

    def __init__(self, **fields: Any) -> None: ...


@dataclass
class Results:
    """What `Aggregation.run` gathered: values of the sections served, outcomes of all."""

    values: dict[int, Any] = field(default_factory=dict)
    outcomes: list[SectionOutcome] = field(default_factory=list)

    def get(self, section: int) -> Any:
        """The value of a served section, or None when it is missing."""
        return self.values.get(section)

    def add(self, outcome: SectionOutcome) -> None:
        self.outcomes.append(outcome)

    def statuses(self, message_type: Callable[..., T]) -> list[T]:
        """The outcomes as the contract's SectionStatus messages, in section order."""
        rendered = []
        for outcome in sorted(self.outcomes, key=lambda item: item.section):
            fields: dict[str, Any] = {
                "section": outcome.section,
                "state": int(outcome.state),
                "message": outcome.message,
            }
            if outcome.as_of_us:
                stamp = timestamp_pb2.Timestamp()
                stamp.FromMicroseconds(outcome.as_of_us)
                fields["as_of_time"] = stamp
            rendered.append(message_type(**fields))
        return rendered


class Aggregation:
    """Runs the sections of one BFF method in parallel under per-downstream deadlines."""

    def __init__(
        self,
        *,
        cap_s: float,
        deployed: Callable[[str], bool] = lambda _service: True,
        forbidden_state: bool = False,
    ) -> None:
        self.cap_s = cap_s
        self._deployed = deployed
        self._forbidden_state = forbidden_state

    def downstream_timeout(self) -> float:
        """Seconds each downstream call may take: the caller's remaining time minus the margin,
        at most the cap."""
        served = call()
        remaining = served.time_remaining() if served is not None else None
        if remaining is None:
            return self.cap_s
        return min(self.cap_s, remaining - ASSEMBLY_MARGIN_S)

    async def run(self, sections: Iterable[Section[Any]]) -> Results:
        """Fetches every section at once; raises the error of a required section that failed."""
        results = Results()
        deadline_s = self.downstream_timeout()
        planned = []
        for section in sections:
            disabled = None if section.required else self.undeployed(section.section, section.services)
            if disabled is not None:
                results.add(disabled)
                continue
            planned.append(section)
        fetched = await asyncio.gather(*(self._fetch(section, deadline_s) for section in planned))
        for section, (value, outcome) in zip(planned, fetched, strict=True):
            results.add(outcome)
            if outcome.state is SectionState.OK:
                results.values[section.section] = value
        return results

    def undeployed(self, section: int, services: Iterable[str]) -> SectionOutcome | None:
        """The DISABLED outcome of a section reading services outside the deployment, else None."""
        absent = [service for service in services if not self._deployed(service)]
        if not absent:
            return None
        return SectionOutcome(
            section, SectionState.DISABLED, f"{', '.join(absent)} not part of this deployment"
        )

    async def _fetch(self, section: Section[Any], deadline_s: float) -> tuple[Any, SectionOutcome]:
        peer = "/".join(section.services)
        try:
            if deadline_s < MINIMUM_DOWNSTREAM_S:
                raise DeadlineExpired("no time left for the downstream calls")
            async with asyncio.timeout(deadline_s):
                value = await section.read(deadline_s)
        except grpc.aio.AioRpcError as error:
            if section.required:
                raise remote.translate(error, peer) from None
            return None, SectionOutcome(section.section, *self._refusal(error, peer, deadline_s))
        except (TimeoutError, DeadlineExpired):
            if section.required:
                raise errors.DependencyUnavailable(
                    f"{peer} did not answer within {round(deadline_s * 1000)} ms", metadata={"service": peer}
                ) from None
            message = f"{peer} did not answer within {round(deadline_s * 1000)} ms"
            return None, SectionOutcome(section.section, SectionState.UNAVAILABLE, message)
        except CatalogError as refused:
            # The BFF's catalog entry does not allow the call: a deployment decision, not a fault.
            if section.required:
                raise
            return None, SectionOutcome(section.section, SectionState.DISABLED, str(refused))
        return value, SectionOutcome(section.section, SectionState.OK, as_of_us=time.time_ns() // 1000)

    def _refusal(self, error: grpc.aio.AioRpcError, peer: str, deadline_s: float) -> tuple[SectionState, str]:
        code = error.code()
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return SectionState.DISABLED, f"{peer} does not serve this yet"
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return SectionState.UNAVAILABLE, f"{peer} did not answer within {round(deadline_s * 1000)} ms"
        if code is grpc.StatusCode.UNAVAILABLE:
            return SectionState.UNAVAILABLE, f"{peer} is unavailable"
        if code is grpc.StatusCode.PERMISSION_DENIED and self._forbidden_state:
            return SectionState.FORBIDDEN, f"{peer}: {error.details()}"
        reason = remote.error_info(error).reason or code.name
        return SectionState.UNAVAILABLE, f"{peer} refused: {reason}"


def profile_deployment(catalog: Catalog, profile: str) -> Callable[[str], bool]:
    """Whether a service is deployed by a product profile of the catalog."""
    deployed = {entry.name for entry in catalog.profile(profile)}
    return lambda service: service in deployed
