"""The local mesh through real processes and real gRPC: `finmesh run` starts services with mTLS,
`finmesh status` asks them for their health, the catalog decides who may call whom, and a signal
stops everything.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from svc.kit import catalog as catalog_module
from svc.kit.cli import main
from svc.kit.errors import DomainError
from svc.kit.launcher import OPERATOR_IDENTITY, Endpoint, read_endpoints
from svc.kit.mtls import LocalCA
from svc.kit.validation import validate
from tests.harness.process import ServerProcess, free_port, log_tail, wait_until

# Every test is bounded; the whole module takes about 20 s on two cores.
pytestmark = pytest.mark.timeout(120)

PROFILE = "custodial-wallet"
MESH_SERVICES = ("custody", "admin", "ledger")
# The REST edge runs beside them, probed over HTTP.
MESH_EDGE = "gateway"
GRACE_S = 4.0
STARTUP_TIMEOUT_S = 40.0
# Launcher's margin after the grace period for interpreter teardown (svc.kit.launcher.EXIT_MARGIN_S).
EXIT_MARGIN_S = 3.0
RPC_TIMEOUT_S = 5.0
RESTARTED = re.compile(r"finmesh: (?P<service>[a-z-]+) restarted \(pid (?P<pid>\d+)\)")


@dataclass
class Mesh:
    var_dir: Path
    launcher: ServerProcess
    endpoints: dict[str, Endpoint]

    @property
    def pki_dir(self) -> Path:
        return self.var_dir / "pki"

    def output(self) -> str:
        return self.launcher.log_path.read_text()


def launcher_process(var_dir: Path, *arguments: str) -> ServerProcess:
    command = [sys.executable, "-m", "svc.kit.cli", "run", "--profile", PROFILE, "--var-dir", str(var_dir)]
    return ServerProcess("launcher", [*command, *arguments], var_dir.parent / f"{var_dir.name}-launcher.log")


def finmesh(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "svc.kit.cli", *arguments],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    var_dir = tmp_path_factory.mktemp("mesh") / "var"
    launcher = launcher_process(
        var_dir, "--only", ",".join((*MESH_SERVICES, MESH_EDGE)), "--free-ports", "--grace", str(GRACE_S),
        "--timeout", str(STARTUP_TIMEOUT_S),
    )  # fmt: skip
    launcher.start()
    endpoints_file = var_dir / "run" / "endpoints.json"
    try:
        wait_until(
            "every service SERVING",
            lambda: endpoints_file.exists() and json.loads(endpoints_file.read_text())["ready"],
            timeout=STARTUP_TIMEOUT_S + 5,
            proc=launcher,
        )
        recorded = read_endpoints(endpoints_file)
        assert recorded is not None
        yield Mesh(var_dir, launcher, {endpoint.service: endpoint for endpoint in recorded[1]})
    finally:
        launcher.stop(timeout=GRACE_S + EXIT_MARGIN_S + 2)


def secure_channel(endpoint: Endpoint, credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(
        endpoint.address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )


def as_identity(mesh: Mesh, identity: str, service: str) -> grpc.aio.Channel:
    credentials = LocalCA(mesh.pki_dir).credentials(identity).channel()
    return secure_channel(mesh.endpoints[service], credentials)


def methods_of(grpc_service: str) -> list[MethodDescriptor]:
    package = grpc_service.rpartition(".")[0]
    importlib.import_module(f"{package}.{package.split('.')[1]}_service_pb2")
    service = descriptor_pool.Default().FindServiceByName(grpc_service)
    return [method for method in service.methods if not method.client_streaming]


def accepts_empty_request(method: MethodDescriptor) -> bool:
    try:
        validate(message_factory.GetMessageClass(method.input_type)())
    except DomainError:
        return False
    return True


async def call_with_empty_request(channel: grpc.aio.Channel, method: MethodDescriptor) -> grpc.StatusCode:
    """Calls `method` with an empty request; the status code it answers (OK if it succeeds)."""
    request = message_factory.GetMessageClass(method.input_type)()
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.server_streaming:
        stream = channel.unary_stream(path, request_serializer=lambda m: m.SerializeToString())
        call = stream(request, timeout=RPC_TIMEOUT_S)
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK
    unary = channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString())
    try:
        await unary(request, timeout=RPC_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def health_of(channel: grpc.aio.Channel, service: str = "") -> str:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT_S)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def child_pids(output: str) -> dict[str, int]:
    """Service -> pid, from the endpoint table the launcher prints and its later restarts."""
    pids: dict[str, int] = {}
    for line in output.splitlines():
        row = line.split()
        if row and row[0] in MESH_SERVICES and row[-1].isdigit():
            pids[row[0]] = int(row[-1])
        elif (restart := RESTARTED.search(line)) is not None:
            pids[restart["service"]] = int(restart["pid"])
    return pids


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------------------------------


def test_launcher_prints_every_endpoint_once_serving(mesh: Mesh) -> None:
    output = mesh.output()
    assert f"all {len(MESH_SERVICES) + 1} services SERVING after" in output
    for name in (*MESH_SERVICES, MESH_EDGE):
        endpoint = mesh.endpoints[name]
        row = next(line.split() for line in output.splitlines() if line.startswith(name + " "))
        assert row[1:4] == [endpoint.address, endpoint.metrics_address, "SERVING"]
        # The launcher moved the service off its catalog port, as asked.
        assert (mesh.var_dir / "log" / f"{name}.log").exists()
    assert (mesh.pki_dir / f"{OPERATOR_IDENTITY}.crt").exists()


def test_status_exits_zero_when_every_service_is_serving(mesh: Mesh) -> None:
    result = finmesh("status", "--var-dir", str(mesh.var_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(MESH_SERVICES) + 1
    assert f"{count}/{count} SERVING" in result.stdout
    for name in (*MESH_SERVICES, MESH_EDGE):
        assert mesh.endpoints[name].address in result.stdout


async def test_every_service_answers_health_checks(mesh: Mesh) -> None:
    catalog = catalog_module.default()
    for name in MESH_SERVICES:
        async with as_identity(mesh, OPERATOR_IDENTITY, name) as channel:
            assert await health_of(channel) == "SERVING"
            assert await health_of(channel, catalog.service(name).grpc_service) == "SERVING"


def test_the_gateway_serves_rest_over_the_mesh(mesh: Mesh) -> None:
    base = f"http://{mesh.endpoints[MESH_EDGE].address}"
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{base}/openapi.json", timeout=5).json()["openapi"].startswith("3.")
    # An end-user route without a token is refused at the edge, with a google.rpc.Status body.
    refused = httpx.get(f"{base}/v1/admin/ledger/trial_balance", timeout=5)
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]


def _has_implementation(service: str) -> bool:
    return (Path(__file__).resolve().parents[2] / "svc" / service.replace("-", "_") / "main.py").exists()


async def test_an_unimplemented_rpc_answers_unimplemented(mesh: Mesh) -> None:
    catalog = catalog_module.default()
    unimplemented = [name for name in MESH_SERVICES if not _has_implementation(name)]
    assert unimplemented, "the mesh test needs one service that has no implementation yet"
    for name in unimplemented:
        methods = [
            method
            for method in methods_of(catalog.service(name).grpc_service)
            if accepts_empty_request(method)
        ]
        assert methods, f"{name} has no RPC that accepts an empty request"
        async with as_identity(mesh, "gateway", name) as channel:
            for method in methods[:3]:
                assert await call_with_empty_request(channel, method) == grpc.StatusCode.UNIMPLEMENTED, (
                    method.name
                )


async def test_a_client_without_a_certificate_of_the_mesh_ca_is_refused(mesh: Mesh, tmp_path: Path) -> None:
    endpoint = mesh.endpoints["custody"]
    foreign = LocalCA(tmp_path / "foreign-pki").credentials("gateway")
    # A client certificate from another CA (trusting the mesh's CA, so only the client side is wrong).
    impostor = grpc.ssl_channel_credentials(
        root_certificates=(mesh.pki_dir / "ca.crt").read_bytes(),
        private_key=foreign.key_pem,
        certificate_chain=foreign.cert_pem,
    )
    anonymous = grpc.ssl_channel_credentials(root_certificates=(mesh.pki_dir / "ca.crt").read_bytes())
    for credentials in (impostor, anonymous):
        async with secure_channel(endpoint, credentials) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_of(channel)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_caller_the_catalog_does_not_allow_is_denied(mesh: Mesh) -> None:
    catalog = catalog_module.default()
    assert "staking" not in catalog.allowed_callers("custody")
    assert "withdraw" in catalog.allowed_callers("custody")
    method = methods_of(catalog.service("custody").grpc_service)[0]
    async with as_identity(mesh, "staking", "custody") as channel:
        assert await call_with_empty_request(channel, method) == grpc.StatusCode.PERMISSION_DENIED
        # Health stays open to any certificate of the mesh.
        assert await health_of(channel) == "SERVING"
    async with as_identity(mesh, "withdraw", "custody") as channel:
        assert await call_with_empty_request(channel, method) != grpc.StatusCode.PERMISSION_DENIED


async def test_server_reflection_lists_the_service(mesh: Mesh) -> None:
    catalog = catalog_module.default()
    for name in MESH_SERVICES:
        async with as_identity(mesh, OPERATOR_IDENTITY, name) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            listed: set[str] = set()
            async for response in stub.ServerReflectionInfo(iter([request]), timeout=RPC_TIMEOUT_S):
                listed |= {service.name for service in response.list_services_response.service}
        assert {catalog.service(name).grpc_service, "grpc.health.v1.Health"} <= listed


def test_cli_errors_are_one_line_and_exit_two(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cases = [
        (["serve", "nope"], "unknown service 'nope'"),
        (["migrate", "nope"], "unknown service 'nope'"),
        (["run", "--profile", "nope"], "unknown profile 'nope'"),
        (["run", "--profile", PROFILE, "--only", "staking"], "not in the profile: staking"),
        (["status", "--var-dir", str(tmp_path)], "no local CA"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    monkeypatch.setenv("FINMESH_GRACE_PERIOD_S", "-1")
    assert main(["run", "--var-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FINMESH_GRACE_PERIOD_S" in err
    assert not (tmp_path / "pki").exists()


def test_migrate_applies_the_kit_migrations(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FINMESH_DATA_DIR", str(tmp_path))
    assert main(["migrate", "ledger"]) == 0
    assert "ledger" in capsys.readouterr().out
    assert (tmp_path / "ledger.db").stat().st_size > 0


def test_a_service_dying_at_start_up_stops_the_launcher(tmp_path: Path) -> None:
    ledger = catalog_module.default().service("ledger")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        offset = taken.getsockname()[1] - ledger.port
        launcher = launcher_process(tmp_path / "var", "--only", "ledger", f"--port-offset={offset}")
        launcher.start()
        try:
            wait_until("the launcher to give up", lambda: launcher.returncode() is not None, timeout=30)
        finally:
            launcher.stop(timeout=5)
    output = log_tail(launcher.log_path, 200)
    assert launcher.returncode() == 1, output
    assert "ledger exited with code 1 during start-up" in output
    assert "cannot listen" in output
    assert not (tmp_path / "var" / "run" / "endpoints.json").exists()


async def test_a_service_that_dies_is_restarted_on_its_endpoint(mesh: Mesh) -> None:
    killed = child_pids(mesh.output())["ledger"]
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while child_pids(mesh.output())["ledger"] == killed:
        assert time.monotonic() < deadline, mesh.output()
        await asyncio.sleep(0.1)
    assert "ledger exited with code -9; restarting it" in mesh.output()
    while True:
        try:
            async with as_identity(mesh, OPERATOR_IDENTITY, "ledger") as channel:
                if await health_of(channel) == "SERVING":
                    break
        except grpc.aio.AioRpcError:
            pass
        assert time.monotonic() < deadline, mesh.output()
        await asyncio.sleep(0.2)
    assert pid_exists(child_pids(mesh.output())["ledger"])


def test_sigint_stops_every_service_within_the_grace_period(mesh: Mesh) -> None:
    pids = child_pids(mesh.output())
    assert set(pids) == set(MESH_SERVICES) and all(pid_exists(pid) for pid in pids.values())
    assert mesh.launcher.pid is not None
    started = time.monotonic()
    os.kill(mesh.launcher.pid, signal.SIGINT)
    wait_until("the launcher to exit", lambda: mesh.launcher.returncode() is not None, timeout=GRACE_S + 10)
    elapsed = time.monotonic() - started
    assert mesh.launcher.returncode() == 0, mesh.output()
    assert elapsed < GRACE_S + EXIT_MARGIN_S
    assert not any(pid_exists(pid) for pid in pids.values())
    assert "did not stop in time" not in mesh.output()
    for name in MESH_SERVICES:
        # Each drained and said so: stopped by SIGTERM, not killed.
        assert '"message": "stopped"' in (mesh.var_dir / "log" / f"{name}.log").read_text()
    assert not (mesh.var_dir / "run" / "endpoints.json").exists()
    result = finmesh("status", "--var-dir", str(mesh.var_dir), "--profile", PROFILE, "--timeout", "1")
    assert result.returncode == 1
    assert "UNREACHABLE" in result.stdout
