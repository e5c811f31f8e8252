"""The kit through real gRPC calls: health, validation, errors, idempotency, deadlines, identity, shutdown."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from svc.kit.catalog import CatalogError
from svc.kit.db import Database
from svc.kit.interceptors import STATUS_DETAILS_KEY
from svc.kit.mtls import LocalCA
from tests.kit.conftest import StartProbe, client_channel


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no {STATUS_DETAILS_KEY} in {error!r}")


def detail(status: status_pb2.Status, kind: Any) -> Any:
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            message = kind()
            packed.Unpack(message)
            return message
    raise AssertionError(f"no {kind.DESCRIPTOR.full_name} in {status}")


async def test_health_reports_serving_then_not_serving_while_draining(start_probe: StartProbe) -> None:
    app = await start_probe("probe-b")
    async with client_channel(app, "gateway") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        check = await stub.Check(health_pb2.HealthCheckRequest(service="finmesh.kitprobe.v1.ProbeService"))
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(app.stop(1.0))
        second = await asyncio.wait_for(watch.read(), timeout=5)
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await stopping


async def test_validation_lists_every_violated_field(start_probe: StartProbe, probe: Any) -> None:
    messages, stubs = probe
    app = await start_probe("probe-b")
    async with client_channel(app, "gateway") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stubs.ProbeServiceStub(channel).Echo(
                messages.EchoRequest(text="far too long text", address="0x123", count=9)
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_request = detail(rich_status(raised.value), error_details_pb2.BadRequest)
    assert sorted(v.field for v in bad_request.field_violations) == ["address", "count", "text"]
    assert all(v.description for v in bad_request.field_violations)


async def test_domain_errors_map_to_status_with_error_info(start_probe: StartProbe, probe: Any) -> None:
    messages, stubs = probe
    app = await start_probe("probe-b")
    async with client_channel(app, "gateway") as channel:
        stub = stubs.ProbeServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Fail(messages.FailRequest(request_id="req-00001", kind="insufficient_funds"))
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = detail(rich_status(raised.value), error_details_pb2.ErrorInfo)
        assert (info.reason, info.domain, dict(info.metadata)) == (
            "INSUFFICIENT_FUNDS",
            "probe-b.finmesh.io",
            {"account": "acc-1"},
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Fail(messages.FailRequest(request_id="req-00002", kind="not_found"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Fail(messages.FailRequest(request_id="req-00003", kind="crash"))
        assert raised.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in (raised.value.details() or "")
        assert "Traceback" not in str(raised.value)


async def test_idempotent_replay_and_key_reuse(
    start_probe: StartProbe, probe: Any, database: Database
) -> None:
    messages, stubs = probe
    app = await start_probe("probe-b", database=database)
    async with client_channel(app, "gateway") as channel:
        stub = stubs.ProbeServiceStub(channel)
        first = await stub.Transfer(messages.TransferRequest(request_id="transfer-0001", amount="100"))
        again = await stub.Transfer(messages.TransferRequest(request_id="transfer-0001", amount="100"))
        assert again == first
        concurrent = await asyncio.gather(
            *[
                stub.Transfer(messages.TransferRequest(request_id="transfer-0002", amount="5"))
                for _ in range(8)
            ]
        )
        assert len({response.execution for response in concurrent}) == 1
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Transfer(messages.TransferRequest(request_id="transfer-0001", amount="101"))
        assert raised.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert (
            detail(rich_status(raised.value), error_details_pb2.ErrorInfo).reason == "IDEMPOTENCY_KEY_REUSED"
        )


async def test_deadline_propagates_to_downstream_calls(start_probe: StartProbe, probe: Any) -> None:
    messages, stubs = probe
    downstream = await start_probe("probe-b")
    upstream = await start_probe("probe-a", endpoints={"probe-b": f"127.0.0.1:{downstream.port}"})
    async with client_channel(upstream, "gateway") as channel:
        stub = stubs.ProbeServiceStub(channel)
        relayed = await stub.Relay(messages.RelayRequest(target="probe-b"), timeout=2.0)
        assert 0 < float(relayed.downstream.time_remaining) < 2.0
        assert relayed.downstream.caller == "probe-a"
        unbounded = await stub.Relay(messages.RelayRequest(target="probe-b"))
        assert unbounded.downstream.time_remaining == "-1"


async def test_a_service_reaches_only_the_services_the_catalog_lets_it_call(start_probe: StartProbe) -> None:
    app = await start_probe("probe-a")
    with pytest.raises(CatalogError, match="'probe-a' may not call 'outsider'"):
        app.channel_to("outsider")
    assert app.channel_to("probe-b") is app.channel_to("probe-b")


async def test_mtls_refuses_unknown_clients_and_disallowed_callers(
    start_probe: StartProbe, probe: Any, tmp_path: Any
) -> None:
    messages, stubs = probe
    app = await start_probe("probe-b")
    # A certificate from another CA fails the handshake.
    foreign = LocalCA(tmp_path / "foreign-pki").credentials("probe-a")
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{app.port}", foreign.channel(), options=[("grpc.ssl_target_name_override", "localhost")]
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stubs.ProbeServiceStub(channel).Echo(messages.EchoRequest(text="hi"), timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    # A plaintext client cannot talk to a TLS server at all.
    async with client_channel(app, None) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stubs.ProbeServiceStub(channel).Echo(messages.EchoRequest(text="hi"), timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    # A valid certificate whose identity the catalog does not allow is refused by policy.
    async with client_channel(app, "outsider") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stubs.ProbeServiceStub(channel).Echo(messages.EchoRequest(text="hi"), timeout=5)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with client_channel(app, "probe-a") as channel:
        response = await stubs.ProbeServiceStub(channel).Echo(messages.EchoRequest(text="hi"), timeout=5)
        assert response.caller == "probe-a"


async def test_graceful_shutdown_completes_in_flight_rpc(start_probe: StartProbe, probe: Any) -> None:
    messages, stubs = probe
    app = await start_probe("probe-b")
    async with client_channel(app, "gateway") as channel:
        stub = stubs.ProbeServiceStub(channel)
        in_flight = asyncio.ensure_future(stub.Sleep(messages.SleepRequest(millis=700), timeout=10))
        await asyncio.sleep(0.2)
        await app.stop(5.0)
        assert await in_flight == messages.SleepResponse()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Sleep(messages.SleepRequest(millis=1), timeout=2)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_end_user_from_verified_jwt(start_probe: StartProbe, probe: Any, tmp_path: Any) -> None:
    messages, stubs = probe
    key = ec.generate_private_key(ec.SECP256R1())
    keys_file = tmp_path / "jwks.pem"
    keys_file.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    app = await start_probe("probe-b", jwt_public_keys_file=keys_file)
    now = datetime.datetime.now(datetime.UTC)
    claims = {
        "sub": "user-42",
        "iat": now,
        "exp": now + datetime.timedelta(minutes=5),
        "iss": "finmesh-auth",
        "aud": "finmesh",
        "roles": ["user"],
    }
    good = jwt.encode(claims, key, algorithm="ES256")
    forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    async with client_channel(app, "gateway") as channel:
        stub = stubs.ProbeServiceStub(channel)
        response = await stub.Echo(
            messages.EchoRequest(text="hi"), metadata=(("authorization", f"Bearer {good}"),)
        )
        assert response.user == "user-42"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Echo(
                messages.EchoRequest(text="hi"), metadata=(("authorization", f"Bearer {forged}"),)
            )
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_streams_and_metrics(start_probe: StartProbe, probe: Any) -> None:
    messages, stubs = probe
    app = await start_probe("probe-b")
    async with client_channel(app, "gateway") as channel:
        stub = stubs.ProbeServiceStub(channel)
        values = [item.value async for item in stub.Count(messages.CountRequest(up_to=5))]
        assert values == [0, 1, 2, 3, 4]
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stub.Count(messages.CountRequest(up_to=99)):
                pass
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        await stub.Echo(messages.EchoRequest(text="ok"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Echo(messages.EchoRequest(text=""))
    sample = app.metrics.registry.get_sample_value
    labels = {"service": "probe-b", "method": "/finmesh.kitprobe.v1.ProbeService/Echo"}
    assert sample("finmesh_rpc_requests_total", {**labels, "code": "OK"}) == 1
    assert sample("finmesh_rpc_requests_total", {**labels, "code": "INVALID_ARGUMENT"}) == 1
    assert sample("finmesh_rpc_duration_seconds_count", labels) == 2
