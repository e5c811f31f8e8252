"""A launched mesh seen from outside: `finmesh run` as a child process, and its REST edge.

`MeshProcess` starts the launcher (every service of a profile as its own process, with mTLS, on
free ports, under a var directory of its own), waits until it reports every service SERVING, and
stops it with SIGTERM. The end-to-end tests and `make demo` drive a mesh only through the
gateway that the launcher starts beside the services.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from svc.kit.launcher import GATEWAY, Endpoint, log_tail, read_endpoints

STARTUP_TIMEOUT_S = 600.0
GRACE_S = 5.0
POLL_S = 0.25
PORT_RACE_ATTEMPTS = 3
# What a service's log says when its port was taken (svc/kit/cli.py, uvicorn), lower case.
PORT_TAKEN = ("cannot listen", "metrics port in use", "address already in use")


class MeshError(Exception):
    """The mesh did not start or stop as asked; the message carries the launcher's last lines."""


@dataclass
class MeshProcess:
    """One `finmesh run --free-ports` launcher and the services it starts."""

    var_dir: Path
    profile: str = "custodial-wallet"
    only: Sequence[str] = ()
    environment: Mapping[str, str] | None = None
    startup_timeout_s: float = STARTUP_TIMEOUT_S
    grace_s: float = GRACE_S

    def __post_init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self.endpoints: dict[str, Endpoint] = {}
        self.log_path = self.var_dir.parent / f"{self.var_dir.name}-launcher.log"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.endpoints[GATEWAY].address}"

    @property
    def endpoints_file(self) -> Path:
        return self.var_dir / "run" / "endpoints.json"

    def service_log(self, service: str) -> Path:
        return self.var_dir / "log" / f"{service}.log"

    def start(self) -> MeshProcess:
        """Starts the launcher and returns once every service is SERVING; MeshError otherwise.

        A free port the launcher picked can be taken by another process before the service binds
        it (the launcher then stops, the service's log saying it cannot listen): such a start is
        tried again, on new free ports, up to PORT_RACE_ATTEMPTS times.
        """
        for attempt in range(1, PORT_RACE_ATTEMPTS + 1):
            try:
                return self._start_once()
            except MeshError as failure:
                taken = any(marker in str(failure).lower() for marker in PORT_TAKEN)
                if attempt == PORT_RACE_ATTEMPTS or not taken:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> MeshProcess:
        command = [
            sys.executable, "-m", "svc.kit.cli", "run", "--profile", self.profile, "--free-ports",
            "--var-dir", str(self.var_dir), "--timeout", str(self.startup_timeout_s),
            "--grace", str(self.grace_s),
        ]  # fmt: skip
        if self.only:
            command += ["--only", ",".join(self.only)]
        self.var_dir.mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, **(self.environment or {})}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environment
            )
        deadline = time.monotonic() + self.startup_timeout_s + 10
        while not self._ready():
            if self._process.poll() is not None:
                raise MeshError(f"the launcher exited with {self._process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise MeshError(
                    f"the mesh was not SERVING after {self.startup_timeout_s:.0f} s:\n{self.tail()}"
                )
            time.sleep(POLL_S)
        recorded = read_endpoints(self.endpoints_file)
        if recorded is None:
            raise MeshError(f"the launcher recorded no endpoints:\n{self.tail()}")
        self.endpoints = {endpoint.service: endpoint for endpoint in recorded[1]}
        return self

    def pid_of(self, service: str) -> int:
        """The pid now serving `service` (the launcher records a restarted service's new pid)."""
        document = json.loads(self.endpoints_file.read_text())
        return int(next(row["pid"] for row in document["services"] if row["service"] == service))

    def _ready(self) -> bool:
        try:
            return bool(json.loads(self.endpoints_file.read_text())["ready"])
        except (OSError, ValueError, KeyError):
            return False

    def stop(self) -> int | None:
        """SIGTERM to the launcher, which drains and stops every service; its exit status."""
        process = self._process
        if process is None or process.poll() is not None:
            return process.returncode if process is not None else None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=self.grace_s + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(log_tail(self.log_path, lines))
