"""The local mesh: every service of a profile as its own process on loopback, with mTLS.

Before any child starts, the launcher creates the local CA and issues every certificate (each
service's and the `operator` identity the CLI uses), so that children only ever read the PKI
directory and never race on creating it. Each child runs `python -m svc.kit.cli serve <name>`
in a process group of its own, with its log in `<var>/log/<name>.log`. The launcher waits until
every service answers SERVING over the gRPC health protocol, prints the endpoints, and on
SIGINT or SIGTERM stops the children: SIGTERM, the grace period, then SIGKILL for stragglers.

A service that exits once the mesh is up is restarted on its own endpoint, the way a pod is,
with a growing back-off; one that keeps crashing (CRASH_LOOP_RESTARTS restarts within
CRASH_LOOP_WINDOW_S) is left down and reported, so that a broken service is seen, not hidden.

The endpoints of a running mesh are written to `<var>/run/endpoints.json` so that
`finmesh status` finds services started on ports other than the catalog's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import enum
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from svc.kit.catalog import ServiceEntry
from svc.kit.config import SQLITE_BUS_FILE_NAME
from svc.kit.mtls import LocalCA

OPERATOR_IDENTITY = "operator"
# The REST edge (`python -m gateway`): an HTTP endpoint, probed at GATEWAY_HEALTH_PATH.
GATEWAY = "gateway"
GATEWAY_PORT = 8080
GATEWAY_HEALTH_PATH = "/healthz"
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0
GRACE_PERIOD_S = 10.0
# Interpreter teardown after the gRPC server has drained: the launcher waits this much longer.
EXIT_MARGIN_S = 3.0
PROBE_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 0.2
LOG_TAIL_LINES = 20
# Back-off before the n-th consecutive restart of a service (the last value repeats).
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
CRASH_LOOP_RESTARTS = 5
CRASH_LOOP_WINDOW_S = 120.0
UNREACHABLE = "UNREACHABLE"
SERVING = "SERVING"
# A child that is still starting refuses connections; without a short reconnect backoff the
# channel would keep failing fast for up to two minutes after the port opens.
PROBE_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.ssl_target_name_override", "localhost"),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 300),
)
_PR_SET_PDEATHSIG = 1
LAUNCHER_PID_ENV = "FINMESH_LAUNCHER_PID"


class LaunchError(Exception):
    """The mesh cannot be launched as asked (bad ports, unknown subset); the message says why."""


@dataclass(frozen=True)
class Layout:
    """Where a local mesh keeps its state, under one root directory (`var` by default)."""

    root: Path

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def endpoints_file(self) -> Path:
        return self.root / "run" / "endpoints.json"

    def log_file(self, service: str) -> Path:
        return self.log_dir / f"{service}.log"


@dataclass(frozen=True)
class Endpoint:
    """Where one service of the mesh listens."""

    service: str
    grpc_service: str
    host: str
    port: int
    metrics_port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_http(self) -> bool:
        """The REST edge, which speaks HTTP; every other endpoint is a gRPC service."""
        return not self.grpc_service

    @property
    def metrics_address(self) -> str:
        return f"{self.host}:{self.metrics_port}"


def _free_ports(count: int, host: str) -> list[int]:
    # Every socket stays bound until all are chosen, so no port is handed out twice.
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def plan_endpoints(
    entries: Sequence[ServiceEntry], *, host: str = LOOPBACK, port_offset: int = 0, free_ports: bool = False
) -> list[Endpoint]:
    """The endpoints of `entries`: the catalog's ports (shifted by `port_offset`), or free ports."""
    if free_ports:
        ports = _free_ports(2 * len(entries), host)
        pairs = [(ports[2 * index], ports[2 * index + 1]) for index in range(len(entries))]
    else:
        pairs = [(entry.port + port_offset, entry.metrics_port + port_offset) for entry in entries]
    endpoints = [
        Endpoint(entry.name, entry.grpc_service, host, port, metrics_port)
        for entry, (port, metrics_port) in zip(entries, pairs, strict=True)
    ]
    for endpoint in endpoints:
        for port in (endpoint.port, endpoint.metrics_port):
            if not 0 < port < 65536:
                raise LaunchError(f"port offset {port_offset} puts {endpoint.service} on invalid port {port}")
    return endpoints


