"""Alembic migrations per service: the kit's branch plus the service's own, applied to its schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from svc.kit.db import Database

KIT_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(connection: Connection, service_versions: Path | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(KIT_MIGRATIONS))
    locations = [KIT_MIGRATIONS / "versions"]
    if service_versions is not None and service_versions.is_dir():
        locations.append(service_versions)
    # Alembic splits version_locations on this separator; paths may contain spaces.
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", ":".join(str(path) for path in locations))
    config.attributes["connection"] = connection
    return config


async def upgrade(database: Database, service_versions: Path | None = None) -> None:
    """Brings the service's schema to the newest revision of every branch (kit and service)."""
    async with database.engine.begin() as connection:
        if database.schema:
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{database.schema}"'))
    async with database.engine.connect() as connection:
        await connection.run_sync(lambda sync: command.upgrade(_config(sync, service_versions), "heads"))
        await connection.commit()
