"""The route table, built from the descriptor set: every HTTP binding of every annotated RPC.

Like grpc-gateway's runtime/mux.go, but with no generated registration code: each (HTTP method,
path template) of a `google.api.http` rule or its additional_bindings is one route. Two bindings
with the same method and URL shape are refused when the table is built (the contracts promise
each pair is unique). A path that matches several templates goes to the most specific one:
literal segments before `*`, `*` before `**`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gateway.descriptors import Rpc
from gateway.pattern import PathPattern
from tools.gen.http_rules import HttpBinding


class RouteConflict(ValueError):
    """Two bindings claim the same HTTP method and URL shape."""


@dataclass(frozen=True)
class Route:
    """One HTTP binding of an RPC."""

    rpc: Rpc
    binding: HttpBinding
    pattern: PathPattern

    @property
    def http_method(self) -> str:
        return self.binding.method

    @property
    def template(self) -> str:
        return str(self.binding.template)

    def key(self) -> tuple[str, str, str]:
        """(HTTP method, path template, gRPC method path): what a route is, for comparisons."""
        return (self.http_method, self.template, self.rpc.grpc_path)


@dataclass(frozen=True)
class Match:
    route: Route
    variables: dict[tuple[str, ...], str]


class Router:
    """Routes requests to RPCs; `match` finds the route of (method, path)."""

    def __init__(self, rpcs: Iterable[Rpc]) -> None:
        self.routes: list[Route] = []
        owners: dict[tuple[str, str], Route] = {}
        for rpc in rpcs:
            for binding in rpc.bindings:
                route = Route(rpc=rpc, binding=binding, pattern=PathPattern(binding.template))
                shape = (binding.method, binding.template.pattern)
                if shape in owners:
                    other = owners[shape]
                    raise RouteConflict(
                        f"{binding.method} {binding.template} of {rpc.full_name} and "
                        f"{other.template} of {other.rpc.full_name} match the same requests"
                    )
                owners[shape] = route
                self.routes.append(route)
        # Exact-length buckets for templates without `**`, a list for those with it, per method.
        self._fixed: dict[tuple[str, int, str], list[Route]] = defaultdict(list)
        self._rest: dict[str, list[Route]] = defaultdict(list)
        for route in self.routes:
            if route.pattern.has_rest:
                self._rest[route.http_method].append(route)
            else:
                self._fixed[(route.http_method, route.pattern.length, route.pattern.verb)].append(route)
        for bucket in (*self._fixed.values(), *self._rest.values()):
            bucket.sort(key=lambda route: route.pattern.specificity)

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)

    def match(self, method: str, path: str) -> Match | None:
        """The route of a request and its path variables, or None."""
        for route in self._candidates(method, path):
            variables = route.pattern.match(path)
            if variables is not None:
                return Match(route, variables)
        return None

    def allowed_methods(self, path: str) -> list[str]:
        """The HTTP methods some route serves at `path` (for 405 and CORS preflight)."""
        methods = {route.http_method for route in self.routes}
        return sorted(method for method in methods if self.match(method, path) is not None)

    def _candidates(self, method: str, path: str) -> Iterator[Route]:
        last = path.rsplit("/", 1)[-1]
        length = path.count("/")
        # A verb template first: `/v1/x/{id}:approve` must win over `/v1/x/{id}` for `.../a:approve`.
        if ":" in last:
            yield from self._fixed.get((method, length, last.rsplit(":", 1)[1]), ())
        yield from self._fixed.get((method, length, ""), ())
        yield from self._rest.get(method, ())
