"""RedisServer: a throwaway redis-server (Debian's) on 127.0.0.1, no persistence.

Environment: FINMESH_REDIS_SERVER (the redis-server executable; default: redis-server on PATH).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from pathlib import Path

from .process import HOST, ServerProcess, ServerStartError, free_port, log_tail, scratch_dir, wait_until

__all__ = ["RedisServer"]


class RedisServer:
    """A throwaway redis-server on 127.0.0.1:<port>, no persistence, config from the command line."""

    def __init__(self, *, start_timeout: float = 30.0) -> None:
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.dir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: ServerProcess | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("RedisServer is not started")
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        if self._proc is not None and self._proc.alive():
            return self
        began = time.monotonic()
        exe = os.environ.get("FINMESH_REDIS_SERVER") or shutil.which("redis-server")
        if not exe or not os.access(exe, os.X_OK):
            raise ServerStartError(
                f"redis-server not found ({exe or 'not on PATH'}): install Debian's redis-server "
                "(tools/ci/install-system-packages.sh) or set FINMESH_REDIS_SERVER"
            )
        self.dir = scratch_dir("redis")
        for attempt in range(3):
            self.port = free_port()
            self._proc = ServerProcess(
                "redis-server",
                [
                    exe,
                    "--bind", HOST,
                    "--port", str(self.port),
                    "--dir", str(self.dir),
                    "--unixsocket", "",
                    "--daemonize", "no",
                    "--supervised", "no",
                    "--logfile", "",
                    "--save", "",
                    "--appendonly", "no",
                    "--protected-mode", "yes",
                    "--databases", "16",
                ],
                self.dir / "redis.log",
                cwd=self.dir,
                stop_signal=signal.SIGTERM,
                death_signal=signal.SIGKILL,
                error_pattern=r"\s#\s|Failed|Could not|Error|FATAL",  # redis marks warnings with '#'
            )  # fmt: skip
            self._proc.start()
            try:
                wait_until(
                    f"Redis on {HOST}:{self.port}",
                    self._ping,
                    timeout=max(1.0, self.start_timeout - (time.monotonic() - began)),
                    proc=self._proc,
                    interval=0.05,
                )
                break
            except ServerStartError as exc:
                self._proc.kill()
                if attempt < 2 and "Address already in use" in self._proc.run_log():
                    continue
                raise ServerStartError(
                    f"Redis did not start (start_timeout={self.start_timeout:.0f}s): {exc}"
                ) from exc
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s. Idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout=10.0)

    def close(self) -> None:
        self.stop()
        if self.dir is not None and not os.environ.get("FINMESH_KEEP_SERVER_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.dir / "redis.log", lines) if self.dir else "<not started>"

    def _ping(self) -> bool:
        assert self.port is not None
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False
