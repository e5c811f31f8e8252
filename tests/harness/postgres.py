"""PostgresServer: a throwaway PostgreSQL cluster (Debian's binaries) on 127.0.0.1.

Environment: FINMESH_PG_BIN (directory of initdb/postgres/psql/pg_isready; default
/usr/lib/postgresql/15/bin, else the newest /usr/lib/postgresql/*/bin) and FINMESH_PG_USER (the
unprivileged user PostgreSQL runs as when we are root; default postgres).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .process import (
    HOST,
    ServerProcess,
    ServerStartError,
    free_port,
    log_tail,
    run_tool,
    scratch_dir,
    tcp_open,
    wait_until,
)

__all__ = ["PostgresServer"]


def _is_root() -> bool:
    return os.geteuid() == 0


def _find_pg_bin() -> Path:
    env = os.environ.get("FINMESH_PG_BIN")
    if env:
        candidates = [Path(env)]
    else:
        default = Path("/usr/lib/postgresql/15/bin")
        others = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        candidates = [default, *others]
    for bin_dir in candidates:
        if (bin_dir / "postgres").is_file() and (bin_dir / "initdb").is_file():
            return bin_dir
    raise ServerStartError(
        "PostgreSQL binaries not found (looked in "
        + ", ".join(map(str, candidates))
        + "): install Debian's postgresql (tools/ci/install-system-packages.sh) or set FINMESH_PG_BIN"
    )


_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresServer:
    """A throwaway PostgreSQL cluster: initdb in a scratch dir, `postgres` on 127.0.0.1:<port>.

    Tuned for tests (fsync off): never point it at data you care about. `durable=True` keeps
    PostgreSQL's production defaults instead (fsync, synchronous_commit and full_page_writes
    on), so that every commit waits for a real disk flush: what a benchmark must measure.
    """

    def __init__(self, *, start_timeout: float = 30.0, user: str = "finmesh", durable: bool = False) -> None:
        self.start_timeout = start_timeout
        self.durable = durable
        self.user = user
        self.password = secrets.token_hex(12)
        self.port: int | None = None
        self.dir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: ServerProcess | None = None
        self._bin: Path | None = None
        self._os_user: str | None = None

    # -- public --------------------------------------------------------------------------
    @property
    def admin_url(self) -> str:
        """SQLAlchemy async URL of the `postgres` maintenance database, as the superuser."""
        return self.url("postgres")

    def url(self, database: str) -> str:
        """SQLAlchemy async URL (postgresql+asyncpg://...) of `database` on this server."""
        return f"postgresql+asyncpg://{self.user}:{self.password}@{HOST}:{self._port()}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """libpq/asyncpg URL (postgresql://...) of `database` on this server."""
        return f"postgresql://{self.user}:{self.password}@{HOST}:{self._port()}/{database}"

    def start(self) -> PostgresServer:
        if self._proc is not None and self._proc.alive():
            return self
        began = time.monotonic()
        self._bin = _find_pg_bin()
        self._os_user = self._pick_os_user()
        self.dir = scratch_dir("postgres")
        data = self.dir / "data"
        sock = self.dir / "sock"
        sock.mkdir()
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._os_user:
            # postgres refuses to run as root: hand the directory to an unprivileged user.
            shutil.chown(self.dir, self._os_user, self._os_user)
            for path in (sock, pwfile):
                shutil.chown(path, self._os_user, self._os_user)
        self.dir.chmod(0o700)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.dir),
            "LC_ALL": "C",
            "TZ": "UTC",
        }
        run_tool(
            [
                str(self._bin / "initdb"),
                "-D", str(data),
                "-U", self.user,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            what="initdb",
            timeout=self.start_timeout,
            cwd=self.dir,
            env=env,
            user=self._os_user,
            group=self._gid(),
            extra_groups=[] if self._os_user else None,
        )  # fmt: skip
        pwfile.unlink()
        for attempt in range(3):
            self.port = free_port()
            self._proc = ServerProcess(
                "postgres",
                [
                    str(self._bin / "postgres"),
                    "-D", str(data),
                    "-p", str(self.port),
                    "-c", f"listen_addresses={HOST}",
                    "-c", f"unix_socket_directories={sock}",
                    *self._durability_options(),
                    "-c", "max_connections=300",
                    "-c", "shared_buffers=128MB",
                    "-c", "logging_collector=off",
                    "-c", "log_min_messages=warning",
                    "-c", "log_timezone=UTC",
                ],
                self.dir / "postgres.log",
                cwd=self.dir,
                env=env,
                user=self._os_user,
                stop_signal=signal.SIGINT,  # "fast" shutdown
                death_signal=signal.SIGQUIT,  # "immediate" shutdown, takes the backends along
            )  # fmt: skip
            self._proc.start()
            try:
                wait_until(
                    f"PostgreSQL on {HOST}:{self.port}",
                    self._ready,
                    timeout=max(1.0, self.start_timeout - (time.monotonic() - began)),
                    proc=self._proc,
                )
                break
            except ServerStartError as exc:
                self._proc.kill()
                if attempt < 2 and "already in use" in self._proc.run_log():
                    continue  # lost a race for the port: pick another one
                raise ServerStartError(
                    f"PostgreSQL did not start (start_timeout={self.start_timeout:.0f}s): {exc}"
                ) from exc
        # The superuser can log in over TCP with its password (what the services will do).
        self.execute("SELECT 1")
        self.startup_seconds = time.monotonic() - began
        return self

    def _durability_options(self) -> list[str]:
        if self.durable:
            return ["-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on"]
        return ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]

    def execute(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through psql over TCP as the superuser; return its unaligned output."""
        assert self._bin is not None, "server not started"
        return run_tool(
            [
                str(self._bin / "psql"),
                "-X", "-q", "-A", "-t",
                "-v", "ON_ERROR_STOP=1",
                "-h", HOST, "-p", str(self._port()),
                "-U", self.user, "-d", database,
                "-c", sql,
            ],
            what="psql",
            timeout=60,
            env={**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"},
        ).strip()  # fmt: skip

    def create_database(self, name: str) -> str:
        """Create an empty database; return its SQLAlchemy async URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"database name must match {_DB_NAME.pattern}: {name!r}")
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected."""
        if not _DB_NAME.match(name):
            raise ValueError(f"database name must match {_DB_NAME.pattern}: {name!r}")
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after 30 s. Idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout=30.0)

    def close(self) -> None:
        """Stop and remove the scratch directory."""
        self.stop()
        if self.dir is not None and not os.environ.get("FINMESH_KEEP_SERVER_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.dir / "postgres.log", lines) if self.dir else "<not started>"

    # -- internals -----------------------------------------------------------------------
    def _port(self) -> int:
        if self.port is None:
            raise RuntimeError("PostgresServer is not started")
        return self.port

    def _ready(self) -> bool:
        assert self._bin is not None
        if not tcp_open(self._port()):
            return False
        done = subprocess.run(
            [str(self._bin / "pg_isready"), "-q", "-h", HOST, "-p", str(self._port()), "-t", "2"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return done.returncode == 0

    @staticmethod
    def _pick_os_user() -> str | None:
        if not _is_root():
            return None
        import pwd

        name = os.environ.get("FINMESH_PG_USER", "postgres")
        for candidate in (name, "nobody"):
            try:
                pwd.getpwnam(candidate)
            except KeyError:
                continue
            return candidate
        raise ServerStartError(f"running as root and no user {name!r} to run PostgreSQL as")

    def _gid(self) -> int | None:
        if not self._os_user:
            return None
        import pwd

        return pwd.getpwnam(self._os_user).pw_gid
