"""KafkaBroker: a single-node Apache Kafka cluster in KRaft mode (broker + controller in one JVM)
on 127.0.0.1, run from the Maven artifacts of tools/kafka/pom.xml on the installed JDK.

Environment: FINMESH_KAFKA_LIBS (directory of the broker's jars; default .build/kafka/libs, which
tools/kafka/fetch.sh fills; run on each start, a no-op when up to date) and FINMESH_JAVA
(default: $JAVA_HOME/bin/java, else java on PATH).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import struct
import time
import uuid
from pathlib import Path

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

__all__ = ["KafkaBroker"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def find_java() -> str:
    env = os.environ.get("FINMESH_JAVA")
    if env:
        return env
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise ServerStartError("java not found: install a JDK 17 (or set FINMESH_JAVA / JAVA_HOME)")
    return found


def _kafka_libs() -> Path:
    env = os.environ.get("FINMESH_KAFKA_LIBS")
    if env:
        libs = Path(env)
        if not list(libs.glob("kafka_2.13-*.jar")):
            raise ServerStartError(f"FINMESH_KAFKA_LIBS={env} holds no kafka_2.13-*.jar")
        return libs
    libs = REPO_ROOT / ".build" / "kafka" / "libs"
    # Same as `make kafka-libs`: a no-op (milliseconds) when the jars match tools/kafka/pom.xml,
    # a fetch (cached in ~/.m2 after the first time) when they are missing or stale.
    run_tool(
        ["bash", str(REPO_ROOT / "tools" / "kafka" / "fetch.sh"), str(libs)],
        what="tools/kafka/fetch.sh (Kafka broker jars)",
        timeout=900,
    )
    return libs


def _cluster_id() -> str:
    """A random Kafka cluster id (base64url UUID) that argument parsers won't take for a flag."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _kafka_api_versions_ok(port: int) -> bool:
    """Send an ApiVersions v0 request; true if the broker answers it without error."""
    client_id = b"finmesh-harness"
    body = struct.pack(">hhih", 18, 0, 0x5EED, len(client_id)) + client_id
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = b""
            while len(head) < 10:
                chunk = sock.recv(10 - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    _size, correlation, error_code = struct.unpack(">iih", head)
    return bool(correlation == 0x5EED and error_code == 0)


_LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
log4j.logger.org.apache.kafka.common.metrics=WARN
"""

_LOG4J2_PROPERTIES = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


class KafkaBroker:
    """A single-node Kafka cluster in KRaft mode (one JVM: broker + controller) on loopback.

    The data directory and ports survive `stop()`, `kill()` and `restart()`; `close()` removes
    them. Topics are auto-created with one partition.
    """

    READY_LINE = "Kafka Server started"

    def __init__(self, *, start_timeout: float = 60.0, heap: str = "512m") -> None:
        self.start_timeout = start_timeout
        self.heap = heap
        self.port: int | None = None
        self.controller_port: int | None = None
        self.dir: Path | None = None
        self.cluster_id = _cluster_id()
        self.startup_seconds: float | None = None
        self._proc: ServerProcess | None = None
        self._java: str | None = None
        self._libs: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise RuntimeError("KafkaBroker is not started")
        return f"{HOST}:{self.port}"

    def start(self) -> KafkaBroker:
        """Format the storage (first time only) and start the broker; wait until it serves."""
        if self._proc is not None and self._proc.alive():
            return self
        if self.dir is None:
            self._java = find_java()
            self._libs = _kafka_libs()  # may fetch the jars (once): not part of the start budget
        began = time.monotonic()
        if self.dir is None:
            self.dir = scratch_dir("kafka")
            for attempt in range(3):
                self.port, self.controller_port = free_port(), free_port()
                self._write_config()
                self._format()
                try:
                    self._launch(began)
                    break
                except ServerStartError:
                    if attempt < 2 and self._proc and "Address already in use" in self._proc.run_log():
                        shutil.rmtree(self.dir / "data", ignore_errors=True)
                        continue  # lost a race for a port: pick others
                    raise
        else:
            self._launch(began)
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown (SIGTERM), SIGKILL after `timeout`. Keeps data and ports. Idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout=timeout)

    def kill(self) -> None:
        """Hard stop (SIGKILL), as a crash would. Keeps data and ports. Idempotent."""
        if self._proc is not None:
            self._proc.kill()

    def restart(self) -> KafkaBroker:
        """Stop (cleanly, if still running) and start again on the same data dir and ports."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self.dir is not None and not os.environ.get("FINMESH_KEEP_SERVER_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.dir / "kafka.log", lines) if self.dir else "<not started>"

    # -- internals -----------------------------------------------------------------------
    def _log4j(self) -> list[str]:
        assert self._libs is not None and self.dir is not None
        if list(self._libs.glob("log4j-core-*.jar")):  # Kafka 4.x ships log4j2
            path = self.dir / "log4j2.properties"
            path.write_text(_LOG4J2_PROPERTIES)
            return [f"-Dlog4j2.configurationFile={path}"]
        path = self.dir / "log4j.properties"
        path.write_text(_LOG4J_PROPERTIES)
        return [f"-Dlog4j.configuration=file:{path}"]

    def _write_config(self) -> None:
        assert self.dir is not None
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.dir / "data"),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "auto.create.topics.enable": "true",
            "group.initial.rebalance.delay.ms": "0",
            # After a kill() the controller refuses the new incarnation of broker 1 until the old
            # one's session expires (default 9 s): keep that short so restart() is quick.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "log.retention.hours": "24",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        text = "".join(f"{key}={value}\n" for key, value in props.items())
        (self.dir / "server.properties").write_text(text)

    def _java_argv(self, main: str, *args: str, heap: str) -> list[str]:
        assert self._java is not None and self._libs is not None and self.dir is not None
        return [
            self._java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            # C1 only: the broker is up ~1 s sooner, and test traffic doesn't need C2.
            "-XX:TieredStopAtLevel=1",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.dir}",
            *self._log4j(),
            "-cp",
            f"{self._libs}/*",
            main,
            *args,
        ]

    def _format(self) -> None:
        assert self.dir is not None
        run_tool(
            self._java_argv(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                self.cluster_id,
                "-c",
                str(self.dir / "server.properties"),
                heap="256m",
            ),
            what="Kafka storage format (kafka.tools.StorageTool)",
            timeout=60,
            cwd=self.dir,
        )

    def _launch(self, began: float) -> None:
        assert self.dir is not None and self.port is not None
        log = self.dir / "kafka.log"
        offset = log.stat().st_size if log.exists() else 0
        self._proc = ServerProcess(
            "kafka",
            self._java_argv("kafka.Kafka", str(self.dir / "server.properties"), heap=self.heap),
            log,
            cwd=self.dir,
            stop_signal=signal.SIGTERM,
            death_signal=signal.SIGKILL,
        )
        self._proc.start()
        port = self.port

        def ready() -> bool:
            return self._log_has(log, offset, self.READY_LINE) and _kafka_api_versions_ok(port)

        try:
            wait_until(
                f"Kafka on {HOST}:{port}",
                ready,
                timeout=max(1.0, self.start_timeout - (time.monotonic() - began)),
                proc=self._proc,
                interval=0.1,
            )
        except ServerStartError as exc:
            self._proc.kill()
            raise ServerStartError(
                f"Kafka did not start (start_timeout={self.start_timeout:.0f}s): {exc}"
            ) from exc

    @staticmethod
    def _log_has(log: Path, offset: int, needle: str) -> bool:
        with contextlib.suppress(OSError), open(log, "rb") as fh:
            fh.seek(offset)
            return needle.encode() in fh.read()
        return False
