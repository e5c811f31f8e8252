"""Property-based fuzzing of the edge: schemathesis generates requests (valid and invalid) from the
OpenAPI document the gateway serves, for every route of the services running behind it (auth,
user, ledger, account), sent over real HTTP with real access tokens so that authenticated routes
are exercised past authentication. No response may be a 5xx other than the documented 503 of an
open breaker (or of a dependency this mesh does not run), and every response must match the
document (status, content type, headers, body). Requests that break the document's rules (the
contracts' protovalidate rules) must be refused.

Bounded: ten examples per operation (64 operations, about two minutes on a quiet machine), a
deadline per example and a timeout per operation. The tests run schemathesis through Hypothesis
directly (`APIOperation.as_strategy`), not through its pytest plugin, which sets
`Node._nodeid`, an attribute the lock's pytest 9.2 no longer has. Schemathesis drives
synchronous `requests` calls, so the mesh and the gateway run on an event loop of their own in a
background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import uuid
from collections.abc import Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, CheckContext, GenerationMode, Response
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import HTTP_METHODS
from gateway.config import GatewaySettings
from tests.gateway.conftest import Edge, Mesh, gateway_settings, serve_gateway, start_mesh
from tests.harness.identity import ADMIN_EMAIL, ADMIN_REGISTRATION, PASSWORD

# Tags of the OpenAPI document (one per gRPC service) whose services run behind the gateway here.
FUZZED = ("AuthService", "UserService", "LedgerService", "AccountService")
EXAMPLES_PER_OPERATION = 10
EXAMPLE_DEADLINE = timedelta(seconds=10)
OPERATION_TIMEOUT_S = 60
# The only 5xx the edge may answer: its breaker for the upstream is open (core and non-core routes).
BREAKER_REASONS = ("DEPENDENCY_UNAVAILABLE", "FEATURE_DISABLED")
# Services the fuzzed ones call that this mesh does not run: a request valid enough to reach such
# a call (the document's rules make most generated requests valid) is answered 503 by the
# calling service, DEPENDENCY_UNAVAILABLE naming the dependency, as it would be in production.
ABSENT_DEPENDENCIES = ("notification",)
# Statuses that refuse negative data: schemathesis's own list, and 414, with which the edge refuses
# a URL over GatewaySettings.max_url_bytes (2048) before any service sees it (a query value too
# long for its max_len makes one).
REJECTED_STATUSES = [
    "400", "401", "403", "404", "405", "406", "409", "414", "415", "422", "428", "429", "5xx",
]  # fmt: skip

T = TypeVar("T")


class BackgroundLoop:
    """An event loop in a daemon thread, for servers that synchronous callers talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzzed-mesh", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Callers:
    """Bearer headers of real users: the bootstrap admin for /v1/admin routes, else a user of
    each operation's own (registered and logged in through the gateway on first use), so that an
    operation that ends its caller's sessions (logout, revoke others) leaves the others' alone."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._session = requests.Session()
        self._by_operation: dict[str, dict[str, str]] = {}
        self.admin = self._signed_in(ADMIN_EMAIL, ADMIN_REGISTRATION)

    def headers(self, case: Case) -> dict[str, str]:
        if case.operation.path.startswith("/v1/admin/"):
            return self.admin
        label = case.operation.label
        if label not in self._by_operation:
            self._by_operation[label] = self._signed_in(f"u{uuid.uuid4().hex[:12]}@example.com")
        return self._by_operation[label]

    def _signed_in(self, email: str, registration: str = "") -> dict[str, str]:
        registered = self._session.post(
            f"{self.url}/v1/users",
            json={
                "requestId": registration or f"register-{uuid.uuid4().hex}",
                "email": email,
                "password": PASSWORD,
                "acceptedTermsVersion": "2024-06",
            },
            timeout=30,
        )
        assert registered.status_code == 200, registered.text
        login = self._session.post(
            f"{self.url}/v1/auth/login",
            json={"requestId": f"login-{uuid.uuid4().hex}", "email": email, "password": PASSWORD},
            timeout=30,
        )
        assert login.status_code == 200, login.text
        return {"Authorization": f"Bearer {login.json()['tokens']['accessToken']}"}


class Fuzzed:
    def __init__(self, mesh: Mesh, edge: Edge) -> None:
        self.mesh = mesh
        self.edge = edge
        self.callers = Callers(edge.url)
        self.session = requests.Session()
        self.statuses: dict[str, list[int]] = {}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    background = BackgroundLoop()
    directory: Path = tmp_path_factory.mktemp("fuzzed")
    mesh = background.run(start_mesh(directory))
    # Limits far above the run's rate: a 429 would only hide the route behind it.
    serving = serve_gateway(
        gateway_settings(mesh, user_rate_per_s=1e6, user_burst=10**6, ip_rate_per_s=1e6, ip_burst=10**6)
    )
    try:
        edge = background.run(serving.__aenter__())
        try:
            yield Fuzzed(mesh, edge)
        finally:
            background.run(serving.__aexit__(None, None, None))
    finally:
        background.run(mesh.stop())
        background.close()


def undotted(path: str) -> str:
    """A path template whose variables name no nested field: schemathesis fills templates with
    str.format, which reads `{api_key.api_key_id}` (grpc-gateway's form of a field path) as an
    attribute. The URLs it builds are the same."""
    return VARIABLE.sub(lambda match: "{" + match.group(1).replace(".", "__") + "}", path)


VARIABLE = re.compile(r"\{([^}]+)\}")


@pytest.fixture(scope="module")
def served_document(fuzzed: Fuzzed) -> Any:
    """The OpenAPI document as the gateway serves it, path variables undotted."""
    response = fuzzed.session.get(f"{fuzzed.edge.url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    document = response.json()
    paths = {}
    for path, item in document["paths"].items():
        for operation in [item, *(item[method] for method in item if method.upper() in HTTP_METHODS)]:
            for parameter in operation.get("parameters", ()):
                if parameter.get("in") == "path":
                    parameter["name"] = parameter["name"].replace(".", "__")
        paths[undotted(path)] = item
    document["paths"] = paths
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REJECTED_STATUSES}}}
    )
    return schemathesis.openapi.from_dict(document, config=config)


@schemathesis.check
def no_server_error_but_an_open_breaker(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    if response.status_code < 500:
        return None
    details: list[dict[str, Any]] = []
    with contextlib.suppress(ValueError, KeyError, TypeError):
        details = list(json.loads(response.content)["details"])
    reasons = [detail.get("reason", "") for detail in details]
    absent = [
        detail
        for detail in details
        if detail.get("reason") == "DEPENDENCY_UNAVAILABLE"
        and detail.get("domain") != "gateway.finmesh.io"
        and detail.get("metadata", {}).get("service") in ABSENT_DEPENDENCIES
    ]
    if response.status_code == 503 and absent:
        assert "retry-after" in {name.lower() for name in response.headers}, (
            "503 of an absent dependency without Retry-After"
        )
        return True
    if response.status_code == 503 and any(reason in BREAKER_REASONS for reason in reasons):
        assert "retry-after" in {name.lower() for name in response.headers}, (
            "503 of a breaker without Retry-After"
        )
        return True
    raise AssertionError(f"{response.status_code} from the edge: {response.content[:500]!r}")


CHECKS = [
    no_server_error_but_an_open_breaker,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def fuzzed_operations() -> list[tuple[str, str]]:
    """(method, path) of every operation of the fuzzed services, from the document in gen/ that
    the gateway serves (collected before the gateway runs; the test loads the served copy)."""
    document = json.loads(GatewaySettings().openapi_document.read_text())
    return sorted(
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method.upper() in HTTP_METHODS and set(operation.get("tags", ())) & set(FUZZED)
    )


def cases(operation: APIOperation) -> st.SearchStrategy[Case]:
    """Valid and invalid requests; negative data only where the operation has some input to spoil."""
    modes = [GenerationMode.POSITIVE]
    if operation.body or any(True for _ in operation.iter_parameters()):
        modes.append(GenerationMode.NEGATIVE)
    return st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))


@pytest.mark.timeout(OPERATION_TIMEOUT_S, func_only=True)  # the mesh starting is not counted
@pytest.mark.parametrize(("method", "path"), fuzzed_operations(), ids=lambda value: str(value))
def test_the_edge_never_fails_and_answers_as_documented(
    method: str, path: str, fuzzed: Fuzzed, served_document: Any
) -> None:
    operation = served_document.find_operation_by_path(method.lower(), undotted(path))
    assert operation is not None, f"{method} {path} is not in the document the gateway serves"

    @hypothesis.given(case=cases(operation))
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=EXAMPLE_DEADLINE,
        suppress_health_check=list(hypothesis.HealthCheck),
        database=None,
        phases=(hypothesis.Phase.generate, hypothesis.Phase.shrink),
    )
    def answers_as_documented(case: Case) -> None:
        response = case.call_and_validate(
            base_url=fuzzed.edge.url,
            session=fuzzed.session,
            headers=fuzzed.callers.headers(case),
            checks=CHECKS,
            timeout=30,
        )
        fuzzed.statuses.setdefault(f"{method} {path}", []).append(response.status_code)

    answers_as_documented()


def test_the_run_got_past_authentication(fuzzed: Fuzzed) -> None:
    """The fuzzing above reached the services: most operations were answered by them at least
    once (with more than the edge's 401), so the tokens were real and accepted."""
    assert len(fuzzed.statuses) == len(fuzzed_operations())
    print({operation: sorted(set(codes)) for operation, codes in sorted(fuzzed.statuses.items())})
    only_refused = [operation for operation, codes in fuzzed.statuses.items() if set(codes) <= {401}]
    assert len(only_refused) <= len(fuzzed.statuses) // 10, only_refused