def plan_gateway(*, host: str = LOOPBACK, port_offset: int = 0, free_ports: bool = False) -> Endpoint:
    """The REST edge's endpoint: GATEWAY_PORT (shifted by `port_offset`), or a free port."""
    if free_ports:
        port, metrics_port = _free_ports(2, host)
    else:
        port, metrics_port = GATEWAY_PORT + port_offset, GATEWAY_PORT + 1000 + port_offset
    if not 0 < port < 65536 or not 0 < metrics_port < 65536:
        raise LaunchError(f"port offset {port_offset} puts the gateway on invalid port {port}")
    return Endpoint(GATEWAY, "", host, port, metrics_port)


def select(entries: Sequence[ServiceEntry], only: Iterable[str]) -> list[ServiceEntry]:
    """The subset of a profile's `entries` named in `only` (all of them when `only` is empty)."""
    wanted = set(only)
    if not wanted:
        return list(entries)
    unknown = wanted - {entry.name for entry in entries}
    if unknown:
        raise LaunchError(f"not in the profile: {', '.join(sorted(unknown))}")
    return [entry for entry in entries if entry.name in wanted]


def prepare_pki(pki_dir: Path, identities: Iterable[str]) -> LocalCA:
    """Creates the local CA (once) and issues a certificate for each identity and the operator."""
    ca = LocalCA(pki_dir)
    ca.ensure()
    for identity in (*identities, OPERATOR_IDENTITY):
        ca.credentials(identity)
    return ca


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last `lines` lines of a log file (empty when there is none)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def plural(count: int, noun: str) -> str:
    """`1 service`, `2 services`."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table with left-aligned columns, headers first."""
    cells = [[str(value) for value in headers], *([str(value) for value in row] for row in rows)]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


# --------------------------------------------------------------------------------------------
# Health probes


