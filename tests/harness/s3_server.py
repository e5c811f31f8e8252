"""S3Server: S3Proxy (an implementation of the S3 API, Apache-2.0) with its filesystem backend on
127.0.0.1, run from the Maven artifacts of tools/s3proxy/pom.xml on the installed JDK. Requests
are authenticated with AWS Signature V4 against one access key, as a real bucket's would be.

Environment: FINMESH_S3PROXY_LIBS (directory of its jars; default .build/s3proxy/libs, which
tools/s3proxy/fetch.sh fills; run on each start, a no-op when up to date) and FINMESH_JAVA
(default: $JAVA_HOME/bin/java, else java on PATH).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import time
from pathlib import Path

from .kafka_broker import find_java
from .process import (
    HOST,
    ServerProcess,
    ServerStartError,
    free_port,
    log_tail,
    run_tool,
    scratch_dir,
    wait_until,
)

__all__ = ["S3Server"]

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
# S3Proxy logs at DEBUG without a configuration of its own.
LOGBACK_XML = """<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%d{HH:mm:ss.SSS} %-5level %logger{36} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
"""


def _s3proxy_libs() -> Path:
    env = os.environ.get("FINMESH_S3PROXY_LIBS")
    if env:
        libs = Path(env)
        if not list(libs.glob("s3proxy-*.jar")):
            raise ServerStartError(f"FINMESH_S3PROXY_LIBS={env} holds no s3proxy-*.jar")
        return libs
    libs = REPO_ROOT / ".build" / "s3proxy" / "libs"
    run_tool(
        ["bash", str(REPO_ROOT / "tools" / "s3proxy" / "fetch.sh"), str(libs)],
        what="tools/s3proxy/fetch.sh (S3Proxy jars)",
        timeout=900,
    )
    return libs


class S3Server:
    """A throwaway S3-compatible endpoint: `endpoint_url`, `access_key`, `secret_key`, `region`.

    Objects live under its scratch directory; `close()` removes them."""

    READY_LINE = "Started Server"

    def __init__(self, *, start_timeout: float = 180.0) -> None:
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.dir: Path | None = None
        self.access_key = f"finmesh-{secrets.token_hex(4)}"
        self.secret_key = secrets.token_urlsafe(30)
        self.region = REGION
        self.startup_seconds: float | None = None
        self._proc: ServerProcess | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("S3Server is not started")
        return f"http://{HOST}:{self.port}"

    def start(self) -> S3Server:
        if self._proc is not None and self._proc.alive():
            return self
        java = find_java()
        libs = _s3proxy_libs()  # may fetch the jars (once): not part of the start budget
        began = time.monotonic()
        self.dir = scratch_dir("s3proxy")
        (self.dir / "objects").mkdir(exist_ok=True)
        logback = self.dir / "logback.xml"
        logback.write_text(LOGBACK_XML)
        for attempt in range(3):
            self.port = free_port()
            properties = self.dir / "s3proxy.conf"
            properties.write_text(
                "\n".join(
                    [
                        f"s3proxy.endpoint=http://{HOST}:{self.port}",
                        "s3proxy.authorization=aws-v4",
                        f"s3proxy.identity={self.access_key}",
                        f"s3proxy.credential={self.secret_key}",
                        "jclouds.provider=filesystem-nio2",
                        # The backend's own credentials (unused by a local directory, but required).
                        "jclouds.identity=local",
                        "jclouds.credential=local",
                        f"jclouds.filesystem.basedir={self.dir / 'objects'}",
                        f"jclouds.regions={self.region}",
                        "",
                    ]
                )
            )
            self._proc = ServerProcess(
                "s3proxy",
                [
                    java, "-Xmx256m", f"-Dlogback.configurationFile={logback}",
                    "-cp", f"{libs}/*", "org.gaul.s3proxy.Main", "--properties", str(properties),
                ],
                self.dir / "s3proxy.log",
                cwd=self.dir,
                stop_signal=signal.SIGTERM,
                death_signal=signal.SIGKILL,
                error_pattern=r"\b(ERROR|FATAL)\b|^[\w.$]+(Exception|Error)\b",
            )  # fmt: skip
            self._proc.start()
            try:
                wait_until(
                    f"S3Proxy on {HOST}:{self.port}",
                    self._serving,
                    timeout=max(1.0, self.start_timeout - (time.monotonic() - began)),
                    proc=self._proc,
                    interval=0.2,
                )
                break
            except ServerStartError as exc:
                self._proc.kill()
                if attempt < 2 and "Address already in use" in self._proc.run_log():
                    continue
                raise ServerStartError(
                    f"S3Proxy did not start (start_timeout={self.start_timeout:.0f}s): {exc}"
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
        return log_tail(self.dir / "s3proxy.log", lines) if self.dir else "<not started>"

    def _serving(self) -> bool:
        """An unsigned request is answered (403, AccessDenied) once Jetty serves the S3 API."""
        assert self.port is not None
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(
                    f"GET / HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nConnection: close\r\n\r\n".encode()
                )
                return sock.recv(64).startswith(b"HTTP/1.1 403")
        except OSError:
            return False
