"""Observability and configuration through a served probe: JSON logs, metrics port, traces, env errors."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.request
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from svc.kit.config import ConfigError, KitSettings, load_settings
from svc.kit.telemetry import JsonFormatter, configure_tracing
from tests.harness.process import free_port
from tests.kit.conftest import StartProbe, client_channel


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    configure_tracing("kit-tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def server_span(exporter: InMemorySpanExporter, method: str) -> Any:
    matching = [
        span
        for span in exporter.get_finished_spans()
        if span.kind == trace.SpanKind.SERVER and span.name.endswith(method)
    ]
    assert matching, f"no server span for {method}: {[span.name for span in exporter.get_finished_spans()]}"
    return matching[-1]


async def test_access_log_is_json_with_the_trace_id_of_the_server_span(
    start_probe: StartProbe, probe: Any, spans: InMemorySpanExporter
) -> None:
    messages, stubs = probe
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("probe-b"))
    access_log = logging.getLogger("finmesh.rpc")
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    try:
        app = await start_probe("probe-b")
        async with client_channel(app, "gateway") as channel:
            await stubs.ProbeServiceStub(channel).Echo(messages.EchoRequest(text="logged"))
    finally:
        access_log.removeHandler(handler)
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    entry = next(item for item in entries if item.get("method", "").endswith("/Echo"))
    assert entry["service"] == "probe-b" and entry["code"] == "OK" and entry["caller"] == "gateway"
    assert entry["trace_id"] == format(server_span(spans, "/Echo").context.trace_id, "032x")


async def test_trace_context_crosses_grpc_calls_between_services(
    start_probe: StartProbe, probe: Any, spans: InMemorySpanExporter
) -> None:
    messages, stubs = probe
    downstream = await start_probe("probe-b")
    upstream = await start_probe("probe-a", endpoints={"probe-b": f"127.0.0.1:{downstream.port}"})
    async with client_channel(upstream, "gateway") as channel:
        await stubs.ProbeServiceStub(channel).Relay(messages.RelayRequest(target="probe-b"))
    relay = server_span(spans, "/Relay")
    echo = server_span(spans, "/Echo")
    assert echo.context.trace_id == relay.context.trace_id
    client_spans = {
        span.context.span_id: span
        for span in spans.get_finished_spans()
        if span.kind == trace.SpanKind.CLIENT
    }
    assert echo.parent is not None and echo.parent.span_id in client_spans
    assert client_spans[echo.parent.span_id].parent.span_id == relay.context.span_id


async def test_rpc_metrics_are_served_on_the_metrics_port(start_probe: StartProbe, probe: Any) -> None:
    messages, stubs = probe
    metrics_port = free_port()
    app = await start_probe("probe-b", metrics_port=metrics_port)
    async with client_channel(app, "gateway") as channel:
        stub = stubs.ProbeServiceStub(channel)
        await stub.Echo(messages.EchoRequest(text="counted"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Echo(messages.EchoRequest(text=""))
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    method = "/finmesh.kitprobe.v1.ProbeService/Echo"
    assert f'finmesh_rpc_requests_total{{code="OK",method="{method}",service="probe-b"}} 1.0' in body
    assert (
        f'finmesh_rpc_requests_total{{code="INVALID_ARGUMENT",method="{method}",service="probe-b"}} 1.0'
        in body
    )
    assert f'finmesh_rpc_duration_seconds_count{{method="{method}",service="probe-b"}} 2.0' in body


def test_bad_configuration_names_every_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINMESH_PORT", "not-a-port")
    monkeypatch.setenv("FINMESH_BUS", "carrier-pigeon")
    monkeypatch.setenv("FINMESH_ENDPOINTS", '{"ledger": "127.0.0.1:50501"}')
    with pytest.raises(ConfigError) as raised:
        load_settings(KitSettings)
    message = str(raised.value)
    assert "FINMESH_PORT" in message and "not-a-port" in message
    assert "FINMESH_BUS" in message and "carrier-pigeon" in message
    monkeypatch.delenv("FINMESH_PORT")
    monkeypatch.delenv("FINMESH_BUS")
    assert load_settings(KitSettings).endpoints == {"ledger": "127.0.0.1:50501"}