class HealthProbe:
    """Asks one service for its health over mTLS (the gateway over HTTP); `check` names the status
    or UNREACHABLE."""

    def __init__(self, endpoint: Endpoint, credentials: grpc.ChannelCredentials) -> None:
        self.endpoint = endpoint
        self._channel = grpc.aio.secure_channel(endpoint.address, credentials, options=PROBE_CHANNEL_OPTIONS)
        self._stub = health_pb2_grpc.HealthStub(self._channel)

    async def check(self, timeout_s: float = PROBE_TIMEOUT_S) -> str:
        """SERVING, NOT_SERVING, SERVICE_UNKNOWN..., a gRPC code name, or UNREACHABLE."""
        if self.endpoint.is_http:
            return await self._check_http(timeout_s)
        request = health_pb2.HealthCheckRequest(service=self.endpoint.grpc_service)
        try:
            response = await self._stub.Check(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return UNREACHABLE
            return str(error.code().name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    async def _check_http(self, timeout_s: float) -> str:
        """SERVING when GET GATEWAY_HEALTH_PATH answers 200, NOT_SERVING for another status."""
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(self.endpoint.host, self.endpoint.port)
                try:
                    writer.write(
                        f"GET {GATEWAY_HEALTH_PATH} HTTP/1.1\r\nHost: {self.endpoint.address}\r\n"
                        "Connection: close\r\n\r\n".encode()
                    )
                    await writer.drain()
                    status_line = await reader.readline()
                finally:
                    writer.close()
        except (OSError, TimeoutError):
            return UNREACHABLE
        parts = status_line.split()
        return SERVING if len(parts) >= 2 and parts[1] == b"200" else "NOT_SERVING"

    async def close(self) -> None:
        await self._channel.close()


def operator_credentials(pki_dir: Path) -> grpc.ChannelCredentials:
    """The operator's client credentials; LaunchError when the mesh's CA does not exist yet."""
    ca = LocalCA(pki_dir)
    if not (pki_dir / "ca.crt").exists():
        raise LaunchError(f"no local CA under {pki_dir}: start the mesh first with `finmesh run`")
    return ca.credentials(OPERATOR_IDENTITY).channel()


async def check_all(endpoints: Sequence[Endpoint], pki_dir: Path, timeout_s: float) -> dict[str, str]:
    """The health of every endpoint, asked concurrently as the operator."""
    credentials = operator_credentials(pki_dir)
    probes = [HealthProbe(endpoint, credentials) for endpoint in endpoints]
    try:
        statuses = await asyncio.gather(*(probe.check(timeout_s) for probe in probes))
    finally:
        await asyncio.gather(*(probe.close() for probe in probes))
    return {probe.endpoint.service: status for probe, status in zip(probes, statuses, strict=True)}


# --------------------------------------------------------------------------------------------
# The endpoints file of a running mesh


def write_endpoints(
    path: Path,
    profile: str,
    endpoints: Sequence[Endpoint],
    *,
    ready: bool,
    pids: Mapping[str, int] | None = None,
) -> None:
    """Records the running mesh (launcher pid, profile, endpoints and the pid serving each) for
    `finmesh status` and for tests that stop one service."""
    pids = pids or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "launcher_pid": os.getpid(),
        "profile": profile,
        "ready": ready,
        "services": [
            {
                "service": e.service,
                "grpc_service": e.grpc_service,
                "host": e.host,
                "port": e.port,
                "metrics_port": e.metrics_port,
                **({"pid": pids[e.service]} if e.service in pids else {}),
            }
            for e in endpoints
        ],
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(path)


def read_endpoints(path: Path) -> tuple[str, list[Endpoint]] | None:
    """The profile and endpoints of the mesh recorded at `path`, or None if its launcher is gone."""
    try:
        document = json.loads(path.read_text())
        pid = int(document["launcher_pid"])
        endpoints = [
            Endpoint(**{key: value for key, value in service.items() if key != "pid"})
            for service in document["services"]
        ]
        profile = str(document["profile"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (profile, endpoints) if _pid_alive(pid) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------
# Child processes


def die_with_launcher() -> None:
    """Called first by a child the launcher started: asks Linux to SIGTERM it when the launcher
    dies, even by SIGKILL. In the child rather than as a preexec_fn, because a restart spawns from
    a launcher that already runs gRPC threads, where code between fork and exec is unsafe."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if not launcher or not sys.platform.startswith("linux"):
        return
    library = ctypes.util.find_library("c")
    if library is not None:
        ctypes.CDLL(library, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != int(launcher):  # the launcher died before prctl took effect
        os._exit(1)


@dataclass
class Child:
    """One service process, leader of its own process group."""

    endpoint: Endpoint
    log_path: Path
    process: subprocess.Popen[bytes]
    reported_exit: bool = field(default=False)
    # Monotonic times of the restarts so far, and when the next one is due (None: not planned).
    restarts: list[float] = field(default_factory=list)
    restart_at: float | None = field(default=None)
    given_up: bool = field(default=False)

    @property
    def name(self) -> str:
        return self.endpoint.service

    @property
    def pid(self) -> int:
        return self.process.pid

    def returncode(self) -> int | None:
        return self.process.poll()

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)


def child_environment(
    endpoint: Endpoint, layout: Layout, grace_s: float, peers: Sequence[Endpoint] = ()
) -> dict[str, str]:
    """The child's environment: the launcher's, plus where it and its peers listen, its PKI and data.

    Every child gets the SQLite bus on `<var>/data/bus.db` (or FINMESH_BUS_PATH), so that events
    cross processes, unless the launcher's own environment chose a bus (FINMESH_BUS).

    A variable scoped to one service, `FINMESH_<SERVICE>__<NAME>` (the service's name upper-cased,
    `-` as `_`), is that child's `FINMESH_<NAME>`: settings that share a name across services
    (FINMESH_ASSETS, FINMESH_CHAINS) can differ per service in one launcher environment.
    """
    env = dict(os.environ)
    env.update(scoped_variables(endpoint.service, env))
    if "FINMESH_BUS" not in env:
        env["FINMESH_BUS"] = "sqlite"
        env.setdefault("FINMESH_BUS_PATH", str((layout.data_dir / SQLITE_BUS_FILE_NAME).resolve()))
    env.update(
        {
            "FINMESH_ENDPOINTS": json.dumps({peer.service: peer.address for peer in peers}, sort_keys=True),
            "FINMESH_HOST": endpoint.host,
            "FINMESH_PORT": str(endpoint.port),
            "FINMESH_METRICS_PORT": str(endpoint.metrics_port),
            "FINMESH_TLS": "true",
            "FINMESH_PKI_DIR": str(layout.pki_dir.resolve()),
            "FINMESH_DATA_DIR": str(layout.data_dir.resolve()),
            "FINMESH_GRACE_PERIOD_S": str(grace_s),
            "PYTHONUNBUFFERED": "1",
            LAUNCHER_PID_ENV: str(os.getpid()),
        }
    )
    return env


def scoped_variables(service: str, environment: dict[str, str]) -> dict[str, str]:
    """The `FINMESH_<NAME>` values that `FINMESH_<SERVICE>__<NAME>` variables give `service`."""
    scope = f"FINMESH_{service.upper().replace('-', '_')}__"
    return {
        "FINMESH_" + key[len(scope) :]: value
        for key, value in environment.items()
        if key.startswith(scope) and len(key) > len(scope)
    }


def spawn(
    endpoint: Endpoint,
    layout: Layout,
    grace_s: float,
    peers: Sequence[Endpoint] = (),
    *,
    append_log: bool = False,
) -> Child:
    """Starts `finmesh serve <service>` (the gateway: `python -m gateway`) in a new process group,
    its output in the service's log (appended to on a restart)."""
    log_path = layout.log_file(endpoint.service)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = ["-m", GATEWAY] if endpoint.is_http else ["-m", "svc.kit.cli", "serve", endpoint.service]
    with log_path.open("ab" if append_log else "wb") as log:
        process = subprocess.Popen(
            [sys.executable, *command],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_environment(endpoint, layout, grace_s, peers),
            start_new_session=True,
        )
    return Child(endpoint=endpoint, log_path=log_path, process=process)


# --------------------------------------------------------------------------------------------
# The launcher


class Outcome(enum.Enum):
    READY = "ready"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class Launcher:
    """Starts the endpoints' services, waits for SERVING, supervises, and stops them on a signal."""

    def __init__(
        self,
        profile: str,
        endpoints: Sequence[Endpoint],
        layout: Layout,
        *,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        grace_s: float = GRACE_PERIOD_S,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.profile = profile
        self.endpoints = list(endpoints)
        self.layout = layout
        self.startup_timeout_s = startup_timeout_s
        self.grace_s = grace_s
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._children: list[Child] = []
        self._stop = asyncio.Event()
        self._signals = 0

    def _say(self, text: str, *, error: bool = False) -> None:
        print(text, file=self._err if error else self._out, flush=True)

    def _on_signal(self) -> None:
        self._signals += 1
        self._stop.set()

    async def run(self) -> int:
        """Runs the mesh until SIGINT/SIGTERM: 0 after a clean stop, 1 if start-up failed."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal)
        try:
            return await self._run()
        finally:
            await self._stop_children()
            with contextlib.suppress(OSError):
                self.layout.endpoints_file.unlink()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    async def _run(self) -> int:
        prepare_pki(self.layout.pki_dir, (endpoint.service for endpoint in self.endpoints))
        self.layout.data_dir.mkdir(parents=True, exist_ok=True)
        self._say(
            f"finmesh: starting {plural(len(self.endpoints), 'service')} of profile {self.profile} "
            f"(logs in {self.layout.log_dir}/)"
        )
        started = time.monotonic()
        for endpoint in self.endpoints:
            self._children.append(spawn(endpoint, self.layout, self.grace_s, self.endpoints))
        self._record(ready=False)
        outcome, statuses = await self._wait_until_serving()
        if outcome is Outcome.FAILED:
            return 1
        if outcome is Outcome.INTERRUPTED:
            return 0
        self._print_table(statuses)
        self._say(
            f"finmesh: all {len(self.endpoints)} services SERVING after "
            f"{time.monotonic() - started:.1f} s; Ctrl-C stops them"
        )
        self._record(ready=True)
        return await self._supervise()

    def _record(self, *, ready: bool) -> None:
        pids = {child.name: child.pid for child in self._children}
        write_endpoints(self.layout.endpoints_file, self.profile, self.endpoints, ready=ready, pids=pids)

    async def _wait_until_serving(self) -> tuple[Outcome, dict[str, str]]:
        credentials = LocalCA(self.layout.pki_dir).credentials(OPERATOR_IDENTITY).channel()
        probes = {child.name: HealthProbe(child.endpoint, credentials) for child in self._children}
        statuses = dict.fromkeys(probes, UNREACHABLE)
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            while True:
                dead = [child for child in self._children if child.returncode() is not None]
                if dead:
                    self._report_dead_at_startup(dead)
                    return Outcome.FAILED, statuses
                pending = [name for name, status in statuses.items() if status != SERVING]
                if not pending:
                    return Outcome.READY, statuses
                if self._stop.is_set():
                    return Outcome.INTERRUPTED, statuses
                if time.monotonic() > deadline:
                    self._report_timeout(statuses)
                    return Outcome.FAILED, statuses
                answers = await asyncio.gather(*(probes[name].check() for name in pending))
                statuses.update(zip(pending, answers, strict=True))
                if any(status != SERVING for status in statuses.values()):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), POLL_INTERVAL_S)
        finally:
            await asyncio.gather(*(probe.close() for probe in probes.values()))

    def _report_dead_at_startup(self, dead: Sequence[Child]) -> None:
        for child in dead:
            child.reported_exit = True
            self._say(
                f"finmesh: {child.name} exited with code {child.returncode()} during start-up; "
                f"last lines of {child.log_path}:",
                error=True,
            )
            for line in log_tail(child.log_path):
                self._say(f"  {line}", error=True)

    def _report_timeout(self, statuses: dict[str, str]) -> None:
        late = [name for name, status in statuses.items() if status != SERVING]
        self._say(f"finmesh: not SERVING after {self.startup_timeout_s:.0f} s: {', '.join(late)}", error=True)
        self._print_table(statuses, error=True)
        for child in self._children:
            if child.name in late:
                self._say(f"last lines of {child.log_path}:", error=True)
                for line in log_tail(child.log_path, lines=5):
                    self._say(f"  {line}", error=True)

    def _print_table(self, statuses: dict[str, str], *, error: bool = False) -> None:
        rows = [
            (
                child.name,
                child.endpoint.address,
                child.endpoint.metrics_address,
                statuses[child.name],
                child.pid,
            )
            for child in self._children
        ]
        self._say(format_table(("SERVICE", "GRPC", "METRICS", "STATUS", "PID"), rows), error=error)

    async def _supervise(self) -> int:
        """Waits for a stop signal, restarting any service that exits meanwhile."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), POLL_INTERVAL_S * 2)
            if self._stop.is_set():
                break
            now = time.monotonic()
            for index, child in enumerate(self._children):
                code = child.returncode()
                if code is None or child.given_up:
                    continue
                if child.restart_at is None:
                    self._plan_restart(child, code, now)
                elif now >= child.restart_at:
                    self._children[index] = self._restart(child)
                    self._record(ready=True)
            if all(child.given_up for child in self._children):
                self._say("finmesh: every service has exited", error=True)
                return 1
        return 0

    def _plan_restart(self, child: Child, code: int, now: float) -> None:
        recent = [at for at in child.restarts if now - at < CRASH_LOOP_WINDOW_S]
        if len(recent) >= CRASH_LOOP_RESTARTS:
            child.given_up = True
            self._say(
                f"finmesh: {child.name} exited with code {code} after {plural(len(recent), 'restart')} "
                f"in {CRASH_LOOP_WINDOW_S:.0f} s; leaving it down, see {child.log_path}",
                error=True,
            )
            return
        delay = RESTART_BACKOFF_S[min(len(recent), len(RESTART_BACKOFF_S) - 1)]
        child.restart_at = now + delay
        self._say(
            f"finmesh: {child.name} exited with code {code}; restarting it in {delay:g} s "
            f"(see {child.log_path})",
            error=True,
        )

    def _restart(self, child: Child) -> Child:
        fresh = spawn(child.endpoint, self.layout, self.grace_s, self.endpoints, append_log=True)
        fresh.restarts = [*child.restarts, time.monotonic()]
        self._say(f"finmesh: {child.name} restarted (pid {fresh.pid})")
        return fresh

    async def _stop_children(self) -> None:
        """SIGTERM to every child's group, the grace period, then SIGKILL (also on a second Ctrl-C)."""
        running = [child for child in self._children if child.returncode() is None]
        if not running:
            return
        self._say(f"finmesh: stopping {plural(len(running), 'service')}")
        signals_before = self._signals
        started = time.monotonic()
        for child in running:
            child.signal_group(signal.SIGTERM)
        deadline = started + self.grace_s + EXIT_MARGIN_S
        while any(child.returncode() is None for child in running):
            if time.monotonic() > deadline or self._signals > signals_before:
                break
            await asyncio.sleep(0.05)
        stragglers = [child for child in running if child.returncode() is None]
        for child in stragglers:
            self._say(f"finmesh: {child.name} did not stop in time; killing it", error=True)
            child.signal_group(signal.SIGKILL)
        for child in stragglers:
            await asyncio.to_thread(child.process.wait)
        self._say(f"finmesh: stopped in {time.monotonic() - started:.1f} s")
