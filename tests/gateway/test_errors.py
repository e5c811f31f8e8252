"""gRPC status -> HTTP status with a google.rpc.Status JSON body, for every code, and through real
HTTP for the errors the real services and the gateway itself produce."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from gateway import errors
from gateway.config import RoutePolicy
from gateway.descriptors import Contracts
from svc.kit import errors as kit_errors
from tests.gateway.conftest import Edge, Mesh, free_port, gateway_settings, serve_gateway, stalled_upstream

OPERATOR = ("operator",)
EXPECTED_HTTP = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}


def test_every_grpc_code_has_its_http_status() -> None:
    assert {code.name: errors.http_status(code) for code in grpc.StatusCode} == EXPECTED_HTTP


def test_error_body_is_the_status_with_typed_details() -> None:
    contracts = Contracts.load()
    status = status_pb2.Status(code=9, message="insufficient funds")
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason="INSUFFICIENT_FUNDS", domain="account.finmesh.io")
    )
    errors.retry_info(status, 2.5)
    import json

    body = json.loads(errors.body(status, contracts.pool))
    assert body == {
        "code": 9,
        "message": "insufficient funds",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "INSUFFICIENT_FUNDS",
                "domain": "account.finmesh.io",
                "metadata": {},
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.500s"},
        ],
    }


def _reason(body: dict[str, object]) -> str:
    details = body["details"]
    assert isinstance(details, list)
    return str(next(d["reason"] for d in details if d["@type"].endswith("ErrorInfo")))


async def test_service_errors_keep_their_details(edge: Edge, bearer: Callable[..., dict[str, str]]) -> None:
    headers = bearer("ops-1", roles=OPERATOR)
    missing = await edge.http.get(f"/v1/admin/ledger/accounts/{uuid.uuid4()}", headers=headers)
    assert missing.status_code == 404, missing.text
    assert missing.json()["code"] == 5
    assert _reason(missing.json()) == "NOT_FOUND"
    assert "ledger.finmesh.io" in missing.text
    invalid = await edge.http.get("/v1/accounts/not-a-uuid", headers=headers)
    assert invalid.status_code == 400, invalid.text
    bad_request = next(d for d in invalid.json()["details"] if d["@type"].endswith("BadRequest"))
    assert bad_request["fieldViolations"][0]["field"] == "account_id"


async def test_gateway_errors(edge: Edge, bearer: Callable[..., dict[str, str]]) -> None:
    headers = bearer("ops-1", roles=OPERATOR)
    unknown = await edge.http.get("/v1/nothing/here", headers=headers)
    assert unknown.status_code == 404
    assert _reason(unknown.json()) == "NOT_FOUND"
    wrong_method = await edge.http.delete("/v1/accounts/abc", headers=headers)
    assert wrong_method.status_code == 405, wrong_method.text
    assert "allowed: GET" in wrong_method.text
    not_json = await edge.http.patch(
        "/v1/auth/api_keys/ak_x", content=b"{nope", headers={**headers, "content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert "not valid JSON" in not_json.text
    huge = await edge.http.post("/v1/auth/api_keys", content=b"x" * (2 << 20), headers=headers)
    assert huge.status_code == 413
    long_url = await edge.http.get("/v1/accounts/" + "a" * 3000, headers=headers)
    assert long_url.status_code == 414
    bad_timeout = await edge.http.get(
        f"/v1/accounts/{uuid.uuid4()}", headers={**headers, "grpc-timeout": "soon"}
    )
    assert bad_timeout.status_code == 400
    assert "grpc-timeout" in bad_timeout.text


async def test_every_path_is_routed_by_the_gateway(edge: Edge, bearer: Callable[..., dict[str, str]]) -> None:
    """Found by the fuzzer: a variable holding a newline (%0A) reaches the RPC like any other
    value, and nothing at the edge answers in anything but JSON."""
    headers = bearer("ops-1", roles=OPERATOR)
    newline = await edge.http.get("/v1/accounts/a%0Ab", headers=headers)
    assert newline.status_code == 400, newline.text
    assert newline.headers["content-type"].startswith("application/json")
    assert "account.finmesh.io" in newline.text  # the account service refused its id, not the router
    unrouted = await edge.http.get("/v1/nothing%0Ahere", headers=headers)
    assert unrouted.status_code == 404
    assert _reason(unrouted.json()) == "NOT_FOUND"
    page = await edge.http.post("/openapi.json")
    assert page.status_code == 405
    assert page.headers["content-type"].startswith("application/json")
    assert "only GET" in page.json()["message"]


async def test_deadlines_from_the_client_and_the_route_reach_the_call(
    mesh: Mesh, bearer: Callable[..., dict[str, str]]
) -> None:
    async with stalled_upstream() as address:
        settings = gateway_settings(
            mesh,
            routes={"finmesh.lending.v1.LendingService.ListLoans": RoutePolicy(timeout_s=0.4)},
        ).model_copy(update={"endpoints": {**mesh.endpoints, "lending": address}})
        async with serve_gateway(settings) as edge:
            for header, expected_s in (({"grpc-timeout": "150m"}, 0.15), ({}, 0.4)):
                started = time.monotonic()
                response = await edge.http.get("/v1/loans", headers={**bearer("u-1"), **header})
                elapsed = time.monotonic() - started
                assert response.status_code == 504, response.text
                assert response.json()["code"] == 4
                assert expected_s <= elapsed < expected_s + 1.0, (header, elapsed)


def test_retry_info_of_a_service_becomes_retry_after() -> None:
    # A service's DependencyUnavailable carries a RetryInfo; the edge turns it into Retry-After.
    status = kit_errors.to_status(
        kit_errors.DependencyUnavailable("notification did not answer"), service="user"
    )
    assert errors.retry_after(status) == {"retry-after": "1"}
    slower = status_pb2.Status(code=14, message="busy")
    errors.retry_info(slower, 2.5)
    assert errors.retry_after(slower) == {"retry-after": "3"}
    assert errors.retry_after(status_pb2.Status(code=14, message="no hint")) == {}


async def test_an_unreachable_upstream_is_503(mesh: Mesh, bearer: Callable[..., dict[str, str]]) -> None:
    endpoints = {**mesh.endpoints, "lending": f"127.0.0.1:{free_port()}"}
    async with serve_gateway(gateway_settings(mesh).model_copy(update={"endpoints": endpoints})) as edge:
        response = await edge.http.get("/v1/loans", headers=bearer("u-1"))
    assert response.status_code == 503, response.text
    assert response.json()["code"] == 14


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "needs a bearer access token"),
        ("Basic dTpw", "must be 'Bearer <access token>'"),
        ("Bearer not.a.jwt", "invalid access token"),
    ],
)
async def test_unauthenticated(edge: Edge, authorization: str | None, message: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await edge.http.get(f"/v1/accounts/{uuid.uuid4()}", headers=headers)
    assert response.status_code == 401, response.text
    assert message in response.json()["message"]
    assert _reason(response.json()) == "UNAUTHENTICATED"


async def test_an_unexpected_failure_is_an_opaque_500(
    edge: Edge, bearer: Callable[..., dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("gateway.transcode.request_message", broken)
    response = await edge.http.get(f"/v1/accounts/{uuid.uuid4()}", headers=bearer("u-1"))
    assert response.status_code == 500
    assert response.json() == {"code": 13, "message": "internal error", "details": []}
    assert "secret" not in response.text
