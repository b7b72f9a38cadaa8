"""Alembic environment: migrations run on a connection handed over by service.ledger.migrate."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from service.ledger import make_engine
from service.ledger.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        compare_server_default=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_url(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def main() -> None:
    """Use the caller's connection (service.ledger.migrate), else the configured URL (alembic CLI)."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url: use `dialer migrate`")
    asyncio.run(_run_with_url(url))


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; use `dialer migrate`")
main()
