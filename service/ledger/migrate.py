"""Alembic migrations of the ledger, run in code: `upgrade` (at start-up and by `dialer migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from service.ledger import make_engine, mapped_errors
from service.settings import Settings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Serialises replicas that start together against one PostgreSQL (the bytes of "dialer").
_PG_ADVISORY_LOCK = 0x6469616C6572


def alembic_config() -> Config:
    """Alembic's configuration, built in code so it works from an installed package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_ADVISORY_LOCK})")
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade(settings: Settings, revision: str = "head") -> str | None:
    """Migrate the ledger to `revision` in one transaction; return the revision now current."""
    engine = make_engine(settings.database_dsn, pool_size=1)
    try:
        async with mapped_errors(), engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
            return await conn.run_sync(_current)
    finally:
        await engine.dispose()


async def current_revision(settings: Settings) -> str | None:
    """The ledger's schema revision (None for an empty database)."""
    engine = make_engine(settings.database_dsn, pool_size=1)
    try:
        async with mapped_errors(), engine.connect() as conn:
            return await conn.run_sync(_current)
    finally:
        await engine.dispose()
