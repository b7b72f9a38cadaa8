"""Migrations: an empty database reaches head on both databases, and head equals tables.py."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection

from service.commands import migrate
from service.commands.cli import main as cli_main
from service.ledger import make_engine
from service.ledger.migrate import alembic_config, current_revision, upgrade
from service.ledger.tables import admission, metadata
from service.settings import Settings

pytestmark = pytest.mark.integration

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def settings_for(url: str) -> Settings:
    """Settings pointing at `url`."""
    return Settings(database_url=url)


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


async def test_upgrade_creates_the_schema_of_tables_py(database_url: str) -> None:
    settings = settings_for(database_url)
    assert await current_revision(settings) is None
    assert await upgrade(settings) == HEAD
    assert await upgrade(settings) == HEAD  # a second run changes nothing
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert {"requests", "attempts", "outbox", "slots", "admission"} <= names
            assert (await conn.execute(select(admission.c.id))).scalars().all() == [1]
    finally:
        await engine.dispose()


async def test_downgrade_to_base_and_back(database_url: str) -> None:
    settings = settings_for(database_url)
    await upgrade(settings)
    engine = make_engine(database_url)

    def downgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "base")

    try:
        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert names <= {"alembic_version"}
    finally:
        await engine.dispose()
    assert await upgrade(settings) == HEAD


async def test_replicas_starting_together_both_migrate(postgres_url: str) -> None:
    settings = settings_for(postgres_url)
    results = await asyncio.gather(upgrade(settings), upgrade(settings), upgrade(settings))
    assert list(results) == [HEAD, HEAD, HEAD]


def main(argv: list[str]) -> int:
    """`dialer migrate ARGS` through the command's own parser."""
    parser = argparse.ArgumentParser(prog="dialer migrate")
    migrate.add_arguments(parser)
    return migrate.run(parser.parse_args(argv))


def test_dialer_migrate_creates_the_default_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DIALER_DATABASE_URL", raising=False)
    monkeypatch.setenv("DIALER_DATA_DIR", str(tmp_path / "not" / "yet"))
    assert main(["--show"]) == 0
    assert capsys.readouterr().out.strip() == "empty"
    assert main([]) == 0
    assert HEAD is not None
    assert HEAD in capsys.readouterr().out
    assert (tmp_path / "not" / "yet" / "dialer.db").is_file()
    assert main(["--show"]) == 0
    assert capsys.readouterr().out.strip() == HEAD


def test_dialer_migrate_says_when_the_database_is_down(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DIALER_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:1/none")
    assert cli_main(["migrate"]) == 3  # the CLI's exit code for a server that does not answer
    err = capsys.readouterr().err
    assert "DIALER_DATABASE_URL" in err
    assert "ledger unavailable" in err
