"""Configuration from environment variables, read once at start-up and validated.

Every variable is `FINMESH_<NAME>`; a service adds its own fields by subclassing
`KitSettings`. A bad value stops start-up with a message naming the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "FINMESH_"
SQLITE_BUS_FILE_NAME = "bus.db"


class ConfigError(Exception):
    """Start-up configuration is invalid; the message names every bad variable."""


class KitSettings(BaseSettings):
    """Settings every service has."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    # 0 means "the catalog's port"; tests pass explicit free ports.
    port: int = Field(default=0, ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    data_dir: Path = Path("var/data")
    pki_dir: Path = Path("var/pki")
    tls: bool = True
    database_url: str = ""
    database_schema: str = ""
    # "sqlite": a log in one SQLite file shared by every process of a local mesh (the launcher's
    # choice); "inprocess": in memory, for one process and tests; "kafka": the brokers below.
    bus: Literal["inprocess", "sqlite", "kafka"] = "inprocess"
    # The SQLite bus's file; empty means <data_dir>/bus.db (see `sqlite_bus_path`).
    bus_path: Path | None = None
    kafka_bootstrap_servers: str = ""
    # Where the other services listen, as JSON {"ledger": "127.0.0.1:50501"}; a service not
    # named here is reached on its catalog port. The launcher sets it when ports are moved.
    endpoints: dict[str, str] = Field(default_factory=dict)
    grace_period_s: float = Field(default=10.0, gt=0, le=300)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # PEM file with the public keys that verify end-user JWTs forwarded by the edge.
    jwt_public_keys_file: Path | None = None
    jwt_issuer: str = "finmesh-auth"
    jwt_audience: str = "finmesh"
    idempotency_retention_s: int = Field(default=7 * 24 * 3600, gt=0)

    @property
    def sqlite_bus_path(self) -> Path:
        """The SQLite bus's file: `bus_path`, or `bus.db` in `data_dir`."""
        return self.bus_path or self.data_dir / SQLITE_BUS_FILE_NAME


SettingsT = TypeVar("SettingsT", bound=KitSettings)


def load_settings(settings_type: type[SettingsT]) -> SettingsT:
    """Reads the environment into `settings_type`, or raises ConfigError naming each bad variable."""
    try:
        return settings_type()
    except ValidationError as error:
        problems = []
        for issue in error.errors():
            field = ".".join(str(part) for part in issue["loc"])
            problems.append(f"{ENV_PREFIX}{field.upper()}: {issue['msg']} (got {issue.get('input')!r})")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
