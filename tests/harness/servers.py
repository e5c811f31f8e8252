"""Real servers for the integration tests: PostgreSQL, Redis, a single-node Kafka (KRaft) and an
S3-compatible object store (S3Proxy).

Each one runs on 127.0.0.1 on ports picked here, in its own scratch directory (logs included),
starts within a bounded time or raises ServerStartError with the reason and its log tail, and is
stopped by `stop()` (idempotent), by `close()` (stop + remove its directory), or at the latest
when the interpreter exits (see process.py). One module per server; this one gathers them.

Binaries, overridable from the environment:
    FINMESH_PG_BIN        directory of initdb/postgres/psql   (default /usr/lib/postgresql/15/bin,
                          else the newest /usr/lib/postgresql/*/bin)
    FINMESH_PG_USER       user PostgreSQL runs as when we are root (default: postgres)
    FINMESH_REDIS_SERVER  redis-server executable               (default: redis-server on PATH)
    FINMESH_KAFKA_LIBS    directory of the broker's jars        (default: .build/kafka/libs,
                          kept in step with tools/kafka/pom.xml by fetch.sh)
    FINMESH_S3PROXY_LIBS  directory of S3Proxy's jars           (default: .build/s3proxy/libs,
                          kept in step with tools/s3proxy/pom.xml by fetch.sh)
    FINMESH_JAVA          java executable                       (default: $JAVA_HOME/bin/java, java)
"""

from __future__ import annotations

from .kafka_broker import KafkaBroker
from .postgres import PostgresServer
from .process import ServerStartError
from .redis_server import RedisServer
from .s3_server import S3Server

__all__ = ["KafkaBroker", "PostgresServer", "RedisServer", "S3Server", "ServerStartError"]
