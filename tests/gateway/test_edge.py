"""What surrounds every request: the OpenAPI document and docs page, CORS, request ids, access
logs carrying the client's trace id, and `python -m gateway` as a process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from gateway.descriptors import OPENAPI_DOCUMENT
from svc.kit.telemetry import JsonFormatter, configure_tracing
from tests.gateway.conftest import ROOT, Edge, Mesh, free_port, gateway_settings, serve_gateway

ORIGIN = "https://app.finmesh.example"


async def test_openapi_document_and_docs_page(edge: Edge) -> None:
    document = await edge.http.get("/openapi.json")
    assert document.status_code == 200
    assert document.content == OPENAPI_DOCUMENT.read_bytes()
    assert "/v1/accounts/{account_id}" in document.json()["paths"]
    page = await edge.http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'fetch("/openapi.json")' in page.text
    assert "<script src=" not in page.text  # self-contained: no CDN


@pytest.fixture(scope="module")
async def cors_edge(mesh: Mesh) -> AsyncIterator[Edge]:
    async with serve_gateway(gateway_settings(mesh, cors_origins=(ORIGIN,))) as running:
        yield running


async def test_cors_for_the_web_front_end(cors_edge: Edge, bearer: Callable[..., dict[str, str]]) -> None:
    preflight = await cors_edge.http.options(
        "/v1/users/me/accounts",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    refused = await cors_edge.http.options(
        "/v1/users/me/accounts",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in refused.headers
    simple = await cors_edge.http.get("/v1/users/me/accounts", headers={"Origin": ORIGIN, **bearer("u-1")})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


async def test_request_ids_and_access_log_with_the_trace_id(
    edge: Edge, bearer: Callable[..., dict[str, str]]
) -> None:
    configure_tracing("gateway")
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter("gateway"))
    access = logging.getLogger("finmesh.gateway.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    served = logging.getLogger("finmesh.rpc")  # the services' own log of the calls they serve
    served.addHandler(handler)
    served_level = served.level
    served.setLevel(logging.INFO)
    trace_id = uuid.uuid4().hex
    try:
        mine = await edge.http.get(
            "/v1/users/me/accounts",
            headers={
                **bearer("u-1"),
                "X-Request-Id": "client-req-0001",
                "traceparent": f"00-{trace_id}-{'1' * 16}-01",
            },
        )
        generated = await edge.http.get(
            "/v1/users/me/accounts", headers={**bearer("u-1"), "X-Request-Id": "bad id!"}
        )
    finally:
        access.removeHandler(handler)
        served.removeHandler(handler)
        served.setLevel(served_level)
    assert mine.headers["x-request-id"] == "client-req-0001"
    assert generated.headers["x-request-id"].startswith("gw-")
    entries = [json.loads(line) for line in lines]
    first = next(entry for entry in entries if entry.get("request_id") == "client-req-0001")
    # The account service logged the call in the client's trace: the edge carried it.
    assert [
        entry["trace_id"]
        for entry in entries
        if entry.get("method") == "/finmesh.account.v1.AccountService/ListAccounts"
        and entry.get("trace_id") == trace_id
    ], entries
    assert first["trace_id"] == trace_id
    assert first["status"] == 200
    assert first["rpc"] == "finmesh.account.v1.AccountService.ListAccounts"
    assert first["user"] == "u-1"
    assert first["client_ip"] == "127.0.0.1"


async def test_python_m_gateway_serves_and_stops_on_sigterm(mesh: Mesh, tmp_path: Path) -> None:
    port = free_port()
    environment = {
        **os.environ,
        "FINMESH_PORT": str(port),
        "FINMESH_TLS": "false",
        "FINMESH_ENDPOINTS": json.dumps(mesh.endpoints),
        "PYTHONPATH": str(ROOT),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", cwd=tmp_path, env=environment, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            # Up to 90 s: the start-up is mostly imports, far slower on a loaded shared machine.
            for _ in range(900):
                try:
                    health = await http.get("/healthz")
                    break
                except httpx.TransportError:
                    assert process.returncode is None, "the gateway exited during start-up"
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the gateway did not start in 90 s")
            assert health.json()["status"] == "SERVING"
            jwks = await http.get("/v1/auth/jwks")
            assert jwks.status_code == 200, jwks.text
    finally:
        process.send_signal(signal.SIGTERM)
        _, raw = await asyncio.wait_for(process.communicate(), timeout=20)
    errors = raw.decode()
    assert process.returncode == 0, errors
    access = [json.loads(line) for line in errors.splitlines() if line.startswith("{") and '"http"' in line]
    assert any(entry.get("path") == "/v1/auth/jwks" and entry["status"] == 200 for entry in access), errors[
        -2000:
    ]
